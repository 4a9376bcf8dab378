"""ESTIMATE: full-benchmark accuracy from anchor correctness (mean, IRT family)."""

from merge3.estimate.base import Estimator, MeanEstimator

ESTIMATORS: dict[str, type[Estimator]] = {"mean": MeanEstimator}

__all__ = ["ESTIMATORS", "Estimator", "MeanEstimator"]
