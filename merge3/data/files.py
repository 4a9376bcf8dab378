"""Local item files (jsonl, csv, parquet) with a field mapping.

Rows become items through one function, :func:`items_from_rows`, shared with the Hugging Face
and adapter loaders. A malformed file raises :class:`DataError`; a malformed row is reported in
``excluded`` and skipped (``strict=False``) so one bad item never stops a search.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from merge3.data.items import Excluded, Item, _answer_index
from merge3.data.tasks import Kind, Task
from merge3.errors import DataError

FIELDS = ("id", "question", "choices", "answer", "context")


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a .jsonl/.json, .csv/.tsv or .parquet file as dicts."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: item file not found")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        rows = []
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise DataError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
        return rows
    import pandas as pd

    try:
        if suffix in (".csv", ".tsv"):
            frame = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str)
            frame = frame.fillna("")
        elif suffix == ".parquet":
            frame = pd.read_parquet(path)
        else:
            raise DataError(f"{path}: unknown item file type (use .jsonl, .csv or .parquet)")
    except (ValueError, OSError) as exc:
        raise DataError(f"{path}: unreadable ({exc.__class__.__name__}: {exc})") from None
    return [_plain(r) for r in frame.to_dict(orient="records")]


def _plain(value: Any) -> Any:
    """numpy arrays/scalars (parquet) → lists and Python scalars."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if hasattr(value, "tolist"):
        return _plain(value.tolist())
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _get(row: Mapping[str, Any], key: str) -> Any:
    """``a.b`` reaches into nested dicts (parquet structs, HF features)."""
    value: Any = row
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise KeyError(key)
        value = value[part]
    return value


def items_from_rows(
    rows: Iterable[Mapping[str, Any]],
    task: str,
    fields: Mapping[str, Any] | None = None,
    kind: Kind = "multiple_choice",
    where: str = "",
    strict: bool = False,
) -> tuple[list[Item], list[Excluded]]:
    """Map rows to items. ``fields[name]`` is a key (``a.b`` for nested); ``choices`` may also
    be a list of keys (one column per choice); ``metadata`` a list of keys to keep."""
    fields = dict(fields or {})
    unknown = set(fields) - {*FIELDS, "metadata"}
    if unknown:
        raise DataError(f"{where}: unknown field mapping key(s) {sorted(unknown)}")
    keys = {name: fields.get(name, name) for name in FIELDS}
    meta_keys = list(fields.get("metadata", []))
    items: list[Item] = []
    excluded: list[Excluded] = []
    seen: set[str] = set()
    for n, row in enumerate(rows):
        at = f"{where}:{n + 1}" if where else f"row {n + 1}"
        try:
            item_id = str(_get(row, keys["id"])) if _has(row, keys["id"]) else str(n)
        except KeyError:
            item_id = str(n)
        try:
            if item_id in seen:
                raise DataError(f"{at}: duplicate item id {item_id!r}")
            items.append(_item(row, task, item_id, keys, meta_keys, kind, at))
            seen.add(item_id)
        except DataError as exc:
            if strict:
                raise
            excluded.append(Excluded(item_id, task, str(exc)))
    return items, excluded


def _has(row: Mapping[str, Any], key: str) -> bool:
    try:
        _get(row, key)
    except KeyError:
        return False
    return True


def _item(row, task, item_id, keys, meta_keys, kind, at) -> Item:
    def need(name: str) -> Any:
        try:
            value = _get(row, keys[name])
        except KeyError:
            raise DataError(f"{at}: missing field {keys[name]!r}") from None
        if value is None or (isinstance(value, str) and name == "answer" and not value.strip()):
            raise DataError(f"{at}: field {keys[name]!r} is empty")
        return value

    question = str(need("question"))
    context = str(_get(row, keys["context"])) if _has(row, keys["context"]) else ""
    metadata = {k: _get(row, k) for k in meta_keys if _has(row, k)}
    if kind == "generate":
        return Item(item_id, task, question, (), str(need("answer")).strip(), context, metadata)
    if isinstance(keys["choices"], list | tuple):
        choices = []
        for key in keys["choices"]:
            try:
                choices.append(_get(row, key))
            except KeyError:
                raise DataError(f"{at}: missing field {key!r}") from None
    else:
        choices = need("choices")
    if not isinstance(choices, list | tuple) or len(choices) < 2:
        raise DataError(f"{at}: {keys['choices']!r} must be a list of ≥ 2 choices")
    choices = tuple(str(c) for c in choices)
    answer = _answer_index(need("answer"), choices, at)
    return Item(item_id, task, question, choices, answer, context, metadata)


def load_items(
    path: str | Path,
    task: str | None = None,
    fields: Mapping[str, Any] | None = None,
    kind: Kind = "multiple_choice",
    target_delimiter: str = " ",
    strict: bool = False,
) -> Task:
    """A task from one local file; bad rows are excluded and reported (``task.excluded``)."""
    path = Path(path)
    name = task or path.stem
    items, excluded = items_from_rows(read_rows(path), name, fields, kind, str(path), strict)
    if not items:
        reason = f" (first problem: {excluded[0].reason})" if excluded else ""
        raise DataError(f"{path}: no usable items{reason}")
    from merge3.data.tasks import Generation

    generation = Generation() if kind == "generate" else None
    return Task(name, kind, {"all": items}, target_delimiter, False, generation, excluded)
