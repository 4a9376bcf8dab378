"""Merge operators: pure functions over tensors, registered by name.

Importing this package registers every operator, so ``get_operator("ties")`` works anywhere.
"""

from merge3.merging import linear  # noqa: F401  (registers linear, task_arithmetic)
from merge3.merging.registry import OPERATORS, MergeOperator, Parameter, get_operator, register

__all__ = ["OPERATORS", "MergeOperator", "Parameter", "get_operator", "register"]
