"""Failing candidates (in-process executor): recorded with their error and the worst fitness,
never on the front; K in a row stop the run with one line, and a resume then completes it."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TINY_CONFIG
from test_search import front_of_run, stored, write_config
from typer.testing import CliRunner

from merge3.cli import app
from merge3.config import parse_config
from merge3.errors import ConfigError, SearchStopped
from merge3.evolve import fitness as fitness_module
from merge3.evolve import start_search
from merge3.evolve.fitness import check_finite
from merge3.evolve.generation import FailureGuard
from merge3.runs import CandidateRow, CandidateStore, load_run

runner = CliRunner()


@pytest.fixture(scope="module")
def reference(tiny_dir, tmp_path_factory) -> Path:
    """An uninterrupted, failure-free 3-generation GA run of the tiny setting."""
    tmp = tmp_path_factory.mktemp("reference")
    return start_search(write_config(tmp), tmp / "run").path


def same_rows(rows: list[CandidateRow]) -> list[tuple]:
    return [(r.generation, r.index, r.genome, r.recipe, r.objectives, r.error) for r in rows]


def test_nan_weights_name_the_tensor_and_the_run_goes_on(reference, tmp_path, monkeypatch):
    target = load_run(reference).rows[4]  # candidate 4 of generation 0
    real_apply = fitness_module.Merger._apply
    poisoned = {}

    def apply_with_nan(self, recipe):
        real_apply(self, recipe)
        if recipe == target.recipe:
            name, p = next(iter(self.endpoints.params.items()))
            p.data.view(-1)[:3] = float("nan")
            poisoned[name] = p.numel()

    monkeypatch.setattr(fitness_module.Merger, "_apply", apply_with_nan)
    run_dir = start_search(write_config(tmp_path), tmp_path / "run").path
    run = load_run(run_dir)
    assert run.n_candidates == 24  # the run finished
    [failed] = run.failed_rows()
    [(name, numel)] = poisoned.items()
    assert (failed.generation, failed.index) == (0, 4)
    assert failed.error == (
        f"FloatingPointError: merged tensor {name!r} has 3 NaN/Inf values of {numel}"
    )
    assert failed.objectives == {"mean": 0.0} and failed.estimates == {}
    assert failed.recipe == target.recipe  # what was tried is kept
    # the next candidate is merged from scratch: the NaN did not leak into it
    reference_rows = load_run(reference).rows
    assert same_rows(run.rows[5:8]) == same_rows(reference_rows[5:8])
    assert same_rows(run.rows[:4]) == same_rows(reference_rows[:4])
    # shown as failed, never on the front, in the CLI and the notebook API
    assert (0, 4) not in {(r.generation, r.index) for r in run.front_rows()}
    shown = runner.invoke(app, ["front", str(run_dir), "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["failed"] == [
        {"generation": 0, "index": 4, "genome": failed.genome, "error": failed.error}
    ]
    table = runner.invoke(app, ["front", str(run_dir)])
    assert "1 candidates failed; first: 0/4 FloatingPointError" in table.stdout
    df = run.evaluations()
    assert df["error"].notna().sum() == 1 and df.loc[4, "error"] == failed.error
    assert run.hypervolume().iloc[-1] == max(r.objectives["mean"] for r in run.rows)


def test_out_of_memory_in_one_candidate_is_recorded(reference, tmp_path, monkeypatch):
    target = load_run(reference).rows[8 + 2].genome  # candidate 2 of generation 1
    real_call = fitness_module.Fitness.__call__

    def oom_for_one(self, genome):
        if genome.tolist() == target:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_call(self, genome)

    monkeypatch.setattr(fitness_module.Fitness, "__call__", oom_for_one)
    run = load_run(start_search(write_config(tmp_path), tmp_path / "run").path)
    assert [(r.generation, r.index) for r in run.failed_rows()] == [(1, 2)]
    assert run.failed_rows()[0].error.startswith("OutOfMemoryError: CUDA out of memory.")
    assert run.n_candidates == 24
    assert same_rows(run.rows[:10]) == same_rows(load_run(reference).rows[:10])


def test_k_failures_in_a_row_stop_the_run_with_one_line_and_resume_completes_it(
    reference, tmp_path, monkeypatch
):
    config = write_config(tmp_path, max_consecutive_failures=3)
    run_dir = tmp_path / "run"
    monkeypatch.setenv("MERGE3_FAULT", "raise:1:*")  # generation 1 fails throughout
    result = runner.invoke(app, ["search", str(config), "--run-dir", str(run_dir), "--quiet"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("merge3: error:")]
    assert errors == [lines[-1]]  # one line, the last
    assert sum(" failed: RuntimeError: injected fault" in line for line in lines) == 3
    assert errors[0].startswith("merge3: error: search stopped: 3 candidates failed in a row")
    assert "generation 1, candidate 2: RuntimeError: injected fault" in errors[0]
    assert errors[0].endswith(f"`merge3 resume {run_dir}`")
    run = load_run(run_dir)
    assert run.n_candidates == 8 + 3  # stopped at the third failure, nothing evaluated after
    assert [(r.generation, r.index) for r in run.failed_rows()] == [(1, 0), (1, 1), (1, 2)]

    monkeypatch.delenv("MERGE3_FAULT")  # the cause is fixed
    resumed = runner.invoke(app, ["resume", str(run_dir), "--quiet"])
    assert resumed.exit_code == 0, resumed.output
    # the failures of the unfinished generation were tried again: as if nothing had failed
    assert stored(run_dir) == stored(reference)
    assert front_of_run(run_dir) == front_of_run(reference)


def test_fewer_than_k_failures_in_a_row_do_not_stop_the_run(reference, tmp_path, monkeypatch):
    monkeypatch.setenv("MERGE3_FAULT", "raise:1:*")  # 8 in a row, then successes again
    run_dir = start_search(
        write_config(tmp_path, max_consecutive_failures=9), tmp_path / "run"
    ).path
    run = load_run(run_dir)
    assert run.n_candidates == 24 and len(run.failed_rows()) == 8
    assert all(r.generation == 1 for r in run.failed_rows())
    assert run.front_rows() and not any(r.failed for r in run.front_rows())
    assert (run_dir / "best").is_dir()  # the final steps ran


def test_the_failure_count_runs_across_generations_and_resets_on_success():
    guard = FailureGuard(3, "RUN")
    row = CandidateRow(0, 0, [], {}, {"mean": 0.5}, {}, {}, {})
    fail = [
        CandidateRow(g, i, [], {}, {"mean": 0.0}, {}, {}, {}, error="E: x")
        for g, i in [(0, 6), (0, 7), (1, 0)]
    ]
    guard.see(fail[0])
    guard.see(row)  # a success resets the count
    guard.see(fail[0])
    guard.see(fail[1])
    with pytest.raises(SearchStopped, match=r"3 candidates failed in a row \(last: generation 1"):
        guard.see(fail[2])


def test_a_failed_candidate_is_never_on_the_front_nor_ranked_even_when_nothing_is_better():
    from merge3.analysis import front_of, ranked

    failed = CandidateRow(0, 0, [0.1], {"a": 1}, {"x": 0.0, "y": 0.0}, {}, {}, {}, error="E: e")
    poor = CandidateRow(0, 1, [0.2], {"a": 2}, {"x": 0.0, "y": 0.0}, {}, {}, {})
    assert front_of([failed, poor], ["x", "y"]) == [poor]
    assert ranked([failed, poor], ["x", "y"]) == [poor]
    assert front_of([failed], ["x"]) == [] and ranked([failed], ["x"]) == []


def test_check_finite_names_the_first_bad_tensor():
    params = {"a": torch.ones(4), "b": torch.tensor([1.0, float("inf"), float("nan")])}
    with pytest.raises(FloatingPointError, match=r"merged tensor 'b' has 2 NaN/Inf values of 3"):
        check_finite(params)
    check_finite({"a": torch.ones(2)})


OLD_SCHEMA = """CREATE TABLE candidates (
    generation INTEGER NOT NULL, idx INTEGER NOT NULL, genome TEXT NOT NULL,
    recipe TEXT NOT NULL, objectives TEXT NOT NULL, anchor_correct TEXT NOT NULL,
    estimates TEXT NOT NULL, timings TEXT NOT NULL,
    created REAL NOT NULL DEFAULT (julianday('now')), PRIMARY KEY (generation, idx))"""


def test_a_database_from_before_failures_gains_the_error_column(tmp_path):
    db = tmp_path / "run.sqlite"
    with sqlite3.connect(db) as con:
        con.execute(OLD_SCHEMA)
        con.execute(
            "INSERT INTO candidates (generation, idx, genome, recipe, objectives, "
            "anchor_correct, estimates, timings) VALUES (0, 0, '[0.5]', '{}', "
            "'{\"mean\": 0.7}', '{}', '{}', '{}')"
        )
    store = CandidateStore(db)
    [old] = list(store)
    assert old.error is None and old.objectives == {"mean": 0.7}
    store.add(CandidateRow(0, 1, [0.2], {}, {"mean": 0.0}, {}, {}, {}, error="E: boom"))
    assert store.get(0, 1).error == "E: boom"
    assert store.find_recipe({}) == old  # a failed row is never reused for its recipe
    store.close()
    CandidateStore(db).close()  # opening a migrated database again is a no-op


def _config(**search) -> dict:
    data = yaml.safe_load(TINY_CONFIG.read_text())
    data["search"].update(search)
    return data


@pytest.mark.parametrize(
    ("search", "needle"),
    [
        ({"executor": "threads"}, "search.executor: Input should be 'in_process' or 'ray'"),
        ({"workers": 2}, "search.workers: applies only to executor: ray"),
        ({"address": "auto"}, "search.address: applies only to executor: ray"),
        ({"executor": "ray", "workers": 0}, "search.workers: Input should be greater than"),
        ({"max_retries": -1}, "search.max_retries: Input should be greater than"),
        ({"max_consecutive_failures": 0}, "search.max_consecutive_failures: Input should be"),
    ],
)
def test_executor_and_failure_keys_are_validated(search, needle):
    with pytest.raises(ConfigError) as err:
        parse_config(_config(**search), "run.yaml")
    assert needle in str(err.value)


def test_failure_keys_default_and_round_trip():
    cfg = parse_config(_config(executor="ray", workers=3, max_retries=1), "run.yaml")
    s = cfg.search
    assert (s.executor, s.workers, s.address, s.max_retries) == ("ray", 3, None, 1)
    assert parse_config(_config(), "run.yaml").search.max_consecutive_failures == 10


def test_ray_executor_without_the_extra_is_one_clear_line(tiny_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    config = write_config(tmp_path, executor="ray")
    result = runner.invoke(app, ["search", str(config), "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    [line] = result.stderr.strip().splitlines()
    assert line == (
        "merge3: error: search.executor: ray needs the ray extra: pip install 'merge3[ray]'"
    )
    assert not (tmp_path / "run").exists()  # checked before anything is written


def test_a_distributed_driver_frees_its_models_during_the_search(reference, tmp_path, monkeypatch):
    # With a worker executor the driver's resident models are released before the workers
    # start and rebuilt for the final evaluation: one copy per device at a time, same results.
    from merge3.evolve import runner as runner_module
    from merge3.evolve.executor import InProcessExecutor
    from merge3.evolve.fitness import Fitness, Merger

    loaded_while_searching = []

    def worker_executor(cfg, merger, tasks, anchors, estimator, on_items=None):
        loaded_while_searching.append(merger.loaded)
        worker = Merger(cfg)  # what each Ray worker builds for itself
        return InProcessExecutor(Fitness.build(cfg, worker, tasks, anchors, estimator))

    monkeypatch.setattr(runner_module, "make_executor", worker_executor)
    run_dir = start_search(write_config(tmp_path, executor="ray"), tmp_path / "run").path
    assert loaded_while_searching == [False]
    assert stored(run_dir) == stored(reference)  # the final test evaluation reloaded the models
    assert front_of_run(run_dir) == front_of_run(reference)
