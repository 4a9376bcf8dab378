"""lm-eval-harness as an evaluation backend, on the resident model object.

lm-eval's ``HFLM`` accepts a loaded model, so a candidate merged in place is scored without a
disk round trip; the task objects are built once and each call runs ``lm_eval.evaluate`` on the
anchor document ids only, reading per-item correctness off the logged samples.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from merge3.data.lm_eval_tasks import load_lm_eval_tasks
from merge3.errors import DataError

# metrics read as per-item correctness, first present wins
_METRICS = ("acc", "exact_match", "acc_norm")


class LmEvalEvaluator:
    """Per-item correctness from lm-eval on one task, restricted to ``doc_ids``."""

    def __init__(
        self,
        spec: str | Path,
        tokenizer,
        doc_ids: Sequence[int] | None = None,
        num_fewshot: int | None = None,
        batch_size: int = 1,
        metric: str | None = None,
        filter_name: str | None = None,
        device: str = "cpu",
    ) -> None:
        tasks = load_lm_eval_tasks(spec, num_fewshot)
        if len(tasks) != 1:
            raise DataError(
                f"{spec}: the lm-eval backend scores one task at a time "
                f"(this spec has {len(tasks)}: {', '.join(tasks)})"
            )
        ((self.task_name, task),) = tasks.items()
        self.task_dict = {self.task_name: task}
        n_docs = len(task.eval_docs)
        ids = sorted(set(int(i) for i in doc_ids)) if doc_ids is not None else None
        if ids and (ids[0] < 0 or ids[-1] >= n_docs):
            raise DataError(f"{spec}: document ids must lie in [0, {n_docs - 1}]")
        # lm-eval maps logged samples back to ids correctly only for sorted ids
        self.doc_ids = ids if ids is not None else list(range(n_docs))
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.metric = metric
        self.filter_name = filter_name
        self.device = device
        self._lm = None
        self._model = None
        self.last_samples: list[dict] = []

    def _hflm(self, model):
        if self._model is not model:
            from lm_eval.models.huggingface import HFLM

            self._lm = HFLM(
                pretrained=model,
                tokenizer=self.tokenizer,
                batch_size=self.batch_size,
                device=self.device,
            )
            self._model = model
        return self._lm

    def __call__(self, model) -> np.ndarray:
        """1.0/0.0 per document id, in ``doc_ids`` order."""
        from lm_eval.evaluator import evaluate

        logging.getLogger("lm_eval").setLevel(logging.WARNING)
        results = evaluate(
            lm=self._hflm(model),
            task_dict=self.task_dict,
            samples={self.task_name: self.doc_ids},
            log_samples=True,
            bootstrap_iters=0,
            verbosity="WARNING",
        )
        samples = results["samples"][self.task_name]
        filters = list(dict.fromkeys(s["filter"] for s in samples))
        chosen = self.filter_name or filters[0]
        if chosen not in filters:
            raise DataError(f"lm-eval task {self.task_name}: no filter {chosen!r} ({filters})")
        samples = [s for s in samples if s["filter"] == chosen]
        self.last_samples = samples
        metric = self.metric or next((m for m in _METRICS if m in samples[0]), None)
        if metric is None or metric not in samples[0]:
            raise DataError(
                f"lm-eval task {self.task_name}: no per-item metric "
                f"{self.metric or _METRICS} in {samples[0]['metrics']}"
            )
        by_id = {int(s["doc_id"]): float(s[metric]) for s in samples}
        return np.array([by_id.get(i, np.nan) for i in self.doc_ids])
