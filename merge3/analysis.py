"""Pareto fronts and tables of a run's candidates (for the CLI and for notebooks)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

from merge3.runs import CandidateRow


def pareto_indices(objectives: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated rows of an (n, m) array of accuracies (higher is better)."""
    objectives = np.asarray(objectives, dtype=float)
    if len(objectives) == 0:
        return np.zeros(0, dtype=int)
    if objectives.shape[1] == 1:
        return np.flatnonzero(objectives[:, 0] == objectives[:, 0].max())
    front = NonDominatedSorting().do(-objectives, only_non_dominated_front=True)
    return np.sort(np.asarray(front, dtype=int))


def front_of(rows: Iterable[CandidateRow], names: Sequence[str]) -> list[CandidateRow]:
    """The non-dominated candidates, one per distinct genome, best first on the first objective.

    The same genome evaluated twice (pymoo may re-propose a survivor) appears once.
    """
    unique: dict[tuple, CandidateRow] = {}
    for row in rows:
        unique.setdefault(tuple(row.genome), row)
    candidates = list(unique.values())
    if not candidates:
        return []
    values = np.array([[r.objectives[n] for n in names] for r in candidates])
    chosen = [candidates[i] for i in pareto_indices(values)]
    return sorted(chosen, key=lambda r: ([-r.objectives[n] for n in names], r.generation, r.index))


def front_json(rows: Sequence[CandidateRow], names: Sequence[str]) -> dict:
    """The front in the documented JSON shape; objectives are accuracies."""
    return {
        "objectives": list(names),
        "front": [
            {
                "genome": r.genome,
                "recipe": r.recipe,
                "objectives": {n: r.objectives[n] for n in names},
            }
            for r in rows
        ],
    }


def front_csv(rows: Sequence[CandidateRow], names: Sequence[str], genes: Sequence[str]) -> str:
    """CSV text: generation, index, objectives, then one column per gene."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["generation", "index", *names, *genes])
    for r in rows:
        writer.writerow([r.generation, r.index, *(r.objectives[n] for n in names), *r.genome])
    return buf.getvalue()
