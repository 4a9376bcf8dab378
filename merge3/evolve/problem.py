"""The pymoo Problem of a merge search: bounds and objective count, nothing else.

Following pymoo's ask-and-tell design, evaluation happens outside the Problem (in the runner), so
the Problem holds no model, pickles into a checkpoint in microseconds, and never merges or logs.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from pymoo.core.problem import Problem


class MergeProblem(Problem):
    """X (genomes) → F (negated accuracies, since pymoo minimises)."""

    def __init__(
        self,
        lower: np.ndarray,
        upper: np.ndarray,
        n_obj: int,
        fitness: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        super().__init__(n_var=len(lower), n_obj=n_obj, xl=lower, xu=upper)
        self._fitness = fitness

    def _evaluate(self, X: np.ndarray, out: dict, *args, **kwargs) -> None:
        if self._fitness is None:
            raise RuntimeError("MergeProblem is evaluated by the runner (ask-and-tell)")
        out["F"] = -np.asarray([self._fitness(x) for x in X], dtype=float)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_fitness"] = None  # checkpoints hold the search state, never the model
        return state
