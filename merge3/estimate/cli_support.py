"""Glue between files and estimators: build one by name, read only the anchor columns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from merge3.errors import ConfigError, DataError
from merge3.estimate.base import Estimator, MeanEstimator
from merge3.estimate.estimators import (
    GMPIRTEstimator,
    GPIRTEstimator,
    IRTEstimator,
    MixedEstimator,
    MPIRTEstimator,
    PIRTEstimator,
    endpoint_abilities,
)
from merge3.estimate.itembank import ItemBank
from merge3.estimate.responses import ResponseMatrix
from merge3.extract import AnchorSet

NAMES = ("mean", "irt", "pirt", "gpirt", "mpirt", "gmpirt")


def anchor_correctness(rm: ResponseMatrix, anchors: AnchorSet) -> dict[str, np.ndarray]:
    return {t: rm.columns(a.items) for t, a in anchors.tasks.items()}


def validation_truth(rm: ResponseMatrix, bank: ItemBank, tasks) -> dict[str, np.ndarray]:
    """Full-task accuracy of validation rows, over the bank's items of each task."""
    items = bank.items_by_task()
    return {t: np.nanmean(rm.columns(items[t], "validation"), axis=1) for t in tasks}


def build_estimator(
    name: str,
    anchors: AnchorSet,
    bank: ItemBank | None,
    endpoints: ResponseMatrix | None = None,
    validation: ResponseMatrix | None = None,
    lam: float | None = None,
    constraint: str = "simplex",
    inference: str = "map",
) -> Estimator:
    """The estimator ``name`` ready to call; g-estimators calibrated if validation is given."""
    if name not in NAMES:
        raise ConfigError(f"unknown estimator {name!r}; choose from {', '.join(NAMES)}")
    if name == "mean":
        return MeanEstimator(anchors)
    if bank is None:
        raise ConfigError(f"estimator {name!r} needs an IRT item file (--irt)")
    kwargs: dict = {}
    if name in ("mpirt", "gmpirt"):
        if endpoints is None:
            raise ConfigError(
                f"estimator {name!r} needs the endpoints' full responses (--endpoint-responses)"
            )
        kwargs = dict(
            endpoints=endpoint_abilities(bank, endpoints),
            constraint=constraint,
            inference=inference,
        )
    simple = {"irt": IRTEstimator, "pirt": PIRTEstimator, "mpirt": MPIRTEstimator}
    if name in simple:
        return simple[name](anchors, bank, **kwargs)
    cls = {"gpirt": GPIRTEstimator, "gmpirt": GMPIRTEstimator}[name]
    if lam is not None:
        return cls(anchors, bank, lam=lam, **kwargs)
    est: MixedEstimator = cls(anchors, bank, lam=None, **kwargs)
    if validation is None:
        if name == "gpirt":
            raise ConfigError(
                "gpirt needs --lambda or --validation (full responses) to set its mix"
            )
        est.lam_ = dict.fromkeys(anchors.tasks, 0.5)
        return est
    truth = validation_truth(validation, bank, anchors.tasks)
    return est.calibrate(anchor_correctness(validation, anchors), truth)


def read_anchor_correctness(
    path: str | Path, anchors: AnchorSet, items_file: str | Path | None = None
) -> tuple[list[str], dict[str, np.ndarray]]:
    """Model names and per-task anchor columns of a response file; no other column is read."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: response file not found")
    wanted = [x for a in anchors.tasks.values() for x in a.items]
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            header = pq.read_schema(path).names
        else:
            header = list(pd.read_csv(path, nrows=0).columns)
    except Exception as exc:  # malformed file: pandas/pyarrow raise many types
        raise DataError(f"{path}: cannot read response matrix ({exc})") from None
    if not header or header[0] != "model":
        raise DataError(f"{path}: the first column must be 'model'")
    present = set(header)
    missing = [x for x in wanted if x not in present]
    if missing:
        raise DataError(
            f"{path}: anchor item {missing[0]!r} is not a column ({len(missing)} of "
            f"{len(wanted)} anchors missing; do the anchors and responses use the same ids?)"
        )
    cols = ["model", *dict.fromkeys(wanted)]
    if path.suffix == ".parquet":
        df = pd.read_parquet(path, columns=cols)
    else:
        df = pd.read_csv(path, usecols=cols)
    try:
        values = df[cols[1:]].apply(pd.to_numeric, errors="raise").to_numpy(float)
    except (ValueError, TypeError) as exc:
        raise DataError(f"{path}: non-numeric response ({exc})") from None
    models = df["model"].astype(str).tolist()
    finite = ~np.isnan(values)
    if np.any((values[finite] < 0) | (values[finite] > 1)):
        raise DataError(f"{path}: responses must lie in [0, 1]")
    empty = np.flatnonzero(~finite.any(axis=1))
    if empty.size:
        raise DataError(f"{path}: model {models[empty[0]]!r} has no responses on the anchors")
    index = {x: i for i, x in enumerate(cols[1:])}
    correct = {t: values[:, [index[x] for x in a.items]] for t, a in anchors.tasks.items()}
    return models, correct
