"""`merge3 irt fit`, `merge3 extract`, `merge3 estimate`: exit codes 0/2 and one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from merge3.cli import app
from merge3.estimate.synthetic import make_world, merges

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    world = make_world(items_per_task=40, seed=0)
    rng = np.random.default_rng(0)
    world.responses(rng.normal(size=(80, 2)), rng, "ref").save(d / "ref.csv")
    ends = rng.normal(size=(3, 2))
    world.responses(ends, rng, "end").save(d / "ends.parquet")
    theta, _ = merges(ends, 4, rng, (3,))
    world.responses(theta, rng, "cand").save(d / "cand.csv")
    r = run("irt", "fit", d / "ref.csv", "--dims", "2", "--steps", "150", "--out", d / "items.json")
    assert r.exit_code == 0, r.output
    r = run(
        "extract",
        "--irt",
        d / "items.json",
        "--n",
        "6",
        "--method",
        "irt-kmeans",
        "--out",
        d / "anchors.json",
    )
    assert r.exit_code == 0, r.output
    return d


def test_fit_extract_estimate_json(files):
    d = files
    bank = json.loads((d / "items.json").read_text())
    assert bank["kind"] == "2pl" and bank["dims"] == 2 and len(bank["items"]) == 160
    anchors = json.loads((d / "anchors.json").read_text())
    assert {t: len(a["items"]) for t, a in anchors["tasks"].items()} == dict.fromkeys(
        ["task0", "task1", "task2", "task3"], 6
    )
    for name in ("mean", "irt", "pirt", "mpirt", "gmpirt"):
        r = run(
            "estimate",
            "--irt",
            d / "items.json",
            "--anchors",
            d / "anchors.json",
            "--responses",
            d / "cand.csv",
            "--estimator",
            name,
            "--endpoint-responses",
            d / "ends.parquet",
            "--json",
        )
        assert r.exit_code == 0, r.output
        out = json.loads(r.stdout)
        assert out["estimator"] == name and set(out["estimates"]) == {f"cand{i}" for i in range(4)}
        assert all(0 <= v <= 1 for row in out["estimates"].values() for v in row.values())
    r = run(
        "estimate",
        "--irt",
        d / "items.json",
        "--anchors",
        d / "anchors.json",
        "--responses",
        d / "cand.csv",
        "--estimator",
        "gpirt",
        "--validation",
        d / "ref.csv",
    )
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[0].split("\t") == ["model", "task0", "task1", "task2", "task3"]


def test_estimate_reads_only_anchor_columns(files, tmp_path):
    d = files
    anchors = json.loads((d / "anchors.json").read_text())
    keep = ["model"] + [x for a in anchors["tasks"].values() for x in a["items"]]
    import pandas as pd

    pd.read_csv(d / "cand.csv")[keep].to_csv(tmp_path / "few.csv", index=False)
    args = [
        "estimate",
        "--irt",
        d / "items.json",
        "--anchors",
        d / "anchors.json",
        "--estimator",
        "irt",
        "--json",
        "--responses",
    ]
    full, few = run(*args, d / "cand.csv"), run(*args, tmp_path / "few.csv")
    assert full.exit_code == few.exit_code == 0
    assert json.loads(full.stdout) == json.loads(few.stdout)


def _bad(tmp_path, files):
    d = files
    (tmp_path / "nonbin.csv").write_text("model,t/a,t/b\nm1,1,0.5\nm2,0,1\n")
    (tmp_path / "nanrow.csv").write_text("model,t/a,t/b\nm1,1,0\nm2,,\n")
    anchors = json.loads((d / "anchors.json").read_text())
    anchors["tasks"]["task0"]["items"][0] = "task0/nope"
    (tmp_path / "bad_anchors.json").write_text(json.dumps(anchors))
    est = ["estimate", "--irt", d / "items.json", "--responses", d / "cand.csv"]
    return [
        (["irt", "fit", tmp_path / "nonbin.csv", "--out", tmp_path / "x.json"], "is not 0/1"),
        (["irt", "fit", tmp_path / "nanrow.csv", "--out", tmp_path / "x.json"], "has no responses"),
        (["irt", "fit", d / "ref.csv", "--model", "3pl", "--out", tmp_path / "x.json"], "3pl"),
        (
            ["extract", "--irt", d / "items.json", "--n", "41", "--out", tmp_path / "a.json"],
            "41 anchors asked for but it has only 40",
        ),
        (
            [*est, "--anchors", tmp_path / "bad_anchors.json", "--estimator", "irt"],
            "'task0/nope' is not in the IRT item bank",
        ),
        ([*est, "--anchors", d / "anchors.json", "--estimator", "mpirt"], "--endpoint-responses"),
        (
            [
                *est,
                "--anchors",
                d / "anchors.json",
                "--estimator",
                "mpirt",
                "--endpoint-responses",
                tmp_path / "missing.csv",
            ],
            "missing.csv: response file not found",
        ),
        (
            [*est, "--anchors", d / "anchors.json", "--estimator", "gpirt"],
            "--lambda or --validation",
        ),
        ([*est, "--anchors", d / "anchors.json", "--estimator", "best"], "unknown estimator"),
    ]


def test_bad_input_exits_2_with_one_line(files, tmp_path):
    for args, message in _bad(tmp_path, files):
        r = run(*args)
        assert r.exit_code == 2, (args, r.output)
        assert message in r.output, (message, r.output)
        assert "Traceback" not in r.output


def test_mismatched_anchor_and_response_ids(files, tmp_path):
    d = files
    (tmp_path / "other.csv").write_text("model,task0/zz\nm1,1\n")
    r = run(
        "estimate",
        "--irt",
        d / "items.json",
        "--anchors",
        d / "anchors.json",
        "--responses",
        tmp_path / "other.csv",
        "--estimator",
        "mean",
    )
    assert r.exit_code == 2 and "is not a column" in r.output


def test_fit_warns_about_uninformative_items_and_keeps_them(tmp_path):
    rng = np.random.default_rng(0)
    values = (rng.random((30, 6)) < 0.5).astype(int)
    values[:, 0] = 1  # everyone right: no information, but still an item of the task
    cols = [f"t/q{i}" for i in range(6)]
    lines = ["model," + ",".join(cols)] + [
        f"m{k}," + ",".join(map(str, row)) for k, row in enumerate(values)
    ]
    (tmp_path / "r.csv").write_text("\n".join(lines) + "\n")
    r = run("irt", "fit", tmp_path / "r.csv", "--steps", "50", "--out", tmp_path / "i.safetensors")
    assert r.exit_code == 0, r.output
    assert "1 item(s) answered alike" in r.output and "'t/q0'" in r.output
    from merge3.estimate.itembank import ItemBank

    bank = ItemBank.load(tmp_path / "i.safetensors")
    assert (
        bank.items[0] == "t/q0" and np.isfinite(bank.beta[0]) and bank.beta[0] < bank.beta[1:].min()
    )


def test_pyirt_backend_without_the_extra_is_a_clear_error(files, tmp_path, monkeypatch):
    import sys

    for name in ("py_irt", "py_irt.config", "py_irt.dataset", "py_irt.training"):
        monkeypatch.setitem(sys.modules, name, None)  # as if py-irt were not installed
    r = run("irt", "fit", files / "ref.csv", "--backend", "pyirt", "--out", tmp_path / "x.json")
    assert r.exit_code == 2 and "needs the extra" in r.output


def test_information_anchors_and_posterior_mixing_from_the_cli(files, tmp_path):
    d = files
    out = tmp_path / "info.json"
    r = run(
        "extract",
        "--irt",
        d / "items.json",
        "--responses",
        d / "ref.csv",
        "--n",
        "5",
        "--method",
        "irt-info",
        "--out",
        out,
    )
    assert r.exit_code == 0, r.output
    anchors = json.loads(out.read_text())
    assert anchors["method"] == "irt-info"
    assert all(len(a["items"]) == 5 for a in anchors["tasks"].values())
    common = [
        "estimate",
        "--irt",
        d / "items.json",
        "--anchors",
        out,
        "--responses",
        d / "cand.csv",
        "--estimator",
        "mpirt",
        "--endpoint-responses",
        d / "ends.parquet",
        "--json",
    ]
    post = run(*common, "--inference", "posterior")
    point = run(*common)
    assert post.exit_code == 0 and point.exit_code == 0, post.output + point.output
    a, b = json.loads(post.stdout)["estimates"], json.loads(point.stdout)["estimates"]
    assert a.keys() == b.keys() and a != b  # a different reading of the same anchors
    bad = run(*common, "--inference", "posterior", "--constraint", "free")
    assert bad.exit_code == 2 and "simplex" in bad.output
