"""Executors: where the candidates of a generation are merged and evaluated.

The runner hands an executor the candidates that need evaluating and gets one
:class:`Outcome` per candidate back, in any order (a parallel executor yields them as they
complete). The runner stores each outcome as it arrives and tells the optimiser in genome order,
so a run does not depend on the executor or on the completion order.

A candidate that raises (NaN weights, out of memory, an evaluator error) becomes a failed
outcome with its error text; it never stops the executor. Both executors evaluate through
:func:`evaluate_candidate`, so their results are the same.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from merge3.config import RunConfig
from merge3.data.tasks import Task
from merge3.estimate import Estimator
from merge3.evolve import faults
from merge3.evolve.fitness import Evaluation, Fitness, Merger
from merge3.extract import AnchorSet


@dataclass(frozen=True)
class Candidate:
    """What a worker needs to evaluate one candidate: its id and genome (a few floats)."""

    generation: int
    index: int
    genome: np.ndarray


@dataclass(frozen=True)
class Outcome:
    """One candidate's result: an evaluation, or the error it raised."""

    index: int
    evaluation: Evaluation | None
    error: str | None = None
    seconds: float = 0.0
    worker_deaths: int = 0
    """Workers that died while evaluating it (it was retried after each, within bounds)."""
    worker: str = ""
    """``host:pid`` of the process that evaluated it (for logs and tests)."""


class Executor(Protocol):
    def map(self, candidates: Sequence[Candidate]) -> Iterator[Outcome]:
        """One outcome per candidate, in any order."""
        ...

    def close(self) -> None: ...


def describe(exc: BaseException) -> str:
    """``Type: message`` of an exception, as stored in the candidate's ``error`` column."""
    return f"{type(exc).__name__}: {exc}".strip()


def evaluate_candidate(fitness: Fitness, candidate: Candidate, fault: str | None) -> Outcome:
    """Evaluate one candidate; an exception becomes a failed outcome (the run goes on)."""
    t0 = time.perf_counter()
    worker = f"{socket.gethostname()}:{os.getpid()}"
    try:
        faults.inject(fault, candidate.generation, candidate.index)
        evaluation = fitness(candidate.genome)
    except Exception as exc:  # NaN weights, CUDA out of memory, an evaluator error
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # after an OOM, give the next candidate a clean slate
        seconds = time.perf_counter() - t0
        return Outcome(candidate.index, None, describe(exc), seconds, worker=worker)
    return Outcome(candidate.index, evaluation, None, time.perf_counter() - t0, worker=worker)


class InProcessExecutor:
    """Today's behaviour: candidates one after the other on the driver's resident model."""

    def __init__(self, fitness: Fitness) -> None:
        self.fitness = fitness
        self.fault = faults.from_env()

    def map(self, candidates: Sequence[Candidate]) -> Iterator[Outcome]:
        for candidate in candidates:
            yield evaluate_candidate(self.fitness, candidate, self.fault)

    def close(self) -> None:
        pass


def check_executor(cfg: RunConfig) -> None:
    """Fail before a run directory is created when the executor cannot run (missing extra)."""
    if cfg.search.executor == "ray":
        from merge3.evolve.ray_executor import import_ray

        import_ray()


def make_executor(
    cfg: RunConfig,
    merger: Merger,
    tasks: Mapping[str, Task],
    anchors: AnchorSet,
    estimator: Estimator,
    on_items: Callable[[int, int], None] | None = None,
) -> Executor:
    """The executor ``search.executor`` names, with everything it needs built once."""
    if cfg.search.executor == "ray":
        from merge3.evolve.ray_executor import RayExecutor

        return RayExecutor(cfg, anchors, estimator)
    fitness = Fitness.build(cfg, merger, tasks, anchors, estimator)
    fitness.on_items = on_items
    return InProcessExecutor(fitness)
