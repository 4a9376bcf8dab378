"""The run's tasks as :class:`~merge3.data.tasks.Task` objects with ``search``/``test`` splits.

Local item files and benchmark specs end up in the same shape, items renamed to the task name
the config gives, so the rest of the search never asks where items came from.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

from merge3.config import RunConfig, TaskConfig
from merge3.data.items import Item
from merge3.data.tasks import Generation, Task
from merge3.errors import DataError


def load_tasks(cfg: RunConfig) -> dict[str, Task]:
    """Every configured task; item ids must be unique across tasks (IRT keys items by id)."""
    tasks = {t.name: _load(t, cfg) for t in cfg.benchmark.tasks}
    owner: dict[str, str] = {}
    for name, task in tasks.items():
        for item in task.items("search") + task.items("test"):
            if owner.setdefault(item.id, name) != name:
                raise DataError(
                    f"item id {item.id!r} appears in tasks {owner[item.id]!r} and {name!r}; "
                    "give the items distinct ids"
                )
    return tasks


def _load(t: TaskConfig, cfg: RunConfig) -> Task:
    if t.search is not None:
        search, excluded = _file(t.search, t)
        test, more = _file(t.test, t) if t.test else ([], [])
        generation = Generation() if t.kind == "generate" else None
        task = Task(
            t.name,
            t.kind,
            {"search": search, "test": test},
            cfg.benchmark.target_delimiter,
            cfg.evaluation.normalize,
            generation,
            excluded + more,
        )
    else:
        task = _from_spec(t, cfg)
    if task.excluded:
        warnings.warn(
            f"task {t.name!r}: {len(task.excluded)} bad items excluded "
            f"(first: {task.excluded[0].reason})",
            stacklevel=2,
        )
    if not task.items("search"):
        raise DataError(f"task {t.name!r}: no items in the search split")
    return task


def _file(path: str, t: TaskConfig) -> tuple[list[Item], list]:
    from merge3.data.files import load_items

    if not Path(path).is_file():
        raise DataError(f"{path}: item file not found (task {t.name!r})")
    loaded = load_items(path, t.name, t.fields, t.kind)
    return loaded.items("all"), loaded.excluded


def _from_spec(t: TaskConfig, cfg: RunConfig) -> Task:
    from merge3.data.spec import load_benchmark

    bench = load_benchmark(t.spec, cfg.benchmark.data_dir, t.num_fewshot or None)
    if len(bench.tasks) == 1:
        source = next(iter(bench.tasks.values()))
    elif t.name in bench.tasks:
        source = bench.tasks[t.name]
    else:
        raise DataError(
            f"benchmark {t.spec!r} has tasks {', '.join(bench.tasks)}; name the task like one"
        )
    splits = {"search": source.items(t.search_split)}
    splits["test"] = source.items(t.test_split) if t.test_split else []
    if t.subjects is not None:
        wanted = set(t.subjects)
        splits = {
            s: [i for i in items if i.metadata.get("subject") in wanted]
            for s, items in splits.items()
        }
        if not splits["search"]:
            raise DataError(f"task {t.name!r}: no {t.spec!r} items of subjects {t.subjects}")
    renamed = {s: [replace(i, task=t.name) for i in items] for s, items in splits.items()}
    return replace(source, name=t.name, splits=renamed)
