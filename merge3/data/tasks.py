"""A benchmark is tasks × splits; a task also says how its items are scored.

The evaluators read the scoring settings from here (multiple choice with a target delimiter and
``acc``/``acc_norm``; generation with stop sequences, a token cap and an answer extractor;
classification), so one item list and its task are all an evaluator needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from merge3.data.items import Excluded, Item
from merge3.errors import DataError

Kind = Literal["multiple_choice", "generate", "classify"]


@dataclass(frozen=True)
class Generation:
    """Greedy decoding settings and how the answer is read off the generated text."""

    until: tuple[str, ...] = ("\n\n",)
    max_new_tokens: int = 256
    extract: Literal["gsm8k", "last_number", "none"] = "last_number"


@dataclass
class Task:
    """One task: its items per split and how they are scored."""

    name: str
    kind: Kind
    splits: dict[str, list[Item]]
    target_delimiter: str = " "
    normalize: bool = False  # acc_norm: log-likelihood per byte of the choice
    generation: Generation | None = None
    excluded: list[Excluded] = field(default_factory=list)

    def items(self, split: str = "all") -> list[Item]:
        if split == "all" and "all" not in self.splits:
            return [i for s in self.splits.values() for i in s]
        try:
            return self.splits[split]
        except KeyError:
            known = ", ".join(self.splits)
            raise DataError(f"task {self.name!r} has no split {split!r} (has: {known})") from None

    def with_items(self, items: Sequence[Item], split: str = "all") -> Task:
        """The same task restricted to ``items`` (e.g. a sample or the anchors)."""
        return replace(self, splits={split: list(items)})


@dataclass
class Benchmark:
    """Tasks by name."""

    name: str
    tasks: dict[str, Task]


def seeded_halves(items: Sequence[Item], seed: int = 0) -> tuple[list[Item], list[Item]]:
    """A fixed 50/50 split into (search, test), item order kept inside each half."""
    perm = np.random.default_rng(seed).permutation(len(items))
    first = np.zeros(len(items), bool)
    first[perm[: len(items) // 2]] = True
    return [i for i, f in zip(items, first, strict=True) if f], [
        i for i, f in zip(items, first, strict=True) if not f
    ]


def with_halves(items: list[Item], seed: int = 0) -> dict[str, list[Item]]:
    """Splits of a set that ships one split: ``all`` and its seeded ``search``/``test`` halves."""
    search, test = seeded_halves(items, seed)
    return {"all": items, "search": search, "test": test}


def sample_items(items: Sequence[Item], n: int | None, seed: int = 0) -> list[Item]:
    """A seeded sample of ``n`` items in their original order (all items if n is None)."""
    if n is None or n >= len(items):
        return list(items)
    if n <= 0:
        raise DataError(f"--items must be positive, got {n}")
    keep = np.sort(np.random.default_rng(seed).choice(len(items), n, replace=False))
    return [items[int(i)] for i in keep]
