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
        if n_per_task > len(ids):
            raise DataError(
                f"task {task!r}: {n_per_task} anchors asked for but it has only {len(ids)} items"
            )
        chosen = sorted(rng.choice(len(ids), size=n_per_task, replace=False).tolist())
        tasks[task] = TaskAnchors(
            tuple(ids[i] for i in chosen), np.full(n_per_task, 1 / n_per_task)
        )
    return AnchorSet(tasks, "random", seed)
