"""EXTRACT: choose a small anchor subset of each task's items.

An :class:`AnchorSet` holds, per task, the anchor item ids and their weights (how many of the
task's items each anchor stands for, normalised to sum to one). Estimators read both.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from merge3.errors import DataError


@dataclass(frozen=True)
class TaskAnchors:
    """The anchors of one task: item ids and weights (summing to one)."""

    items: tuple[str, ...]
    weights: np.ndarray

    def __post_init__(self) -> None:
        if len(self.items) != len(self.weights):
            raise DataError(f"{len(self.items)} anchor items but {len(self.weights)} weights")


@dataclass(frozen=True)
class AnchorSet:
    """Anchors of every task, plus how they were chosen (for provenance)."""

    tasks: dict[str, TaskAnchors]
    method: str = "random"
    seed: int | None = None
    info: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "method": self.method,
            "seed": self.seed,
            "tasks": {
                task: {"items": list(a.items), "weights": [float(w) for w in a.weights]}
                for task, a in self.tasks.items()
            },
        }

    @classmethod
    def from_json(cls, data: Mapping, source: str = "anchors") -> AnchorSet:
        try:
            tasks = {
                task: TaskAnchors(tuple(map(str, t["items"])), np.asarray(t["weights"], float))
                for task, t in data["tasks"].items()
            }
        except (KeyError, TypeError, AttributeError) as exc:
            raise DataError(
                f"{source}: not an anchor file ({exc!r} missing or malformed)"
            ) from None
        except DataError as exc:  # name the file and the task
            pairs = data["tasks"].items()
            bad = next((t for t, v in pairs if len(v["items"]) != len(v["weights"])), None)
            raise DataError(f"{source}: " + (f"task {bad!r}: " if bad else "") + str(exc)) from None
        return cls(tasks, data.get("method", "unknown"), data.get("seed"))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> AnchorSet:
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise DataError(f"{path}: anchor file not found") from None
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
        return cls.from_json(data, str(path))


def random_anchors(
    items_by_task: Mapping[str, Sequence[str]], n_per_task: int, seed: int
) -> AnchorSet:
    """Uniformly random anchors, equal weights; the RNG is seeded per run, tasks in given order."""
    rng = np.random.default_rng(seed)
    tasks = {}
    for task, ids in items_by_task.items():
        _check_n(task, n_per_task, len(ids))
        chosen = sorted(rng.choice(len(ids), size=n_per_task, replace=False).tolist())
        tasks[task] = TaskAnchors(
            tuple(ids[i] for i in chosen), np.full(n_per_task, 1 / n_per_task)
        )
    return AnchorSet(tasks, "random", seed)


def _check_n(task: str, n: int, available: int) -> None:
    if n < 1:
        raise DataError(f"the number of anchors per task must be ≥ 1, not {n}")
    if n > available:
        raise DataError(f"task {task!r}: {n} anchors asked for but it has only {available} items")


def stratified_anchors(
    items_by_task: Mapping[str, Sequence[str]],
    n_per_task: int,
    seed: int,
    subjects: Mapping[str, str | None] | None = None,
) -> AnchorSet:
    """Random anchors spread over each task's subjects in proportion to their sizes.

    Counts per subject follow the largest-remainder rule (every subject big enough gets at
    least its floor share); an anchor's weight is its subject's share of the task divided by
    the anchors drawn from that subject, so the weighted mean is the stratified estimator.
    Without subjects, a task is one stratum (the same as ``random``).
    """
    rng = np.random.default_rng(seed)
    subjects = subjects or {}
    tasks = {}
    for task, ids in items_by_task.items():
        ids = list(ids)
        _check_n(task, n_per_task, len(ids))
        strata: dict[str | None, list[int]] = {}
        for i, x in enumerate(ids):
            strata.setdefault(subjects.get(x), []).append(i)
        names = list(strata)
        sizes = np.array([len(strata[s]) for s in names], float)
        quota = n_per_task * sizes / sizes.sum()
        counts = np.minimum(np.floor(quota).astype(int), sizes.astype(int))
        for k in np.argsort(-(quota - counts), kind="stable"):
            if counts.sum() >= n_per_task:
                break
            if counts[k] < sizes[k]:
                counts[k] += 1
        chosen, weights = [], []
        for s, c, size in zip(names, counts, sizes, strict=True):
            if c == 0:
                continue
            picked = rng.choice(strata[s], size=c, replace=False)
            chosen += picked.tolist()
            weights += [size / sizes.sum() / c] * c
        order = np.argsort(chosen)
        w = np.asarray(weights)[order]
        tasks[task] = TaskAnchors(tuple(ids[chosen[i]] for i in order), w / w.sum())
    return AnchorSet(tasks, "stratified", seed)


def kmeans_anchors(
    features_by_task: Mapping[str, tuple[Sequence[str], np.ndarray]],
    n_per_task: int,
    seed: int,
    method: str,
) -> AnchorSet:
    """k-means (k = n) on item features per task; anchor = the item nearest each centre,
    weight = the share of the task's items in its cluster (tinyBenchmarks' anchor points)."""
    from sklearn.cluster import KMeans

    tasks = {}
    for task, (ids, feats) in features_by_task.items():
        ids = list(ids)
        _check_n(task, n_per_task, len(ids))
        feats = np.asarray(feats, float)
        km = KMeans(n_clusters=n_per_task, n_init=5, random_state=seed).fit(feats)
        dist = ((feats[:, None, :] - km.cluster_centers_[None]) ** 2).sum(-1)
        counts = np.bincount(km.labels_, minlength=n_per_task).astype(float)
        picked: dict[int, float] = {}
        for c in range(n_per_task):
            order = np.argsort(dist[:, c], kind="stable")
            # Two centres can share a nearest item (duplicate features); take the next free one.
            i = next(int(i) for i in order if int(i) not in picked)
            picked[i] = counts[c]
        idx = sorted(picked)
        w = np.array([picked[i] for i in idx])
        tasks[task] = TaskAnchors(tuple(ids[i] for i in idx), w / w.sum())
    return AnchorSet(tasks, method, seed)


def information_anchors(bank, n_per_task: int, seed: int, abilities=None) -> AnchorSet:
    """Per task, the n items that together tell the most about a model's ability (metabench).

    Greedy Bayesian D-optimal design: each step adds the item that most raises the average,
    over a population of abilities, of log det(I + Σ_anchors P(1 − P) α αᵀ), the Fisher
    information of θ (N(0, I) prior) from the anchors picked so far. The population is the
    reference models' fitted abilities when given, else 512 seeded draws from the prior the
    IRT fit normalises abilities to. Items that discriminate well near where the models are
    win; items everyone gets right (or wrong) are left out. Such anchors are not a
    representative sample, so their weights are equal and ``mean`` over them is biased: use
    them with the IRT estimators (pirt, mpirt, and the g-mixes with a calibrated λ).
    """
    rng = np.random.default_rng(seed)
    theta = (
        rng.standard_normal((512, bank.dims))
        if abilities is None
        else np.atleast_2d(np.asarray(abilities, float))
    )
    eye = np.eye(bank.dims)
    tasks = {}
    for task, ids in bank.items_by_task().items():
        ids = list(ids)
        _check_n(task, n_per_task, len(ids))
        idx = bank.index(ids)
        alpha, beta = bank.alpha[idx], bank.beta[idx]
        p = 1 / (1 + np.exp(-(theta @ alpha.T - beta)))
        pq = p * (1 - p)  # (M, I): the information weight of each item for each model
        info = np.broadcast_to(eye, (len(theta), *eye.shape)).copy()
        free = np.ones(len(ids), bool)
        chosen = []
        for _ in range(n_per_task):
            # Matrix determinant lemma: log det(F + w aaᵀ) − log det F = log(1 + w aᵀF⁻¹a).
            quad = np.einsum("id,mde,ie->mi", alpha, np.linalg.inv(info), alpha)
            gain = np.log1p(pq * quad).mean(axis=0)
            gain[~free] = -np.inf
            i = int(np.argmax(gain))
            chosen.append(i)
            free[i] = False
            info += pq[:, i, None, None] * np.outer(alpha[i], alpha[i])
        chosen.sort()
        tasks[task] = TaskAnchors(
            tuple(ids[i] for i in chosen), np.full(n_per_task, 1 / n_per_task)
        )
    return AnchorSet(tasks, "irt-info", seed)


METHODS = ("random", "stratified", "irt-kmeans", "correctness-kmeans", "irt-info")


def extract(method: str, n_per_task: int, seed: int = 0, bank=None, responses=None) -> AnchorSet:
    """Anchors by ``method`` from an IRT item bank (``bank``) or a response matrix.

    ``irt-kmeans`` and ``irt-info`` need ``bank`` (``irt-info`` uses the abilities of
    ``responses``' models when given); ``correctness-kmeans`` needs ``responses``; ``random``
    and ``stratified`` take item ids (and subjects) from whichever is given.
    """
    if method not in METHODS:
        raise DataError(f"unknown extraction method {method!r}; choose from {', '.join(METHODS)}")
    source = bank if bank is not None else responses
    if source is None:
        raise DataError("extraction needs an IRT item file or a response matrix")
    by_task = source.items_by_task()
    if method == "random":
        return random_anchors(by_task, n_per_task, seed)
    if method == "stratified":
        subjects = dict(zip(source.items, source.subjects or (), strict=False))
        return stratified_anchors(by_task, n_per_task, seed, subjects)
    if method == "irt-info":
        if bank is None:
            raise DataError("irt-info needs an IRT item file (--irt)")
        abilities = None
        if responses is not None:
            from merge3.estimate.estimators import endpoint_abilities

            abilities = endpoint_abilities(bank, responses)
        return information_anchors(bank, n_per_task, seed, abilities)
    if method == "irt-kmeans":
        if bank is None:
            raise DataError("irt-kmeans needs an IRT item file (--irt)")
        emb = bank.embedding()
        feats = {t: (ids, emb[bank.index(ids)]) for t, ids in by_task.items()}
    else:
        if responses is None:
            raise DataError("correctness-kmeans needs a response matrix (--responses)")
        # Columns with missing entries count a missing answer as the item's mean score.
        v = responses.values
        v = np.where(np.isnan(v), np.nanmean(v, axis=0, keepdims=True), v)
        col = {x: i for i, x in enumerate(responses.items)}
        feats = {t: (ids, v[:, [col[x] for x in ids]].T) for t, ids in by_task.items()}
    return kmeans_anchors(feats, n_per_task, seed, method)
