"""Fitted item parameters with their ids: what ``merge3 irt fit`` writes and estimators read.

Saved as JSON (readable) or safetensors (``alpha``, ``beta``, ``theta`` tensors; ids, tasks and
model names in the header metadata). Both keep the reference models' abilities, so endpoints
that were among the reference models need no refit.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from merge3.errors import DataError
from merge3.estimate.tasked import ItemsByTask


@dataclass
class ItemBank(ItemsByTask):
    """Item parameters α (I × D), β (I,) of a fitted IRT model, keyed by item id."""

    kind: str
    items: tuple[str, ...]
    tasks: tuple[str, ...]
    alpha: np.ndarray
    beta: np.ndarray
    subjects: tuple[str | None, ...] | None = None
    abilities: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    source: str = "item bank"

    def __post_init__(self) -> None:
        self.items, self.tasks = tuple(self.items), tuple(self.tasks)
        self.alpha = np.atleast_2d(np.asarray(self.alpha, float))
        self.beta = np.asarray(self.beta, float)
        if not (len(self.items) == len(self.tasks) == len(self.beta) == len(self.alpha)):
            raise DataError(f"{self.source}: items, tasks, alpha and beta differ in length")
        self._index = {x: i for i, x in enumerate(self.items)}

    def __contains__(self, item: object) -> bool:
        return item in self._index

    @property
    def dims(self) -> int:
        return self.alpha.shape[1]

    def index(self, items: Sequence[str], what: str = "anchor") -> np.ndarray:
        """Row indices of ``items``; a clear error naming the first id this bank lacks."""
        missing = [x for x in items if x not in self._index]
        if missing:
            raise DataError(
                f"{self.source}: {what} item {missing[0]!r} is not in the IRT item bank "
                f"({len(missing)} of {len(items)} missing)"
            )
        return np.fromiter((self._index[x] for x in items), int, len(items))

    def task_index(self, task: str) -> np.ndarray:
        idx = np.flatnonzero(np.asarray(self.tasks) == task)
        if idx.size == 0:
            raise DataError(f"{self.source}: no items of task {task!r}")
        return idx

    def embedding(self) -> np.ndarray:
        """(α, β) per item, the space tinyBenchmarks clusters items in."""
        return np.column_stack([self.alpha, self.beta])

    # --- IO ---------------------------------------------------------------------------------
    def to_json(self) -> dict:
        return {
            "kind": self.kind,
            "dims": self.dims,
            "items": list(self.items),
            "tasks": list(self.tasks),
            "subjects": None if self.subjects is None else list(self.subjects),
            "alpha": self.alpha.tolist(),
            "beta": self.beta.tolist(),
            "abilities": {m: np.asarray(t).tolist() for m, t in self.abilities.items()},
            "info": self.info,
        }

    def save(self, path: str | Path) -> None:
        path = Path(path)
        if path.suffix == ".safetensors":
            from safetensors.numpy import save_file

            names = list(self.abilities)
            theta = np.array([self.abilities[m] for m in names]).reshape(len(names), self.dims)
            meta = {
                "kind": self.kind,
                "items": json.dumps(list(self.items)),
                "tasks": json.dumps(list(self.tasks)),
                "subjects": json.dumps(None if self.subjects is None else list(self.subjects)),
                "models": json.dumps(names),
                "info": json.dumps(self.info),
            }
            tensors = {"alpha": self.alpha, "beta": self.beta, "theta": theta}
            save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path), meta)
        else:
            path.write_text(json.dumps(self.to_json()))

    @classmethod
    def load(cls, path: str | Path) -> ItemBank:
        path = Path(path)
        if not path.exists():
            raise DataError(f"{path}: IRT item file not found")
        try:
            if path.suffix == ".safetensors":
                from safetensors import safe_open

                with safe_open(str(path), "numpy") as f:
                    meta = f.metadata() or {}
                    t = {k: f.get_tensor(k) for k in f.keys()}
                models = json.loads(meta["models"])
                return cls(
                    meta["kind"],
                    json.loads(meta["items"]),
                    json.loads(meta["tasks"]),
                    t["alpha"],
                    t["beta"],
                    _subjects(json.loads(meta.get("subjects", "null"))),
                    dict(zip(models, t["theta"], strict=True)),
                    json.loads(meta.get("info", "{}")),
                    str(path),
                )
            d = json.loads(path.read_text())
            return cls(
                d["kind"],
                d["items"],
                d["tasks"],
                d["alpha"],
                d["beta"],
                _subjects(d.get("subjects")),
                {m: np.asarray(v, float) for m, v in d.get("abilities", {}).items()},
                d.get("info", {}),
                str(path),
            )
        except DataError:
            raise
        except Exception as exc:  # malformed JSON/safetensors: many exception types
            raise DataError(f"{path}: not an IRT item file ({type(exc).__name__}: {exc})") from None


def _subjects(s: list | None) -> tuple | None:
    return None if s is None else tuple(s)
