"""One item schema for every benchmark, and the local-file loader the search uses.

An item is a question with an answer: for multiple choice a list of choices and the index of the
right one. A task's items come from one file per split; a field mapping adapts other layouts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from merge3.errors import DataError


@dataclass(frozen=True)
class Item:
    """One benchmark item. ``answer`` is the index of the right choice for multiple choice."""

    id: str
    task: str
    question: str
    choices: tuple[str, ...] = ()
    answer: int | str = 0
    context: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    # Per-choice prompts (Winogrande-style "partial" scoring: the choice is in the context and
    # the continuation is shared). Empty: every choice continues ``context + question``.
    contexts: tuple[str, ...] = ()

    @property
    def prompt(self) -> str:
        """What the model reads: the shared few-shot context, then the question."""
        return self.context + self.question


@dataclass(frozen=True)
class Excluded:
    """An item left out of evaluation, and why (reported, never fatal to a search)."""

    id: str
    task: str
    reason: str


DEFAULT_FIELDS = {"id": "id", "question": "question", "choices": "choices", "answer": "answer"}


def _answer_index(raw: Any, choices: Sequence[str], where: str) -> int:
    """Accept an index, a letter (A, B, ...) or the text of the right choice."""
    if isinstance(raw, bool):
        raise DataError(f"{where}: answer {raw!r} is not an index, letter or choice")
    if isinstance(raw, int):
        index = raw
    elif isinstance(raw, str) and raw in choices:
        index = list(choices).index(raw)
    elif isinstance(raw, str) and len(raw) == 1 and raw.isalpha():
        index = ord(raw.upper()) - ord("A")
    elif isinstance(raw, str) and raw.strip().isdigit():
        index = int(raw)
    else:
        raise DataError(f"{where}: answer {raw!r} is not an index, letter or choice")
    if not 0 <= index < len(choices):
        raise DataError(f"{where}: answer {raw!r} is outside the {len(choices)} choices")
    return index


def load_jsonl_items(
    path: str | Path, task: str, fields: Mapping[str, str] | None = None
) -> list[Item]:
    """Read multiple-choice items from a jsonl file; ``fields`` maps schema names to keys."""
    path = Path(path)
    fields = {**DEFAULT_FIELDS, **(fields or {})}
    if not path.is_file():
        raise DataError(f"{path}: item file not found (task {task!r})")
    items: list[Item] = []
    seen: set[str] = set()
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{where}: not valid JSON ({exc.msg})") from None
            for key in ("question", "choices", "answer"):
                if fields[key] not in row:
                    raise DataError(f"{where}: missing field {fields[key]!r}")
            choices = row[fields["choices"]]
            if not isinstance(choices, list) or len(choices) < 2:
                raise DataError(f"{where}: {fields['choices']!r} must be a list of ≥ 2 choices")
            choices = tuple(str(c) for c in choices)
            item_id = str(row.get(fields["id"], f"{lineno - 1}"))
            if item_id in seen:
                raise DataError(f"{where}: duplicate item id {item_id!r}")
            seen.add(item_id)
            items.append(
                Item(
                    id=item_id,
                    task=task,
                    question=str(row[fields["question"]]),
                    choices=choices,
                    answer=_answer_index(row[fields["answer"]], choices, where),
                )
            )
    if not items:
        raise DataError(f"{path}: no items")
    return items
