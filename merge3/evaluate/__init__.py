"""EVALUATE: a model in, per-item correctness out."""

from merge3.evaluate.multiple_choice import MultipleChoiceEvaluator

__all__ = ["MultipleChoiceEvaluator"]
