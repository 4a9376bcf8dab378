"""EVALUATE: a model in, per-item correctness out."""

from merge3.evaluate.classify import ClassificationEvaluator, fit_head
from merge3.evaluate.generate import GenerativeEvaluator
from merge3.evaluate.lm_eval_backend import LmEvalEvaluator
from merge3.evaluate.multiple_choice import MultipleChoiceEvaluator

__all__ = [
    "ClassificationEvaluator",
    "GenerativeEvaluator",
    "LmEvalEvaluator",
    "MultipleChoiceEvaluator",
    "fit_head",
]
