"""Items from a Hugging Face ``datasets`` dataset (name, config, split), for users online.

The same field mapping as local files applies (:func:`merge3.data.files.items_from_rows`).
``load_dataset("json", data_files=...)`` also goes through here, which is how it is tested
offline.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from merge3.data.files import _plain, items_from_rows
from merge3.data.tasks import Generation, Kind, Task
from merge3.errors import DataError


def load_hf_items(
    name: str,
    config: str | None = None,
    split: str = "test",
    task: str | None = None,
    fields: Mapping[str, Any] | None = None,
    kind: Kind = "multiple_choice",
    target_delimiter: str = " ",
    **load_kwargs: Any,
) -> Task:
    """A task from ``datasets.load_dataset(name, config, split=split)``; bad rows excluded."""
    import datasets

    try:
        dataset = datasets.load_dataset(name, config, split=split, **load_kwargs)
    except Exception as exc:  # datasets raises many types (hub, file, config errors)
        raise DataError(f"dataset {name!r} ({config}, {split}) cannot be loaded ({exc})") from None
    label = task or name.rsplit("/", 1)[-1]
    rows = (_plain(dict(r)) for r in dataset)
    items, excluded = items_from_rows(rows, label, fields, kind, f"{name}[{split}]")
    if not items:
        raise DataError(f"dataset {name!r} ({split}): no usable items")
    generation = Generation() if kind == "generate" else None
    return Task(label, kind, {split: items}, target_delimiter, False, generation, excluded)
