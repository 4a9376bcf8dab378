"""ESTIMATE: full-benchmark accuracy from anchor correctness (mean, IRT family)."""

from merge3.estimate.base import Estimator, MeanEstimator
from merge3.estimate.estimators import (
    GMPIRTEstimator,
    GPIRTEstimator,
    IRTEstimator,
    MPIRTEstimator,
    PIRTEstimator,
    endpoint_abilities,
)
from merge3.estimate.irt import IRT, MODELS, OnePL, TwoPL
from merge3.estimate.itembank import ItemBank
from merge3.estimate.responses import ResponseMatrix, read_responses

ESTIMATORS: dict[str, type[Estimator]] = {
    "mean": MeanEstimator,
    "irt": IRTEstimator,
    "pirt": PIRTEstimator,
    "gpirt": GPIRTEstimator,
    "mpirt": MPIRTEstimator,
    "gmpirt": GMPIRTEstimator,
}

__all__ = [
    "ESTIMATORS",
    "IRT",
    "MODELS",
    "Estimator",
    "GMPIRTEstimator",
    "GPIRTEstimator",
    "IRTEstimator",
    "ItemBank",
    "MPIRTEstimator",
    "MeanEstimator",
    "OnePL",
    "PIRTEstimator",
    "ResponseMatrix",
    "TwoPL",
    "endpoint_abilities",
    "read_responses",
]
