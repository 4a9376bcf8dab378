"""Pareto fronts and tables of a run's candidates (for the CLI and for notebooks)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

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


def hypervolume(objectives: np.ndarray) -> float:
    """Hypervolume of accuracies (higher is better) against the all-zero reference point.

    Accuracies live in [0, 1], so 0 is a reference every candidate dominates; with one
    objective the hypervolume is simply the best accuracy.
    """
    from pymoo.indicators.hv import HV

    objectives = np.asarray(objectives, dtype=float)
    if len(objectives) == 0:
        return 0.0
    if objectives.shape[1] == 1:
        return float(objectives.max())
    return float(HV(ref_point=np.zeros(objectives.shape[1]))(-objectives))


def front_of(rows: Iterable[CandidateRow], names: Sequence[str]) -> list[CandidateRow]:
    """The non-dominated candidates, one per distinct objective vector, best first.

    Accuracies on a few anchors are coarse, so many genomes tie; the front keeps the first
    candidate (by generation, then index) that reached each trade-off. Failed candidates carry
    the worst fitness only to steer the optimiser away; they are never on the front.
    """
    unique: dict[tuple, CandidateRow] = {}
    for row in sorted(rows, key=lambda r: (r.generation, r.index)):
        if row.failed:
            continue
        unique.setdefault(tuple(row.objectives[n] for n in names), row)
    candidates = list(unique.values())
    if not candidates:
        return []
    values = np.array([[r.objectives[n] for n in names] for r in candidates])
    chosen = [candidates[i] for i in pareto_indices(values)]
    return sorted(chosen, key=lambda r: ([-r.objectives[n] for n in names], r.generation, r.index))


def ranked(rows: Iterable[CandidateRow], names: Sequence[str]) -> list[CandidateRow]:
    """Distinct recipes, best first by the mean of the objectives (ties: earliest first).

    This is the order of ``--rank K`` and of the final top-k evaluation; it uses estimates
    only, never test accuracy, so choosing a merge never peeks at the held-out split.
    """
    unique: dict[str, CandidateRow] = {}
    for row in sorted(rows, key=lambda r: (r.generation, r.index)):
        if not row.failed:
            unique.setdefault(repr(row.recipe), row)
    return sorted(
        unique.values(),
        key=lambda r: (-float(np.mean([r.objectives[n] for n in names])), r.generation, r.index),
    )


def front_json(
    rows: Sequence[CandidateRow],
    names: Sequence[str],
    test_accuracy: Mapping[tuple[int, int], Mapping[str, float]] | None = None,
    failed: Sequence[CandidateRow] = (),
) -> dict:
    """The front in the documented JSON shape; objectives are accuracies.

    Candidates re-evaluated on the held-out split after the search also carry
    ``test_accuracy`` (true accuracy per task) beside their estimated objectives. When some
    candidates failed, ``failed`` lists them with their error (the key is absent otherwise).
    """
    out = []
    for r in rows:
        entry = {
            "genome": r.genome,
            "recipe": r.recipe,
            "objectives": {n: r.objectives[n] for n in names},
        }
        if test_accuracy and (r.generation, r.index) in test_accuracy:
            entry["test_accuracy"] = dict(test_accuracy[(r.generation, r.index)])
        out.append(entry)
    shown: dict = {"objectives": list(names), "front": out}
    if failed:
        shown["failed"] = [
            {"generation": r.generation, "index": r.index, "genome": r.genome, "error": r.error}
            for r in failed
        ]
    return shown


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


def plot_front(
    rows: Sequence[CandidateRow], front: Sequence[CandidateRow], names: Sequence[str], ax=None
):
    """One objective: accuracy per generation. Two or more: the first two objectives' plane."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 4))
    on_front = {(r.generation, r.index) for r in front}
    if len(names) == 1:
        xs = [r.generation for r in rows]
        ys = [r.objectives[names[0]] for r in rows]
        ax.scatter(xs, ys, s=14, alpha=0.5, label="candidates")
        best = [
            (r.generation, r.objectives[names[0]])
            for r in rows
            if (r.generation, r.index) in on_front
        ]
        ax.scatter(*zip(*best, strict=True), s=40, color="C3", label="best")
        ax.set_xlabel("generation")
        ax.set_ylabel(f"estimated accuracy ({names[0]})")
    else:
        x, y = names[0], names[1]
        ax.scatter(
            [r.objectives[x] for r in rows],
            [r.objectives[y] for r in rows],
            s=14,
            alpha=0.4,
            label="candidates",
        )
        pts = sorted((r.objectives[x], r.objectives[y]) for r in front)
        ax.plot(*zip(*pts, strict=True), "o-", color="C3", label="Pareto front")
        ax.set_xlabel(f"estimated accuracy ({x})")
        ax.set_ylabel(f"estimated accuracy ({y})")
    ax.legend(loc="lower left")
    return ax


def plot_progress(evaluations, hypervolume, names: Sequence[str], ax=None):
    """Best-so-far of every objective and the hypervolume against the generation."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 4))
    by_gen = evaluations.groupby("generation")[list(names)].max().cummax()
    for name in names:
        ax.plot(by_gen.index, by_gen[name], marker="o", label=f"best {name}")
    if len(names) > 1:
        ax.plot(hypervolume.index, hypervolume.values, "k--", marker="s", label="hypervolume")
    ax.set_xlabel("generation")
    ax.set_ylabel("estimated accuracy")
    ax.legend(loc="lower right")
    return ax
