"""What the SentEval scripts share: the splits, a resident merge bench, tables and provenance.

:class:`Bench` holds the base and the six task vectors resident (``merge3.models.Endpoints``,
the same in-place merge the search engine uses), one linear head per task, and an evaluation
copy of the encoder (bf16 by default, see ``population.py`` for the fp32 agreement check). A
merge writes θ₀ + Δ(recipe) into the fp32 live model and copies it into the evaluation copy;
evaluating runs :class:`~merge3.evaluate.classify.ClassificationEvaluator` (one pass of the
shared encoder, each task through its own head).
"""

from __future__ import annotations

import copy
import os
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from merge3.data.items import Item
from merge3.data.senteval import LABELS, senteval
from merge3.estimate.responses import ResponseMatrix
from merge3.evaluate.classify import ClassificationEvaluator
from merge3.merging import get_operator
from merge3.merging.registry import MergeOperator
from merge3.models import Endpoints
from merge3.tiny import cache_root

TASKS = tuple(LABELS)
HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent / "RESULTS.md"
MAX_LENGTH = 64  # p99 of the test sentences is 57 MiniLM tokens; the longest 87


def study_cache() -> Path:
    return cache_root() / "senteval"


def load_splits(data: Path | None = None) -> dict[str, dict[str, list[Item]]]:
    """task → split (train/search/test) → items, from merge3's fixed SentEval split."""
    from merge3.assets import data_dir

    root = data_dir(data)
    out = {}
    for t in TASKS:
        task = next(iter(senteval(root, t).tasks.values()))
        out[t] = {s: task.items(s) for s in ("train", "search", "test")}
    return out


class Bench:
    """Resident base + task vectors + per-task heads: recipe in, per-item correctness out."""

    def __init__(
        self,
        base_dir: Path,
        endpoint_dirs: Mapping[str, Path],
        eval_dtype: torch.dtype = torch.bfloat16,
        batch_size: int = 128,
    ) -> None:
        from finetune import load_head
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(base_dir)
        model = AutoModel.from_pretrained(base_dir, dtype=torch.float32).eval()
        self.tasks = list(endpoint_dirs)
        self.endpoints = Endpoints.from_folders(model, {t: endpoint_dirs[t] for t in self.tasks})
        self.heads = {t: load_head(endpoint_dirs[t], t) for t in self.tasks}
        self.eval_dtype = eval_dtype
        self.batch_size = batch_size
        self.eval_model = model if eval_dtype == torch.float32 else copy.deepcopy(model)
        self.eval_model.to(eval_dtype).eval()
        self._operators: dict[str, MergeOperator] = {}

    def operator(self, name: str) -> MergeOperator:
        if name not in self._operators:
            self._operators[name] = get_operator(name)
        return self._operators[name]

    @torch.no_grad()
    def _sync(self) -> None:
        if self.eval_model is self.endpoints.model:
            return
        live = dict(self.endpoints.model.named_parameters())
        for name, p in self.eval_model.named_parameters():
            p.copy_(live[name])

    def merge(self, operator: str, params: Mapping) -> float:
        """Write the merge into the live model (and the evaluation copy); seconds taken."""
        t0 = time.perf_counter()
        op = self.operator(operator)
        self.endpoints.apply(op, op.resolve(dict(params), self.endpoints.n_models))
        self._sync()
        return time.perf_counter() - t0

    def load_endpoint(self, task: str | None) -> None:
        """Endpoint ``task`` itself (θ₀ + τ_task), or the base when ``task`` is None."""
        if task is None:
            self.endpoints.restore_base()
        else:
            self.endpoints.load_endpoint(self.tasks.index(task))
        self._sync()

    def evaluator(self, items: Mapping[str, Sequence[Item]]) -> ClassificationEvaluator:
        return ClassificationEvaluator(
            items, self.tokenizer, self.heads, batch_size=self.batch_size, max_length=MAX_LENGTH
        )

    def correct(self, evaluator: ClassificationEvaluator) -> dict[str, np.ndarray]:
        return evaluator(self.eval_model)


def accuracy(correct: Mapping[str, np.ndarray]) -> dict[str, float]:
    return {t: float(np.nanmean(c)) for t, c in correct.items()}


def response_matrix(
    rows: Mapping[str, Mapping[str, np.ndarray]], items: Mapping[str, Sequence[Item]]
) -> ResponseMatrix:
    """models × items (all tasks side by side) from per-model, per-task correctness."""
    ids = tuple(i.id for t in items for i in items[t])
    tasks = tuple(t for t in items for _ in items[t])
    values = np.array([np.concatenate([rows[m][t] for t in items]) for m in rows], dtype=float)
    return ResponseMatrix(tuple(rows), ids, tasks, values)


def machine() -> str:
    """Where a table was made (goes under every table)."""
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return (
        f"{os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}; "
        f"run {stamp}"
    )


def command() -> str:
    """The exact command line of this run, with the environment it needs."""
    env = "OMP_NUM_THREADS={} HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1".format(
        os.environ.get("OMP_NUM_THREADS", "2")
    )
    script = os.path.relpath(sys.argv[0], HERE.parent.parent)
    return f"{env} .venv/bin/python {shlex.join([script, *sys.argv[1:]])}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines
