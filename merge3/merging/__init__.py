"""Merge operators: pure functions over tensors, registered by name.

Importing this package registers every operator, so ``get_operator("ties")`` works anywhere:
``linear``, ``task_arithmetic``, ``ties``, ``dare_linear``, ``dare_ties``, ``tsv`` (TSV-M) and
``tsv_compress`` (TSV-C).
"""

from merge3.merging import dare, linear, ties, tsv  # noqa: F401  (registers the operators)
from merge3.merging.registry import OPERATORS, MergeOperator, Parameter, get_operator, register

__all__ = ["OPERATORS", "MergeOperator", "Parameter", "get_operator", "register"]
