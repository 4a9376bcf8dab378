"""The Ray executor on a local 2-CPU Ray: same run as in-process, survives dying workers.

One Ray session serves the whole module (starting Ray is the slow part); each search starts
its own two CPU workers on it, as `search.executor: ray` does on a cluster.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import ray  # the ray extra: `make setup` and CI install it
import yaml
from test_search import front_of_run, stored, write_config

from merge3.config import parse_config
from merge3.errors import WorkerError
from merge3.evolve import ray_executor, start_search
from merge3.runs import load_run


@pytest.fixture(scope="module")
def ray_session():
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=80 * 1024**2,
        log_to_driver=False,
        logging_level="ERROR",
    )
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def in_process(tiny_dir, tmp_path_factory) -> Path:
    """The tiny GA run (3 generations × 8) on the in-process executor."""
    tmp = tmp_path_factory.mktemp("in-process")
    return start_search(write_config(tmp), tmp / "run").path


@pytest.fixture
def outcomes(monkeypatch) -> list:
    """Every outcome the Ray executor hands the runner (driver side)."""
    seen: list = []
    real_map = ray_executor.RayExecutor.map

    def recording_map(self, candidates):
        for outcome in real_map(self, candidates):
            seen.append(outcome)
            yield outcome

    monkeypatch.setattr(ray_executor.RayExecutor, "map", recording_map)
    return seen


def ray_config(tmp_path: Path, **search) -> Path:
    return write_config(tmp_path, executor="ray", workers=2, **search)


def test_ray_run_is_the_in_process_run(ray_session, in_process, tmp_path, outcomes):
    run = start_search(ray_config(tmp_path), tmp_path / "run").path
    assert stored(run) == stored(in_process)
    assert front_of_run(run) == front_of_run(in_process)
    # the candidates were spread over both workers, none ran in this (the driver) process
    workers = {o.worker for o in outcomes}
    assert len(workers) == 2, workers
    assert not any(w.endswith(f":{os.getpid()}") for w in workers)
    assert all(o.worker_deaths == 0 and o.error is None for o in outcomes)


def test_a_worker_killed_mid_candidate_is_replaced_and_the_candidate_retried(
    ray_session, in_process, tmp_path, outcomes, monkeypatch
):
    marker = tmp_path / "died"
    monkeypatch.setenv("MERGE3_FAULT", f"exit:1:3:{marker}")  # once: the marker stops a repeat
    run = start_search(ray_config(tmp_path), tmp_path / "run").path
    assert marker.is_file(), "the fault never fired"
    dead_pid = marker.read_text().strip()
    retried = [o for o in outcomes if o.index == 3 and o.worker_deaths]
    assert len(retried) == 1 and retried[0].error is None
    assert not retried[0].worker.endswith(f":{dead_pid}")  # evaluated by another worker
    assert load_run(run).rows[8 + 3].timings["worker_deaths"] == 1.0
    assert stored(run) == stored(in_process)  # as if nothing had happened
    assert front_of_run(run) == front_of_run(in_process)


def test_failures_inside_workers_are_recorded_and_the_run_goes_on(
    ray_session, in_process, tmp_path, monkeypatch
):
    # candidate (0, 2) raises; candidate (1, 4) kills its worker every time: with no retries
    # allowed it fails at once (retrying is the test above; each new worker costs seconds)
    monkeypatch.setenv("MERGE3_FAULT", "raise:0:2;exit:1:4")
    run_dir = start_search(ray_config(tmp_path, max_retries=0), tmp_path / "run").path
    run = load_run(run_dir)
    assert run.n_candidates == 24  # the run finished
    failed = {(r.generation, r.index): r for r in run.failed_rows()}
    assert set(failed) == {(0, 2), (1, 4)}
    assert "RuntimeError: injected fault" in failed[0, 2].error
    assert failed[1, 4].error.startswith("worker died (1 attempts, search.max_retries: 0): ")
    assert "ActorDiedError" in failed[1, 4].error
    assert failed[1, 4].timings["worker_deaths"] == 1.0
    assert all(r.objectives == {"mean": 0.0} for r in failed.values())
    assert not set(failed) & {(r.generation, r.index) for r in run.front_rows()}
    # the rest of generation 0 is exactly the in-process result
    ok = [r for r in run.rows if r.generation == 0 and r.index != 2]
    reference = load_run(in_process).rows
    assert [(r.recipe, r.objectives) for r in ok] == [
        (r.recipe, r.objectives) for r in reference[:8] if r.index != 2
    ]


def _tiny_config(tmp_path: Path, **changes):
    """The tiny config, parsed, with some sections replaced."""
    data = yaml.safe_load(write_config(tmp_path).read_text())
    data.update(changes)
    return parse_config(data, "run.yaml", tmp_path)


def test_workers_that_cannot_start_are_one_clear_error(ray_session, tiny_dir, tmp_path):
    models = {"base": str(tmp_path / "nowhere"), "endpoints": {"add": str(tmp_path / "x")}}
    cfg = _tiny_config(tmp_path, models=models, search={"executor": "ray", "workers": 1})
    with pytest.raises(WorkerError, match=r"^a search worker failed to start: .*nowhere") as err:
        ray_executor.RayExecutor(cfg, None, None)
    cuda = _tiny_config(tmp_path, evaluation={"device": "cuda"}, search={"executor": "ray"})
    with pytest.raises(WorkerError, match=r"^evaluation.device: 'cuda' but the Ray cluster has no"):
        ray_executor.RayExecutor(cuda, None, None)
    assert ray.is_initialized()  # a session the executor did not start is left running
    assert str(err.value).endswith("nowhere: model folder not found")
