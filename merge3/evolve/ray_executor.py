"""The Ray executor: a generation's candidates spread over resident workers (``merge3[ray]``).

Each worker is a Ray actor that builds, once, what the in-process executor builds (the resident
endpoints, the tokenised anchor evaluators, the estimator) through the same code, then evaluates
candidates by id: only (generation, index, genome) go out and a small :class:`Outcome` comes
back. The config, anchors and estimator are put in the object store once. Candidates are handed
out as workers free up (``ray.wait``); the runner puts outcomes back in genome order, so a run
is the same whichever worker finishes first. A worker that dies mid-candidate is replaced and
the candidate retried on another worker, at most ``search.max_retries`` times.

``import ray`` happens only here, and only when a config asks for this executor.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import torch

from merge3.config import RunConfig
from merge3.errors import WorkerError
from merge3.estimate import Estimator
from merge3.evolve import faults
from merge3.evolve.executor import Candidate, Outcome, describe, evaluate_candidate
from merge3.extract import AnchorSet

DEFAULT_CPU_WORKERS = 2
"""Workers on a CPU device: each holds a full copy of the endpoints, so memory, not cores, is
what limits them; two already overlap one candidate's merge with another's evaluation."""


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise WorkerError(
            "search.executor: ray needs the ray extra: pip install 'merge3[ray]'"
        ) from None
    return ray


class _Worker:
    """One resident copy of the endpoints and anchor evaluators (run as a Ray actor)."""

    def __init__(
        self,
        cfg: RunConfig,
        anchors: AnchorSet,
        estimator: Estimator,
        threads: int | None,
        fault: str | None,
    ) -> None:
        from merge3.evolve.fitness import Fitness, Merger
        from merge3.evolve.tasks import load_tasks

        if threads is not None:
            torch.set_num_threads(threads)
        self.fault = fault
        self.fitness = Fitness.build(cfg, Merger(cfg), load_tasks(cfg), anchors, estimator)

    def ready(self) -> bool:
        return True

    def evaluate(self, candidate: Candidate) -> Outcome:
        return evaluate_candidate(self.fitness, candidate, self.fault)


class RayExecutor:
    """N resident workers on a Ray cluster (``search.address``) or a local one."""

    def __init__(self, cfg: RunConfig, anchors: AnchorSet, estimator: Estimator) -> None:
        ray = self._ray = import_ray()
        self._started = False
        if not ray.is_initialized():  # tests and notebooks may have a session already
            try:
                ray.init(
                    address=cfg.search.address,
                    include_dashboard=False,
                    logging_level="WARNING",
                )
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = cfg.search.address or "a local cluster"
                raise WorkerError(f"search.address: cannot start Ray on {where}: {exc}") from None
            self._started = True
        self.max_retries = cfg.search.max_retries
        gpu = cfg.evaluation.device.startswith("cuda")
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        if gpu and not gpus:
            self.close()
            raise WorkerError(
                f"evaluation.device: {cfg.evaluation.device!r} but the Ray cluster has no GPUs"
            )
        n = cfg.search.workers or (gpus if gpu else DEFAULT_CPU_WORKERS)
        if gpu and n > gpus:
            self.close()
            raise WorkerError(f"search.workers: {n} GPU workers, the Ray cluster has {gpus} GPUs")
        cpus = resources.get("CPU", 1.0)
        per_worker = 1.0 if gpu else (max(1.0, cpus // n) if cpus >= n else cpus / n)
        if gpu:  # Ray shows each actor its own GPU as cuda:0
            cfg = cfg.model_copy(
                update={"evaluation": cfg.evaluation.model_copy(update={"device": "cuda"})}
            )
        self._actor = ray.remote(
            num_cpus=per_worker, num_gpus=1 if gpu else 0, max_restarts=0, max_task_retries=0
        )(_Worker)
        threads = None if gpu else max(1, int(per_worker))
        self._args = (ray.put(cfg), ray.put(anchors), ray.put(estimator), threads)
        self._fault = faults.from_env()
        self._actors = [self._spawn() for _ in range(n)]
        self._wait_ready()

    def _spawn(self) -> Any:
        return self._actor.remote(*self._args, self._fault)

    def _wait_ready(self) -> None:
        """Fail at once, with the worker's own error, when workers cannot build the model."""
        try:
            self._ray.get([a.ready.remote() for a in self._actors])
        except self._ray.exceptions.RayError as exc:
            self.close()
            first = str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
            raise WorkerError(f"a search worker failed to start: {first}") from None

    def map(self, candidates: Sequence[Candidate]) -> Iterator[Outcome]:
        """Dispatch to whichever worker is free; yield outcomes as they complete."""
        ray = self._ray
        dead = (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError)
        pending = deque(candidates)
        deaths = {c.index: 0 for c in candidates}
        idle = deque(range(len(self._actors)))
        running: dict[Any, tuple[int, Candidate, float]] = {}
        while pending or running:
            while pending and idle:
                slot, c = idle.popleft(), pending.popleft()
                ref = self._actors[slot].evaluate.remote(c)
                running[ref] = (slot, c, time.perf_counter())
            [ref], _ = ray.wait(list(running), num_returns=1)
            slot, c, t0 = running.pop(ref)
            try:
                outcome = ray.get(ref)
            except dead as exc:  # the worker process died: replace it, retry elsewhere
                self._actors[slot] = self._spawn()
                idle.append(slot)  # the others (if idle) get the retry first
                deaths[c.index] += 1
                if deaths[c.index] <= self.max_retries:
                    pending.appendleft(c)
                    continue
                n, limit = deaths[c.index], self.max_retries
                error = f"worker died ({n} attempts, search.max_retries: {limit}): {describe(exc)}"
                outcome = Outcome(c.index, None, error, time.perf_counter() - t0)
            except ray.exceptions.RayError as exc:  # raised outside the candidate's own guard
                idle.append(slot)
                outcome = Outcome(c.index, None, describe(exc), time.perf_counter() - t0)
            else:
                idle.append(slot)
            yield replace(outcome, worker_deaths=deaths[c.index])

    def close(self) -> None:
        """Stop the workers (and the local cluster, when this executor started it)."""
        ray = self._ray
        for actor in getattr(self, "_actors", []):
            try:
                ray.kill(actor)
            except Exception:  # already dead
                pass
        self._actors = []
        if self._started and ray.is_initialized():
            ray.shutdown()
