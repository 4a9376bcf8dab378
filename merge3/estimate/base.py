"""The estimator interface: anchor correctness in, estimated full-task accuracy out.

Estimators are built once per run (with whatever they were fitted on: IRT item parameters,
endpoint abilities) and then called for every batch of candidates; ``estimate`` must be cheap.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping

import numpy as np

from merge3.extract import AnchorSet


class Estimator(ABC):
    """Maps per-task anchor correctness of some models to estimated accuracy per task."""

    name: str

    def __init__(self, anchors: AnchorSet) -> None:
        self.anchors = anchors

    @abstractmethod
    def estimate(self, correct: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``correct[task]`` is (n_models, n_anchors) in the anchor order of ``self.anchors``;
        returns, per task, one estimated accuracy per model."""


class MeanEstimator(Estimator):
    """The weighted mean of anchor correctness: unbiased for random anchors, noisy for few."""

    name = "mean"

    def estimate(self, correct: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {}
        for task, anchors in self.anchors.tasks.items():
            y = np.atleast_2d(np.asarray(correct[task], dtype=float))
            # Excluded anchors (NaN) drop out with their weight; dividing by the weights' own
            # sum also keeps 20 × 0.05 (= 1.0000000000000002 in floats) from exceeding 1.
            w = np.where(np.isnan(y), 0.0, anchors.weights)
            total = w.sum(axis=1)
            mean = np.nan_to_num(y) * w
            out[task] = np.clip(mean.sum(axis=1) / np.where(total > 0, total, np.nan), 0.0, 1.0)
        return out
