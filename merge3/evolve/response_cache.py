"""Per-item correctness of *fixed* models, kept across runs (``evaluation.response_cache``).

A search evaluates some models whose answers do not depend on the search at all: the endpoints,
the base and the seeded reference merges that IRT is fitted on; a report adds plain baseline
merges. Re-running a search with the same endpoints and items (another seed, another budget,
the demo a second time) would evaluate them again, which on a CPU costs minutes. This cache
keeps their correctness vectors on disk, keyed by everything that can change an answer:

* the model folders (resolved path, ``config.json`` bytes, and each weight file's name, size
  and modification time: a re-trained or re-downloaded endpoint is a new key, as for ``make``),
* what is loaded into the live model (the base, endpoint ``j``, or a merge recipe),
* the dtype and device, and the evaluator's inputs (the task's kind and settings, every item's
  id, prompt, choices and answer).

Entries are written atomically (temporary file, then rename); an unreadable entry is ignored
and evaluated again, never trusted. Nothing from a candidate of the search goes here.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from merge3.config import RunConfig
from merge3.data.items import Item
from merge3.data.tasks import Task
from merge3.models.io import safetensors_files

VERSION = "responses-v1"


def folder_fingerprint(folder: str | Path) -> list[Any]:
    """What identifies a model folder's weights without reading them (≈ 1 ms)."""
    folder = Path(folder).resolve()
    config = folder / "config.json"
    files = [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in safetensors_files(folder)]
    digest = hashlib.sha256(config.read_bytes()).hexdigest() if config.is_file() else None
    return [str(folder), digest, files]


def items_fingerprint(task: Task, items: Sequence[Item]) -> str:
    """A digest of what an evaluator of ``task`` would score on ``items``."""
    h = hashlib.sha256()
    settings = [task.name, task.kind, task.target_delimiter, task.normalize, task.generation]
    h.update(json.dumps(settings, default=str).encode())
    for item in items:
        row = [item.id, item.prompt, item.choices, item.answer]
        h.update(json.dumps(row, default=str).encode())
    return h.hexdigest()


class ResponseCache:
    """A folder of ``<key>.npz`` files, each one model's correctness on one list of items."""

    def __init__(self, folder: str | Path, cfg: RunConfig) -> None:
        self.folder = Path(folder)
        models = cfg.models
        self._models = [
            folder_fingerprint(models.base),
            *(folder_fingerprint(p) for p in models.endpoints.values()),
        ]
        self._setting = [models.dtype, cfg.evaluation.device]

    def key(self, loaded: Any, parts: Sequence[tuple[Task, Sequence[Item]]]) -> str:
        """``loaded``: ``None`` for the base, an endpoint's index, or a merge recipe;
        ``parts``: the (task, items) scored, in the order of the stored vector."""
        items = [items_fingerprint(task, items) for task, items in parts]
        blob = [VERSION, self._models, self._setting, loaded, items]
        return hashlib.sha256(json.dumps(blob, sort_keys=True, default=float).encode()).hexdigest()

    def get(self, key: str) -> tuple[np.ndarray, float] | None:
        path = self.folder / f"{key}.npz"
        try:
            with np.load(path) as data:
                return data["correct"].astype(float), float(data["seconds"])
        except (OSError, KeyError, ValueError):  # absent or damaged: evaluate again
            return None

    def put(self, key: str, correct: np.ndarray, seconds: float) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key[:16]}-", suffix=".npz", dir=self.folder)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, correct=np.asarray(correct, float), seconds=seconds)
            os.replace(tmp, self.folder / f"{key}.npz")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def open_cache(cfg: RunConfig) -> ResponseCache | None:
    """The run's response cache, or None when ``evaluation.response_cache`` is not set."""
    folder = cfg.evaluation.response_cache
    return ResponseCache(folder, cfg) if folder else None
