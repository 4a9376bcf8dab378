"""``merge3 evaluate``: both backends score the same seeded sample the same way; errors exit 2."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from merge3.cli import app

runner = CliRunner()


def _json(*args: str) -> dict:
    result = runner.invoke(app, ["evaluate", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_builtin_and_lm_eval_backends_agree_on_the_same_sample(tiny_dir):
    model = str(tiny_dir / "ft-add")
    bench = str(tiny_dir / "data" / "add.test.jsonl")
    ours = _json(model, "--benchmark", bench, "--items", "12", "--seed", "3")
    theirs = _json(
        model, "--benchmark", bench, "--items", "12", "--seed", "3", "--backend", "lm-eval"
    )
    assert [r["id"] for r in ours["items"]] == [r["id"] for r in theirs["items"]]
    assert len(ours["items"]) == 12
    assert ours["items"] == theirs["items"]
    assert ours["accuracy"] == theirs["accuracy"]
    assert ours["accuracy"]["add.test"] >= 0.5  # well above chance (0.25): it knows sums
    other = _json(model, "--benchmark", bench, "--items", "12", "--seed", "4")
    assert [r["id"] for r in other["items"]] != [r["id"] for r in ours["items"]]


def test_adapter_items_over_the_context_are_reported_not_fatal(tiny_dir):
    out = _json(str(tiny_dir / "base"), "--benchmark", "leaderboard-mmlu", "--items", "3")
    assert out["items"] == [] and out["accuracy"] == {"leaderboard-mmlu": None}
    assert len(out["excluded"]) == 3 and "longer than" in out["excluded"][0]["reason"]
    table = runner.invoke(
        app,
        [
            "evaluate",
            str(tiny_dir / "base"),
            "--benchmark",
            str(tiny_dir / "data" / "next.test.jsonl"),
            "--items",
            "4",
        ],
    )
    assert table.exit_code == 0 and table.stdout.startswith("next.test\t")


def test_user_errors_exit_2_with_one_line(tiny_dir, tmp_path):
    model = str(tiny_dir / "base")
    cases = [
        (["--benchmark", str(tmp_path / "missing.jsonl")], "item file not found"),
        (["--benchmark", "mgsm-xx"], "unknown MGSM language"),
        (["--benchmark", "mmlu", "--backend", "vllm"], "--backend must be"),
        (["--benchmark", "mmlu", "--data-dir", str(tmp_path / "nodata")], "data folder not"),
    ]
    for args, needle in cases:
        result = runner.invoke(app, ["evaluate", model, *args])
        assert result.exit_code == 2, (args, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("merge3: error: ") and needle in lines[0]
    result = runner.invoke(app, ["evaluate", str(tmp_path), "--benchmark", "mmlu"])
    assert result.exit_code == 2 and "config.json" in result.stderr
