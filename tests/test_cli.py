"""The command line: verbs, help, exit codes 0/2, one-line errors, nothing written on error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import TINY_CONFIG
from typer.testing import CliRunner

from merge3.cli import app

runner = CliRunner()
VERBS = ["search", "resume", "front", "merge", "export", "evaluate", "extract", "estimate", "irt"]


def invoke(*args: str):
    return runner.invoke(app, list(args))


def assert_user_error(result, *needles: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("merge3: error: ")
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_top_level_help_lists_every_verb():
    result = invoke("--help")
    assert result.exit_code == 0
    for verb in VERBS:
        assert verb in result.stdout


@pytest.mark.parametrize("verb", VERBS)
def test_each_verb_has_help(verb):
    result = invoke(verb, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage" in result.stdout


def test_python_dash_m_runs_the_same_app():
    out = subprocess.run([sys.executable, "-m", "merge3", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "resume" in out.stdout


def _tiny_config(tmp_path: Path, edit) -> Path:
    data = yaml.safe_load(TINY_CONFIG.read_text())
    edit(data)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_missing_config_is_exit_2(tmp_path):
    result = invoke("search", str(tmp_path / "nope.yaml"), "--run-dir", str(tmp_path / "run"))
    assert_user_error(result, "nope.yaml", "config file not found")
    assert not (tmp_path / "run").exists()


def test_bad_key_is_exit_2_naming_the_key(tmp_path):
    config = _tiny_config(tmp_path, lambda d: d["search"].update(populaton=3))
    result = invoke("search", str(config), "--run-dir", str(tmp_path / "run"))
    assert_user_error(result, "search.populaton", "unknown key")
    assert not (tmp_path / "run").exists()


def test_missing_model_folder_writes_nothing(tmp_path, tiny_dir):
    config = _tiny_config(
        tmp_path, lambda d: d["models"]["endpoints"].update(add=str(tmp_path / "gone"))
    )
    result = invoke("search", str(config), "--run-dir", str(tmp_path / "run"))
    assert_user_error(result, str(tmp_path / "gone"), "model folder not found")
    assert not (tmp_path / "run").exists()


def test_missing_item_file_writes_nothing(tmp_path, tiny_dir):
    def edit(d):
        d["benchmark"]["tasks"][1]["search"] = str(tmp_path / "absent.jsonl")

    result = invoke("search", str(_tiny_config(tmp_path, edit)), "--run-dir", str(tmp_path / "run"))
    assert_user_error(result, "absent.jsonl", "task 'next'")
    assert not (tmp_path / "run").exists()


def test_too_many_anchors_writes_nothing(tmp_path, tiny_dir):
    config = _tiny_config(tmp_path, lambda d: d["anchors"].update(n_per_task=500))
    result = invoke("search", str(config), "--run-dir", str(tmp_path / "run"))
    assert_user_error(result, "task 'add'", "500 anchors")
    assert not (tmp_path / "run").exists()


def test_run_dir_errors(tmp_path):
    assert_user_error(invoke("resume", str(tmp_path / "none")), "run directory not found")
    assert_user_error(invoke("front", str(tmp_path)), "no config.yaml")


def test_debug_shows_the_traceback(tmp_path):
    result = invoke("--debug", "front", str(tmp_path))
    assert result.exit_code != 0
    assert type(result.exception).__name__ == "RunDirError"


def test_search_then_front_in_every_format(tmp_path, tiny_dir):
    run_dir = tmp_path / "run"
    config = _tiny_config(tmp_path, lambda d: d["search"].update(generations=1, population=4))
    result = invoke("search", str(config), "--run-dir", str(run_dir), "--quiet")
    assert result.exit_code == 0, result.output
    assert "Pareto front" in result.stdout

    as_json = json.loads(invoke("front", str(run_dir), "--json").stdout)
    assert as_json["objectives"] == ["mean"]
    entry = as_json["front"][0]
    assert set(entry) == {"genome", "recipe", "objectives", "test_accuracy"}
    assert set(entry["test_accuracy"]) == {"add", "next", "color"}
    assert len(entry["genome"]) == 4 and 0.0 <= entry["objectives"]["mean"] <= 1.0
    assert entry["recipe"]["operator"] == "task_arithmetic"
    assert entry["recipe"]["params"]["weight"] == entry["genome"][:3]

    as_csv = invoke("front", str(run_dir), "--csv").stdout.splitlines()
    assert as_csv[0] == "generation,index,mean,weight[add],weight[next],weight[color],lambda"
    assert len(as_csv) == 1 + len(as_json["front"])

    # a second search into the same folder is refused and leaves the run as it was
    before = (run_dir / "run.sqlite").read_bytes()
    again = invoke("search", str(config), "--run-dir", str(run_dir))
    assert_user_error(again, "already holds a run", "merge3 resume")
    assert (run_dir / "run.sqlite").read_bytes() == before


def test_progress_shows_generations_candidates_items_and_the_best():
    import io

    from rich.console import Console

    from merge3.evolve.progress import PlainReporter, RichReporter

    buf = io.StringIO()
    reporter = RichReporter(Console(file=buf, force_terminal=True, width=120))
    reporter.start(generations=2, done=0)
    reporter.generation(0, size=3, reused=1)
    reporter.items(10, 20)
    reporter.candidate({"mean": 0.625}, reused=False)
    reporter.phase("final evaluation")
    reporter.finish()
    out = buf.getvalue()
    for text in (
        "generations",
        "gen 1 candidates",
        "items",
        "best: mean=0.625",
        "final evaluation",
    ):
        assert text in out, out

    import contextlib

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        plain = PlainReporter()
        plain.generation(0, size=3, reused=1)
        plain.candidate({"add": 0.5, "next": 0.75}, reused=True)
        plain.finish()
    assert err.getvalue().splitlines() == [
        "generation 1: 3 candidates (1 from the store)",
        "best so far: add=0.500 next=0.750",
    ]
