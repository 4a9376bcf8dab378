"""The evaluator a task needs, built once; and accuracy per task from its per-item output."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from merge3.data.items import Item
from merge3.data.tasks import Task
from merge3.errors import ConfigError


def builtin_evaluator(
    task: Task,
    items: Sequence[Item],
    tokenizer,
    batch_size: int = 32,
    device: str = "cpu",
    reuse_prefix: bool | None = None,
    max_length: int | None = None,
):
    """Multiple-choice or generative evaluator for a causal LM.

    Classification tasks (SentEval) without heads are scored as multiple choice over their
    label names after ``TEXT\\nLabel:``; heads on an encoder go through
    :class:`~merge3.evaluate.classify.ClassificationEvaluator` instead.
    """
    from merge3.evaluate.generate import GenerativeEvaluator
    from merge3.evaluate.multiple_choice import MultipleChoiceEvaluator

    if task.kind == "generate":
        return GenerativeEvaluator(
            items,
            tokenizer,
            task.generation,
            min(batch_size, 8),
            device,
            max_length,
            reuse_prefix=reuse_prefix,
        )
    if task.kind == "classify":
        from dataclasses import replace

        items = [replace(i, question=f"{i.question}\nLabel:") for i in items]
    return MultipleChoiceEvaluator(
        items,
        tokenizer,
        batch_size,
        task.target_delimiter,
        task.normalize,
        device,
        reuse_prefix,
        max_length,
    )


def lm_eval_evaluator(
    spec: str,
    task: Task,
    items: Sequence[Item],
    tokenizer,
    workdir: Path,
    from_lm_eval: bool,
    num_fewshot: int | None = None,
    device: str = "cpu",
):
    """lm-eval on the same items: the task itself when it came from lm-eval, else a local
    ``json`` task written from the items (same prompts, lm-eval's scoring)."""
    from merge3.data.lm_eval_tasks import items_task_yaml
    from merge3.evaluate.lm_eval_backend import LmEvalEvaluator

    if from_lm_eval:
        return LmEvalEvaluator(
            spec, tokenizer, [int(i.id) for i in items], num_fewshot, device=device
        )
    if task.kind == "classify":
        raise ConfigError(
            "the lm-eval backend does not score classification heads; use --backend builtin"
        )
    yaml_path = items_task_yaml(task, list(items), workdir)
    return LmEvalEvaluator(yaml_path, tokenizer, None, 0, device=device)


def accuracy(correct: np.ndarray) -> float:
    """Mean over the items that were scored (NaN marks an excluded item)."""
    scored = correct[~np.isnan(correct)]
    return float(scored.mean()) if scored.size else float("nan")
