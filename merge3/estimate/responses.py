"""Response matrices: models × items, values 1/0, a score in [0, 1], or missing (NaN).

On disk a matrix is CSV (first column ``model``, header = item ids) or parquet (same layout).
An item id ``TASK/ITEM`` carries its task; other ids take task (and optional subject) from a
sidecar items file (CSV/JSON/JSONL with columns ``item``, ``task`` and optionally ``subject``).

Uninformative columns (every model right, or every model wrong) are *kept*: dropping them would
shrink the denominator of a task's accuracy and bias every estimate of it. IRT fits keep them
finite through the prior on difficulty; :meth:`ResponseMatrix.uninformative` lists them so that
callers can warn.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from merge3.errors import DataError
from merge3.estimate.tasked import ItemsByTask


@dataclass(frozen=True)
class ResponseMatrix(ItemsByTask):
    """``values[m, i]`` is model ``models[m]``'s score on item ``items[i]`` (NaN = missing)."""

    models: tuple[str, ...]
    items: tuple[str, ...]
    tasks: tuple[str, ...]
    values: np.ndarray
    subjects: tuple[str | None, ...] | None = None
    source: str = "responses"

    def __post_init__(self) -> None:
        if self.values.shape != (len(self.models), len(self.items)):
            raise DataError(
                f"{self.source}: values are {self.values.shape} but there are "
                f"{len(self.models)} models and {len(self.items)} items"
            )
        if len(self.tasks) != len(self.items):
            raise DataError(f"{self.source}: {len(self.tasks)} tasks for {len(self.items)} items")
        for name, ids in (("item", self.items), ("model", self.models)):
            if len(set(ids)) != len(ids):
                dup = next(x for x in ids if ids.count(x) > 1)
                raise DataError(f"{self.source}: duplicate {name} id {dup!r}")

    # --- views ------------------------------------------------------------------------------
    def columns(self, items: Sequence[str], what: str = "anchor") -> np.ndarray:
        """The (n_models, len(items)) block of these item ids; a clear error if one is absent."""
        index = {x: i for i, x in enumerate(self.items)}
        missing = [x for x in items if x not in index]
        if missing:
            raise DataError(
                f"{self.source}: {what} item {missing[0]!r} is not a column "
                f"({len(missing)} of {len(items)} missing)"
            )
        return self.values[:, [index[x] for x in items]]

    def rows(self, models: Sequence[str]) -> ResponseMatrix:
        index = {m: i for i, m in enumerate(self.models)}
        missing = [m for m in models if m not in index]
        if missing:
            raise DataError(f"{self.source}: no model {missing[0]!r}")
        idx = [index[m] for m in models]
        return ResponseMatrix(
            tuple(models), self.items, self.tasks, self.values[idx], self.subjects, self.source
        )

    def is_binary(self) -> bool:
        v = self.values[~np.isnan(self.values)]
        return bool(np.all((v == 0) | (v == 1)))

    def uninformative(self) -> list[str]:
        """Items on which every observed model scored the same (all right or all wrong)."""
        v = self.values
        with np.errstate(invalid="ignore"):
            lo, hi = np.nanmin(v, axis=0), np.nanmax(v, axis=0)
        return [x for x, a, b in zip(self.items, lo, hi, strict=True) if a == b]

    def true_accuracy(self) -> dict[str, np.ndarray]:
        """Per task, each model's mean score over that task's observed items."""
        tasks = np.asarray(self.tasks)
        return {t: np.nanmean(self.values[:, tasks == t], axis=1) for t in self.task_names}

    def validate(self, binary: bool = False) -> ResponseMatrix:
        """Raise on values outside [0, 1], NaN-only rows, or (if ``binary``) fractional scores."""
        v = self.values
        finite = ~np.isnan(v)
        if np.any((v[finite] < 0) | (v[finite] > 1)):
            m, i = np.argwhere(finite & ((v < 0) | (v > 1)))[0]
            raise DataError(
                f"{self.source}: value {v[m, i]} of model {self.models[m]!r} on item "
                f"{self.items[i]!r} is outside [0, 1]"
            )
        empty = np.flatnonzero(~finite.any(axis=1))
        if empty.size:
            raise DataError(f"{self.source}: model {self.models[empty[0]]!r} has no responses")
        if binary and not self.is_binary():
            m, i = np.argwhere(finite & (v != 0) & (v != 1))[0]
            raise DataError(
                f"{self.source}: value {v[m, i]} of model {self.models[m]!r} on item "
                f"{self.items[i]!r} is not 0/1 but the model is binary (use --soft for scores)"
            )
        return self

    # --- IO ---------------------------------------------------------------------------------
    def to_frame(self) -> pd.DataFrame:
        df = pd.DataFrame(self.values, columns=list(self.items))
        df.insert(0, "model", list(self.models))
        return df

    def save(self, path: str | Path) -> None:
        """CSV or parquet by suffix; item ids keep their ``TASK/`` prefix so the task survives."""
        path = Path(path)
        pairs = zip(self.items, self.tasks, strict=True)
        items = [x if x.startswith(f"{t}/") else f"{t}/{x}" for x, t in pairs]
        df = self.to_frame()
        df.columns = ["model", *items]
        if path.suffix == ".parquet":
            df.to_parquet(path, index=False)
        else:
            df.to_csv(path, index=False)


def _first_non_numeric(df: pd.DataFrame) -> str:
    """``model 'm3', item 't/b': `` for the first cell that is not a number (or ``''``)."""
    for column in df.columns[1:]:
        bad = pd.to_numeric(df[column], errors="coerce").isna() & df[column].notna()
        if bad.any():
            return f"model {str(df.iloc[int(np.argmax(bad.to_numpy())), 0])!r}, item {column!r}: "
    return ""


def read_items_file(path: str | Path) -> dict[str, tuple[str, str | None]]:
    """Sidecar items file: item id → (task, subject or None). CSV, JSON list or JSONL."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: items file not found")
    try:
        if path.suffix == ".csv":
            rows = pd.read_csv(path, dtype=str).to_dict("records")
        elif path.suffix == ".jsonl":
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        else:
            rows = json.loads(path.read_text())
    except (ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: cannot parse items file ({exc})") from None
    out = {}
    for n, row in enumerate(rows):
        if not isinstance(row, dict) or "item" not in row or "task" not in row:
            raise DataError(f"{path}: row {n + 1} needs 'item' and 'task'")
        subject = row.get("subject")
        subject = None if subject is None or pd.isna(subject) else str(subject)
        out[str(row["item"])] = (str(row["task"]), subject)
    return out


def read_responses(path: str | Path, items_file: str | Path | None = None) -> ResponseMatrix:
    """Read a CSV or parquet response matrix; tasks from ``TASK/ITEM`` ids or ``items_file``."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: response file not found")
    try:
        df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except Exception as exc:  # pandas/pyarrow raise many types for a malformed file
        raise DataError(f"{path}: cannot read response matrix ({exc})") from None
    if path.suffix != ".parquet":
        with path.open(newline="") as f:
            header = next(csv.reader(f), [])
        dup = next((x for x in header if header.count(x) > 1), None)
        if dup is not None:
            raise DataError(f"{path}: duplicate item id {dup!r} in the header")
    if df.columns[0] != "model":
        raise DataError(f"{path}: the first column must be 'model', not {df.columns[0]!r}")
    if df.shape[1] < 2:
        raise DataError(f"{path}: no item columns")
    items = tuple(str(c) for c in df.columns[1:])
    sidecar = read_items_file(items_file) if items_file is not None else {}
    tasks, subjects = [], []
    for item in items:
        if item in sidecar:
            task, subject = sidecar[item]
        elif "/" in item:
            task, subject = item.split("/", 1)[0], None
        else:
            where = f"the items file {items_file}" if items_file else "no items file was given"
            raise DataError(f"{path}: item {item!r} has no TASK/ prefix and {where} lacks it")
        tasks.append(task)
        subjects.append(subject)
    try:
        values = df.iloc[:, 1:].apply(pd.to_numeric, errors="raise").to_numpy(dtype=float)
    except (ValueError, TypeError) as exc:
        raise DataError(f"{path}: non-numeric response ({_first_non_numeric(df)}{exc})") from None
    return ResponseMatrix(
        tuple(df["model"].astype(str)),
        items,
        tuple(tasks),
        values,
        tuple(subjects) if any(s is not None for s in subjects) else None,
        str(path),
    ).validate()
