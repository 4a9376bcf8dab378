"""End to end on the tiny setting: search, checkpoints, exact resume after a crash or SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import TINY_CONFIG

from merge3 import runs as runs_module
from merge3.analysis import front_json
from merge3.evolve import fitness as fitness_module
from merge3.evolve import resume_search, start_search
from merge3.runs import load_run


def write_config(tmp_path: Path, name: str = "run.yaml", **search) -> Path:
    """The bundled tiny config with some search settings changed."""
    data = yaml.safe_load(TINY_CONFIG.read_text())
    data["search"].update(search)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def front_of_run(run_dir: Path) -> dict:
    run = load_run(run_dir)
    return front_json(run.front_rows(), run.objectives, run.test_accuracy)


def stored(run_dir: Path) -> list[tuple]:
    """Every stored candidate without its timings, and the final test accuracies: what must
    match between runs."""
    run = load_run(run_dir)
    rows = [
        (r.generation, r.index, r.genome, r.recipe, r.objectives, r.anchor_correct, r.estimates)
        for r in run.rows
    ]
    return [*rows, sorted(run.test_accuracy.items())]


@pytest.fixture(scope="module")
def reference(tiny_dir, tmp_path_factory) -> Path:
    """An uninterrupted 3-generation GA run of the tiny setting."""
    tmp = tmp_path_factory.mktemp("reference")
    return start_search(write_config(tmp), tmp / "run").path


def test_search_writes_the_documented_run_directory(reference: Path):
    run = load_run(reference)
    assert run.n_candidates == 24  # 3 generations × population 8
    assert sorted(p.name for p in (reference / "checkpoints").iterdir()) == [
        "gen-0001.pkl",
        "gen-0002.pkl",
        "gen-0003.pkl",
    ]
    assert (reference / "anchors.json").is_file() and (reference / "front.csv").is_file()
    anchors = json.loads((reference / "anchors.json").read_text())
    assert {t: len(a["items"]) for t, a in anchors["tasks"].items()} == {
        "add": 20,
        "next": 20,
        "color": 20,
    }
    # every row carries what a notebook needs: per-item anchor correctness, estimates, timings
    row = run.rows[0]
    assert {len(v) for v in row.anchor_correct.values()} == {20}
    assert row.estimates.keys() == {"add", "next", "color"}
    assert row.objectives["mean"] == pytest.approx(sum(row.estimates.values()) / 3)
    assert row.timings["merge_s"] > 0 and row.timings["evaluate_s"] > 0
    df = run.evaluations()
    assert list(df.columns[:6]) == [
        "generation",
        "index",
        "weight[add]",
        "weight[next]",
        "weight[color]",
        "lambda",
    ]
    front_csv = (reference / "front.csv").read_text().splitlines()
    assert front_csv[0].startswith("generation,index,mean,weight[add]")
    assert len(front_csv) - 1 == len(run.front_rows())


def test_the_search_improves_on_its_first_generation(reference: Path):
    rows = load_run(reference).rows
    first = max(r.objectives["mean"] for r in rows if r.generation == 0)
    best = max(r.objectives["mean"] for r in rows)
    assert best >= first
    front = front_of_run(reference)
    assert front["objectives"] == ["mean"]
    assert front["front"][0]["objectives"]["mean"] == best
    # accuracy on a 3-task benchmark with 4 choices: chance is 0.25, endpoints specialise
    assert best > 0.5


def test_same_seed_same_run(reference: Path, tmp_path: Path):
    again = start_search(write_config(tmp_path), tmp_path / "run").path
    assert stored(again) == stored(reference)


def test_crash_mid_generation_then_resume_gives_the_same_front(reference, tmp_path, monkeypatch):
    calls = {"n": 0}
    real_call = fitness_module.Fitness.__call__

    def crash_after_11(self, genome):
        calls["n"] += 1
        if calls["n"] > 11:  # generation 2 (index 1), candidate 3: mid-generation
            raise KeyboardInterrupt
        return real_call(self, genome)

    monkeypatch.setattr(fitness_module.Fitness, "__call__", crash_after_11)
    with pytest.raises(KeyboardInterrupt):
        start_search(write_config(tmp_path), tmp_path / "run")
    assert load_run(tmp_path / "run").n_candidates == 11

    calls["n"] = -1000  # no crash while resuming; count the evaluations it does
    resume_search(tmp_path / "run")
    assert calls["n"] == -1000 + 24 - 11  # stored candidates are not evaluated again
    assert front_of_run(tmp_path / "run") == front_of_run(reference)
    assert stored(tmp_path / "run") == stored(reference)


def test_resume_of_a_finished_run_evaluates_nothing(reference, tmp_path, monkeypatch):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(reference, copy)

    def never(self, genome):
        raise AssertionError("a finished run was evaluated again")

    monkeypatch.setattr(fitness_module.Fitness, "__call__", never)
    resume_search(copy)
    assert stored(copy) == stored(reference)


def test_nsga2_front_is_non_dominated_per_task(tiny_dir, tmp_path):
    run_dir = start_search(
        write_config(tmp_path, algorithm="nsga2", generations=2), tmp_path / "r"
    ).path
    front = front_of_run(run_dir)
    assert front["objectives"] == ["add", "next", "color"]
    points = [tuple(c["objectives"][n] for n in front["objectives"]) for c in front["front"]]
    assert len(points) >= 2  # three conflicting tasks: a trade-off, not one winner
    everything = [
        tuple(r.objectives[n] for n in front["objectives"]) for r in load_run(run_dir).rows
    ]
    for p in points:
        dominated = any(all(q[k] >= p[k] for k in range(3)) and q != p for q in everything)
        assert not dominated, p


def _merge3(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "merge3", *args],
        capture_output=True,
        text=True,
        timeout=300,
        **kwargs,
    )


def test_sigkill_mid_generation_then_resume_gives_the_same_front(tiny_dir, tmp_path):
    config = write_config(tmp_path, generations=5)
    uninterrupted = start_search(config, tmp_path / "whole").path

    run_dir = tmp_path / "killed"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "merge3",
            "search",
            str(config),
            "--run-dir",
            str(run_dir),
            "--quiet",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    db = run_dir / "run.sqlite"
    deadline = time.monotonic() + 240
    rows = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if db.is_file():
            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.1) as con:
                    rows = con.execute("SELECT COUNT(*) FROM candidates").fetchone()[0]
            except sqlite3.OperationalError:
                rows = 0
            if rows >= 13:  # generation 2 is under way
                break
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the search finished before it could be killed"
    killed_at = load_run(run_dir).n_candidates
    assert 13 <= killed_at < 40

    result = _merge3("resume", str(run_dir), "--quiet")
    assert result.returncode == 0, result.stderr
    assert stored(run_dir) == stored(uninterrupted)
    shown = _merge3("front", str(run_dir), "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == front_of_run(uninterrupted)


class _Killed(BaseException):
    """Stands for SIGKILL: not an Exception, so no handler in merge3 can swallow it."""


KILL_POINTS = ["evaluate", "store-commit", "file-rename"]


@pytest.mark.parametrize("trial", range(3))
def test_resume_after_a_kill_at_a_random_moment(reference, tmp_path, monkeypatch, trial):
    """Kill inside an evaluation, right after a row's commit, or inside an atomic file write
    (checkpoints, front.csv), at a seeded random call; resume must end identical."""
    rng = np.random.default_rng(trial)
    where = KILL_POINTS[trial % len(KILL_POINTS)]
    kill_at = int(rng.integers(1, 22 if where != "file-rename" else 9))
    calls = {"n": 0}

    def tick():
        calls["n"] += 1
        if calls["n"] == kill_at:
            raise _Killed

    if where == "evaluate":
        real_call = fitness_module.Fitness.__call__
        monkeypatch.setattr(
            fitness_module.Fitness, "__call__", lambda self, g: (tick(), real_call(self, g))[1]
        )
    elif where == "store-commit":
        real_add = runs_module.CandidateStore.add
        monkeypatch.setattr(
            runs_module.CandidateStore, "add", lambda self, row: (real_add(self, row), tick())[0]
        )
    else:  # the temp file is complete, the rename never happens
        real_replace = os.replace
        monkeypatch.setattr(runs_module.os, "replace", lambda a, b: (tick(), real_replace(a, b))[1])

    with pytest.raises(_Killed):
        start_search(write_config(tmp_path), tmp_path / "run")
    monkeypatch.undo()
    resume_search(tmp_path / "run")
    assert stored(tmp_path / "run") == stored(reference), (where, kill_at)
    assert front_of_run(tmp_path / "run") == front_of_run(reference)
