"""One generation: read back what is stored, evaluate the rest on the executor, store each.

A candidate is read back when its row is already stored (a resume), copied when its recipe was
evaluated before (genomes on a grid repeat), and otherwise sent to the executor. Every outcome
is committed as soon as it arrives, whatever the completion order; the rows are then walked in
genome order, which is what the optimiser is told and where failures in a row are counted, so
the run does not depend on the executor.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from merge3.errors import RunDirError, SearchStopped
from merge3.evolve.executor import Candidate, Executor, Outcome
from merge3.evolve.genome import GenomeSpace
from merge3.runs import CandidateRow, CandidateStore

WORST = 0.0
"""The objective value of a failed candidate: accuracies lie in [0, 1]."""


class FailureGuard:
    """Stops the run after ``limit`` failed candidates in a row (in genome order)."""

    def __init__(self, limit: int, run_path: object) -> None:
        self.limit = limit
        self.run_path = run_path
        self.in_a_row = 0

    def see(self, row: CandidateRow) -> None:
        if not row.failed:
            self.in_a_row = 0
            return
        self.in_a_row += 1
        if self.in_a_row >= self.limit:
            first_line = (row.error or "").splitlines()[0][:300] if row.error else ""
            raise SearchStopped(
                f"search stopped: {self.in_a_row} candidates failed in a row (last: generation "
                f"{row.generation}, candidate {row.index}: {first_line}); fix the cause and run "
                f"`merge3 resume {self.run_path}`"
            )


def _row(candidate: Candidate, outcome: Outcome, space: GenomeSpace, names) -> CandidateRow:
    genome = candidate.genome.tolist()
    ev = outcome.evaluation
    deaths = outcome.worker_deaths
    extra = {"worker_deaths": float(deaths)} if deaths else {}
    if ev is None:
        return CandidateRow(
            candidate.generation,
            candidate.index,
            genome,
            space.decode(candidate.genome),
            {n: WORST for n in names},
            {},
            {},
            {"failed_s": outcome.seconds, **extra},
            error=outcome.error or "unknown error",
        )
    return CandidateRow(
        candidate.generation,
        candidate.index,
        genome,
        ev.recipe,
        ev.objectives,
        ev.anchor_correct,
        ev.estimates,
        {**ev.timings, **extra},
    )


def _copy(row: CandidateRow, generation: int, index: int, genome: np.ndarray) -> CandidateRow:
    """The same merge reached by another genome: same result, nothing evaluated."""
    return replace(
        row, generation=generation, index=index, genome=genome.tolist(), timings={"reused": 1.0}
    )


def evaluate_generation(
    store: CandidateStore,
    space: GenomeSpace,
    executor: Executor,
    guard: FailureGuard,
    generation: int,
    genomes: np.ndarray,
    names: Sequence[str],
    on_row: Callable[[CandidateRow, bool], None],
) -> list[CandidateRow]:
    """The generation's rows in genome order; ``on_row(row, was_stored)`` in that order too."""
    n = len(genomes)
    rows: list[CandidateRow | None] = [None] * n
    was_stored = [False] * n
    copies: dict[int, list[int]] = {}  # evaluated index → later indices with the same recipe
    first_of: dict[str, int] = {}
    todo: list[Candidate] = []
    for i, genome in enumerate(genomes):
        stored = store.get(generation, i)
        if stored is not None and stored.genome != genome.tolist():
            raise RunDirError(
                f"{store.path}: candidate {i} of generation {generation} differs from the one "
                "stored; the config, data or merge3 version changed since the run started"
            )
        if stored is not None and not stored.failed:
            rows[i], was_stored[i] = stored, True
            continue
        if stored is not None:  # failed in an earlier attempt at this generation: try again
            store.forget_failure(generation, i)
        recipe = space.decode(genome)
        key = json.dumps(recipe)
        if key in first_of:
            copies.setdefault(first_of[key], []).append(i)
            continue
        first_of[key] = i
        same = store.find_recipe(recipe)
        if same is not None:
            rows[i] = _copy(same, generation, i, genome)
            store.add(rows[i])
        else:
            todo.append(Candidate(generation, i, genome))
    for i in list(copies):  # copies of a stored or re-used row are ready now
        if rows[i] is not None:
            _fill_copies(store, rows, copies.pop(i), rows[i], generation, genomes)

    cursor = 0

    def advance() -> None:
        nonlocal cursor
        while cursor < n and rows[cursor] is not None:
            row = rows[cursor]
            cursor += 1
            on_row(row, was_stored[cursor - 1])
            guard.see(row)

    advance()
    by_index = {c.index: c for c in todo}
    with contextlib.closing(executor.map(todo)) as outcomes:
        for outcome in outcomes:
            row = _row(by_index[outcome.index], outcome, space, names)
            store.add(row)
            rows[outcome.index] = row
            _fill_copies(store, rows, copies.pop(outcome.index, []), row, generation, genomes)
            advance()
    advance()
    missing = [i for i, r in enumerate(rows) if r is None]
    if missing:
        raise RuntimeError(f"the executor returned no outcome for candidates {missing}")
    return rows  # type: ignore[return-value]


def _fill_copies(
    store: CandidateStore,
    rows: list[CandidateRow | None],
    indices: list[int],
    source: CandidateRow,
    generation: int,
    genomes: np.ndarray,
) -> None:
    for k in indices:
        rows[k] = _copy(source, generation, k, genomes[k])
        store.add(rows[k])
