"""SIGKILL at seeded random moments, including inside checkpoint and database writes.

Each trial runs ``merge3 search`` on a small variant of the bundled tiny setting in a
subprocess and SIGKILLs it at a seeded random moment:

- ``db-write:N``: inside the N-th candidate's database transaction (row inserted, not committed);
- ``checkpoint-write:N``: with half of the N-th checkpoint's temporary file written;
- ``file-write:N``: with half of another run file written (anchors.json, front.csv);
- ``time``: a seeded random delay after the run directory appeared (any phase: evaluation,
  checkpoint, front, final test-split evaluation, export of the best merge).

The first three use the test hook ``MERGE3_TEST_PAUSE_AT`` (merge3/runs.py ``pause_point``):
the process announces that it reached the point and sleeps, and the harness kills it there.
After each kill, ``merge3 resume`` must succeed, every candidate committed before the kill must
still be stored with identical values, and the run must end exactly as an uninterrupted run
with the same seed (every stored candidate, the test accuracies, the front).

The killed searches run two at a time in a module fixture; the resumes run in-process.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import TINY_CONFIG
from typer.testing import CliRunner

from merge3.analysis import front_json
from merge3.cli import app
from merge3.runs import CandidateStore, load_run

GENERATIONS, POPULATION = 3, 6
CANDIDATES = GENERATIONS * POPULATION
SEED = 20240607


def small_config(path: Path) -> Path:
    """The tiny setting with a smaller search, so that one trial takes seconds."""
    data = yaml.safe_load(TINY_CONFIG.read_text())
    data["anchors"]["n_per_task"] = 10
    data["search"].update(population=POPULATION, generations=GENERATIONS)
    data["final"] = {"top_k": 2, "export_best": True}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", **extra}


def search_process(config: Path, run_dir: Path, **env: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "merge3", "search", str(config), "--run-dir", str(run_dir), "-q"]
    return subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env(**env), text=True
    )


def stored(run_dir: Path) -> list:
    """What must match an uninterrupted run: every candidate but its timings, test accuracies."""
    run = load_run(run_dir)
    rows = [
        (r.generation, r.index, r.genome, r.recipe, r.objectives, r.anchor_correct, r.estimates)
        for r in run.rows
    ]
    return [*rows, sorted(run.test_accuracy.items())]


def front_of(run_dir: Path) -> dict:
    run = load_run(run_dir)
    return front_json(run.front_rows(), run.objectives, run.test_accuracy)


@dataclass
class Reference:
    run: Path
    config: Path
    created_s: float  # from start to the run directory's appearance
    total_s: float


@dataclass
class Trial:
    moment: str  # db-write:N, checkpoint-write:N, file-write:N or time:SECONDS
    run: Path
    hit: str = ""  # what the paused process reported (MOMENT:N), or the phase of a timed kill
    returncode: int | None = None
    committed: list | None = None  # every stored row (with timings) right after the kill
    finals: dict | None = None
    temporaries: list[str] | None = None  # half-written files the kill left
    best: bool = False  # the best merge was exported before the kill


def plan(rng: np.random.Generator, ref: Reference) -> list[str]:
    """22 seeded moments: 8 inside a database write, 5 inside a checkpoint write, 3 inside
    another file write (anchors.json, front.csv), 6 at a random time after the run exists."""
    # the first and last row, the rest spread over the generations
    rows = [1, CANDIDATES, *rng.choice(np.arange(2, CANDIDATES), 6, replace=False).tolist()]
    moments = [f"db-write:{n}" for n in rows]
    ckpts = [*range(1, GENERATIONS + 1), *rng.integers(1, GENERATIONS + 1, 5 - GENERATIONS)]
    moments += [f"checkpoint-write:{n}" for n in ckpts]
    # file writes 1 and 2 assemble the run directory before it exists; 3 is anchors.json,
    # 4 to 3 + GENERATIONS the front after each generation
    moments += [f"file-write:{n}" for n in (3, *rng.integers(4, 4 + GENERATIONS, 2))]
    window = ref.total_s - ref.created_s
    moments += [f"time:{rng.uniform(0.02, 0.9) * window:.3f}" for _ in range(6)]
    return moments


def _wait_for(path: Path, proc: subprocess.Popen, limit: float = 240) -> None:
    deadline = time.monotonic() + limit
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"search exited ({proc.returncode}) first: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"{path} never appeared")
        time.sleep(0.005)


def run_trial(config: Path, trial: Trial) -> Trial:
    kind, _, value = trial.moment.partition(":")
    if kind == "time":
        proc = search_process(config, trial.run)
        _wait_for(trial.run / "config.yaml", proc)
        time.sleep(float(value))
        trial.hit = "time"
    else:
        flag = trial.run.parent / f"{trial.run.name}.paused"
        proc = search_process(
            config,
            trial.run,
            MERGE3_TEST_PAUSE_AT=trial.moment,
            MERGE3_TEST_PAUSE_FILE=str(flag),
        )
        _wait_for(flag, proc)
        trial.hit = flag.read_text().strip()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    trial.returncode = proc.returncode
    # what was committed at the moment of the kill, read from a copy (a reader of the live
    # files would recover the WAL itself)
    if trial.run.is_dir():
        copy = trial.run.parent / f"{trial.run.name}.at-kill"
        shutil.copytree(trial.run, copy)
        store = CandidateStore(copy / "run.sqlite")
        trial.committed, trial.finals = list(store), store.finals()
        store.close()
        temps = [*copy.glob(".*.tmp"), *copy.glob("checkpoints/.*.tmp"), *copy.glob(".best-*")]
        trial.temporaries = sorted(str(p.relative_to(copy)) for p in temps)
        trial.best = (copy / "best").is_dir()
    return trial


@pytest.fixture(scope="module")
def harness(tiny_dir, tmp_path_factory) -> tuple[Reference, list[Trial]]:
    root = tmp_path_factory.mktemp("kill")
    config = small_config(root / "small.yaml")
    start = time.monotonic()
    proc = search_process(config, root / "reference")
    _wait_for(root / "reference" / "config.yaml", proc)
    created = time.monotonic() - start
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    ref = Reference(root / "reference", config, created, time.monotonic() - start)
    assert load_run(ref.run).n_candidates == CANDIDATES

    moments = plan(np.random.default_rng(SEED), ref)
    trials = [Trial(m, root / f"trial-{k:02d}") for k, m in enumerate(moments)]
    with ThreadPoolExecutor(2) as pool:  # two searches at a time: one per core
        trials = list(pool.map(lambda t: run_trial(config, t), trials))
    return ref, trials


N_TRIALS = 22


def test_the_harness_hits_database_and_checkpoint_writes(harness):
    ref, trials = harness
    assert len(trials) == N_TRIALS
    hits = [t.hit.split(":")[0] for t in trials]
    assert hits.count("db-write") >= 5 and hits.count("checkpoint-write") >= 3
    assert hits.count("file-write") >= 2 and hits.count("time") >= 5
    for t in trials:
        if t.hit != "time":  # the process reached the very point it was told to pause at
            assert t.hit == t.moment
        assert t.returncode == -signal.SIGKILL or (t.hit == "time" and t.returncode == 0)
    killed_mid_search = [t for t in trials if len(t.committed) < CANDIDATES]
    assert len(killed_mid_search) >= 10
    for t in trials:  # a kill inside a checkpoint write left half of its temporary file
        if t.hit.startswith("checkpoint-write:"):
            gen = int(t.hit.split(":")[1])
            assert any(x.startswith(f"checkpoints/.gen-{gen:04d}.pkl.") for x in t.temporaries)
    summary = [
        f"{t.moment:>20} rows={len(t.committed):2d} finals={len(t.finals)} best={t.best:d} "
        f"rc={t.returncode} left={t.temporaries}"
        for t in trials
    ]
    print("\n".join(summary))  # shown with -s: which phases the timed kills hit


@pytest.mark.parametrize("k", range(N_TRIALS))
def test_resume_after_sigkill_loses_nothing_and_ends_like_an_uninterrupted_run(harness, k):
    ref, trials = harness
    trial = trials[k]
    result = CliRunner().invoke(app, ["resume", str(trial.run), "--quiet"])
    assert result.exit_code == 0, (trial.moment, result.output, result.exception)

    run = load_run(trial.run)
    now = {(r.generation, r.index): r for r in run.rows}
    for row in trial.committed:  # nothing committed before the kill is lost or changed
        assert now[(row.generation, row.index)] == row, (trial.moment, row.generation, row.index)
    for key, acc in trial.finals.items():
        assert run.test_accuracy[key] == acc
    if trial.moment.startswith("db-write:"):  # the row being written was not committed
        assert len(trial.committed) == int(trial.moment.split(":")[1]) - 1
    assert stored(trial.run) == stored(ref.run), trial.moment
    assert front_of(trial.run) == front_of(ref.run)
    best = trial.run / "best"
    assert (best / "model.safetensors").is_file() and (best / "merge.yaml").is_file()
    leftovers = [
        *trial.run.glob(".*.tmp"),
        *trial.run.glob("checkpoints/.*"),
        *trial.run.glob(".best-*"),
    ]
    assert leftovers == []  # the resume removed what the kill left half-written


@pytest.mark.parametrize("damage", ["truncated", "flipped-byte"])
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(harness, tmp_path, damage):
    """End to end: the newest checkpoint fails its checksum, the previous one is used, the
    generation after it is replayed from the store (nothing evaluated again)."""
    ref, _ = harness
    run_dir = tmp_path / "run"
    shutil.copytree(ref.run, run_dir)
    latest = run_dir / "checkpoints" / f"gen-{GENERATIONS:04d}.pkl"
    data = bytearray(latest.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 3]
    else:
        data[len(data) // 2] ^= 0x40
    latest.write_bytes(bytes(data))
    rows_before = load_run(run_dir).rows

    from merge3.evolve import resume_search

    with pytest.warns(UserWarning, match=f"{latest.name}: skipped"):
        resume_search(run_dir)
    assert load_run(run_dir).rows == rows_before  # timings too: nothing was evaluated again
    assert stored(run_dir) == stored(ref.run)
    assert front_of(run_dir) == front_of(ref.run)
    assert latest.read_bytes() != bytes(data)  # replaced by an intact checkpoint
    assert load_run(run_dir).dir.latest_checkpoint()[0] == GENERATIONS


def test_a_kill_while_the_run_directory_is_created_leaves_nothing_to_resume(harness, tmp_path):
    """Killed inside the second file of a new run (config.yaml, after the frozen copy): the run
    directory is assembled beside its place, so none appears; a new search there just works."""
    ref, _ = harness
    trial = run_trial(ref.config, Trial("file-write:2", tmp_path / "run"))
    assert trial.hit == "file-write:2" and trial.returncode == -signal.SIGKILL
    assert not trial.run.exists()
    refused = CliRunner().invoke(app, ["resume", str(trial.run)])
    assert refused.exit_code == 2 and "run directory not found" in refused.stderr
    again = CliRunner().invoke(app, ["search", str(ref.config), "--run-dir", str(trial.run), "-q"])
    assert again.exit_code == 0, again.output
    assert stored(trial.run) == stored(ref.run)
