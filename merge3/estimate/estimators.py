"""The IRT family of estimators: irt, pirt, gpirt (tinyBenchmarks) and mpirt, gmpirt (MERGE³).

Everything that does not depend on the candidates (anchor/task indices into the item bank,
endpoint abilities) is resolved in the constructor, so ``estimate`` is a few small matrix
products plus one batched ability (or mixing-weight) fit over all anchors of all tasks: the
latent space is shared by the tasks, so every anchor informs θ.

- ``irt``:    mean over the task's items of P(correct | θ̂), θ̂ fitted on the anchors.
- ``pirt``:   ℓ·(anchor mean) + (1 − ℓ)·(mean P over the non-anchor items), ℓ = n_anchors/n_items.
- ``gpirt``:  λ·mean + (1 − λ)·pirt.
- ``mpirt``:  pirt with θ = Σ_j λ_j θ_j, only λ fitted (endpoint θ_j fitted once, on full rows).
- ``gmpirt``: λ·mean + (1 − λ)·mpirt.

The mix λ of the g-estimators is given, or calibrated on validation models whose full-task
accuracy is known (:meth:`MixedEstimator.calibrate`, :func:`mix_weight`). tinyBenchmarks' rule is
λ = b² / (b² + s²), b² the mean squared error of the IRT part and s² that of the anchor mean on
the validation models (for random anchors s² ≈ v/(4n), v = 4·p(1 − p) ≤ 1, their b²/(b² + v/(4n))).
It assumes independent errors; the default ``lstsq`` rule fits λ to the validation errors
directly, which matters for mp-IRT, whose errors are correlated with the mean's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from merge3.errors import ConfigError, DataError
from merge3.estimate.ability import CONSTRAINTS, fit_abilities, fit_mixing
from merge3.estimate.base import Estimator, MeanEstimator
from merge3.estimate.itembank import ItemBank
from merge3.extract import AnchorSet

INFERENCES = ("map", "posterior")
"""How mpirt reads λ from the anchors: the MAP point or the posterior mean under Dirichlet(1)."""


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(0.5 * x))


def _rows(correct: Mapping[str, np.ndarray], task: str, n: int) -> np.ndarray:
    if task not in correct:
        raise DataError(f"no anchor correctness given for task {task!r}")
    y = np.atleast_2d(np.asarray(correct[task], dtype=float))
    if y.shape[1] != n:
        raise DataError(f"task {task!r}: {y.shape[1]} anchor responses per model, expected {n}")
    return y


class IRTEstimator(Estimator):
    """``irt``: θ̂ from all anchors (MAP, N(0, I) prior), then mean P over each task's items."""

    name = "irt"

    def __init__(self, anchors: AnchorSet, bank: ItemBank, prior_scale: float = 1.0) -> None:
        super().__init__(anchors)
        self.bank = bank
        self.prior_scale = prior_scale
        self._anchor_idx, self._task_idx, self._rest_idx = {}, {}, {}
        for task, a in anchors.tasks.items():
            idx = bank.index(a.items)
            task_idx = bank.task_index(task)
            wrong = np.setdiff1d(idx, task_idx)
            if wrong.size:
                raise DataError(
                    f"anchor {bank.items[wrong[0]]!r} of task {task!r} belongs to task "
                    f"{bank.tasks[wrong[0]]!r} in {bank.source}"
                )
            self._anchor_idx[task] = idx
            self._task_idx[task] = task_idx
            self._rest_idx[task] = np.setdiff1d(task_idx, idx)
        self._all_anchors = np.concatenate(list(self._anchor_idx.values()))

    def _stack(self, correct: Mapping[str, np.ndarray]) -> np.ndarray:
        return np.hstack([_rows(correct, t, len(i)) for t, i in self._anchor_idx.items()])

    def abilities(self, correct: Mapping[str, np.ndarray]) -> np.ndarray:
        """θ̂ (n_models × D) of the candidates from their anchor correctness."""
        b = self.bank
        i = self._all_anchors
        return fit_abilities(b.alpha[i], b.beta[i], self._stack(correct), self.prior_scale)

    def _probs(self, theta: np.ndarray, idx: np.ndarray) -> np.ndarray:
        return _sigmoid(theta @ self.bank.alpha[idx].T - self.bank.beta[idx])

    def _from_theta(self, theta: np.ndarray, correct: Mapping[str, np.ndarray]) -> dict:
        return {t: self._probs(theta, i).mean(axis=1) for t, i in self._task_idx.items()}

    def estimate(self, correct: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._from_theta(self.abilities(correct), correct)


class PIRTEstimator(IRTEstimator):
    """``pirt``: observed anchors count as themselves, the other items by their predicted P."""

    name = "pirt"

    def _from_theta(self, theta: np.ndarray, correct: Mapping[str, np.ndarray]) -> dict:
        return self._combine(
            correct,
            lambda task, rest: self._probs(theta, rest).mean(axis=1) if rest.size else 0.0,
        )

    def _combine(
        self,
        correct: Mapping[str, np.ndarray],
        rest_mean: Callable[[str, np.ndarray], np.ndarray | float],
    ) -> dict:
        """ℓ·(anchor mean) + (1 − ℓ)·``rest_mean(task, non-anchor indices)`` per task."""
        out = {}
        for task, idx in self._task_idx.items():
            y = _rows(correct, task, len(self._anchor_idx[task]))
            ell = y.shape[1] / len(idx)
            out[task] = ell * np.nanmean(y, axis=1) + (1 - ell) * rest_mean(
                task, self._rest_idx[task]
            )
        return out


class MPIRTEstimator(PIRTEstimator):
    """``mpirt``: a candidate's θ is Σ_j λ_j θ_j over the endpoints; λ fitted on its anchors.

    ``endpoints`` is (J × D), the endpoints' abilities fitted once on their full responses
    (see :func:`endpoint_abilities`). ``constraint`` is the feasible set of λ (default
    ``simplex``: a merge stays inside its endpoints' hull; see ``ability.fit_mixing``).
    """

    name = "mpirt"

    def __init__(
        self,
        anchors: AnchorSet,
        bank: ItemBank,
        endpoints: np.ndarray | None = None,
        constraint: str = "simplex",
        prior_scale: float = 1.0,
        inference: str = "map",
        samples: int = 4096,
        seed: int = 0,
    ) -> None:
        super().__init__(anchors, bank, prior_scale)
        if endpoints is None or len(np.atleast_2d(endpoints)) == 0:
            raise ConfigError(f"{self.name} needs endpoint abilities (--endpoint-responses)")
        endpoints = np.atleast_2d(np.asarray(endpoints, float))
        if endpoints.shape[1] != bank.dims:
            raise DataError(
                f"endpoint abilities have {endpoints.shape[1]} dimensions, the IRT model "
                f"{bank.dims}"
            )
        self.endpoints = endpoints
        self.constraint = constraint
        if constraint not in CONSTRAINTS:
            raise ConfigError(
                f"unknown mixing constraint {constraint!r}; choose from {CONSTRAINTS}"
            )
        if inference not in INFERENCES:
            raise ConfigError(f"unknown λ inference {inference!r}; choose from {INFERENCES}")
        if inference == "posterior" and constraint != "simplex":
            raise ConfigError(
                f"posterior λ inference needs the simplex constraint, not {constraint!r} "
                "(its prior is the uniform Dirichlet on the simplex)"
            )
        self.inference = inference
        if inference == "posterior":
            self._prepare_posterior(samples, seed)

    def _prepare_posterior(self, samples: int, seed: int) -> None:
        """Everything the posterior needs that no candidate changes: one fixed, seeded draw.

        λ_k ~ Dirichlet(1) (uniform over the endpoints' hull), θ_k = λ_k @ endpoints; per draw
        the log P(right)/P(wrong) of every anchor and the mean P over each task's other items.
        A candidate is then one (M × A) @ (A × K) product and a softmax.
        """
        if samples < 1:
            raise ConfigError(f"{self.name}: posterior samples must be ≥ 1, got {samples}")
        rng = np.random.default_rng(seed)
        self.lambda_draws_ = rng.dirichlet(np.ones(len(self.endpoints)), size=samples)
        theta = self.lambda_draws_ @ self.endpoints
        i = self._all_anchors
        logits = theta @ self.bank.alpha[i].T - self.bank.beta[i]
        self._log_right = -np.logaddexp(0.0, -logits)  # log σ(x), stable
        self._log_wrong = -np.logaddexp(0.0, logits)  # log σ(−x)
        self._rest_mean = {
            t: self._probs(theta, r).mean(axis=1) if r.size else np.zeros(samples)
            for t, r in self._rest_idx.items()
        }

    def posterior_weights(self, correct: Mapping[str, np.ndarray]) -> np.ndarray:
        """(M × K) posterior weight of each λ draw given each candidate's anchor answers."""
        Y = self._stack(correct)
        seen = ~np.isnan(Y)
        y = np.where(seen, Y, 0.0)
        loglik = y @ self._log_right.T + (seen - y) @ self._log_wrong.T
        loglik -= loglik.max(axis=1, keepdims=True)
        w = np.exp(loglik)
        return w / w.sum(axis=1, keepdims=True)

    def estimate(self, correct: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.inference == "map":
            return super().estimate(correct)
        # Posterior mean of the pirt accuracy itself (not accuracy at the mean λ): the
        # estimate with the least expected squared error under the prior.
        w = self.posterior_weights(correct)
        return self._combine(correct, lambda task, rest: w @ self._rest_mean[task])

    def mixing(self, correct: Mapping[str, np.ndarray]) -> np.ndarray:
        """λ (n_models × J): how much of each endpoint's ability each candidate has."""
        if self.inference == "posterior":
            return self.posterior_weights(correct) @ self.lambda_draws_
        b, i = self.bank, self._all_anchors
        return fit_mixing(
            b.alpha[i],
            b.beta[i],
            self.endpoints,
            self._stack(correct),
            self.constraint,
            self.prior_scale,
        )

    def abilities(self, correct: Mapping[str, np.ndarray]) -> np.ndarray:
        return self.mixing(correct) @ self.endpoints


class MixedEstimator(Estimator):
    """λ·mean + (1 − λ)·(an IRT estimator); λ per task, given or calibrated on validation."""

    base: type[IRTEstimator]

    def __init__(
        self, anchors: AnchorSet, *args, lam: float | Mapping[str, float] | None = None, **kwargs
    ) -> None:
        super().__init__(anchors)
        self.irt = self.base(anchors, *args, **kwargs)
        self.mean = MeanEstimator(anchors)
        if lam is None:
            self.lam_: dict[str, float] | None = None
        elif isinstance(lam, Mapping):
            self.lam_ = {t: float(lam[t]) for t in anchors.tasks}
        else:
            self.lam_ = dict.fromkeys(anchors.tasks, float(lam))
        if self.lam_ is not None and not all(0 <= v <= 1 for v in self.lam_.values()):
            raise ConfigError(f"{self.name}: the mix λ must lie in [0, 1], got {self.lam_}")

    def calibrate(
        self,
        correct: Mapping[str, np.ndarray],
        truth: Mapping[str, np.ndarray],
        how: str = "lstsq",
    ) -> MixedEstimator:
        """Set λ per task from validation models (anchor correctness and true accuracy)."""
        irt, mean = self.irt.estimate(correct), self.mean.estimate(correct)
        self.lam_ = {
            t: mix_weight(irt[t] - truth[t], mean[t] - truth[t], how) for t in self.anchors.tasks
        }
        return self

    def estimate(self, correct: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.lam_ is None:
            raise ConfigError(f"{self.name}: give the mix λ or validation data to calibrate it")
        irt, mean = self.irt.estimate(correct), self.mean.estimate(correct)
        return {t: self.lam_[t] * mean[t] + (1 - self.lam_[t]) * irt[t] for t in irt}


class GPIRTEstimator(MixedEstimator):
    """``gpirt`` (tinyBenchmarks): λ·mean + (1 − λ)·pirt."""

    name = "gpirt"
    base = PIRTEstimator


class GMPIRTEstimator(MixedEstimator):
    """``gmpirt`` (MERGE³): λ·mean + (1 − λ)·mpirt; λ = 0.5 (MERGE³'s code) unless calibrated."""

    name = "gmpirt"
    base = MPIRTEstimator

    def __init__(
        self, anchors: AnchorSet, *args, lam: float | Mapping[str, float] | None = 0.5, **kwargs
    ) -> None:
        super().__init__(anchors, *args, lam=lam, **kwargs)


MIX_RULES = ("lstsq", "tinybenchmarks")


def mix_weight(irt_err: np.ndarray, mean_err: np.ndarray, how: str = "lstsq") -> float:
    """λ of λ·mean + (1 − λ)·irt from the two estimators' errors on validation models.

    ``tinybenchmarks``: λ = b² / (b² + s²) (mean squared errors), optimal when the errors are
    independent. ``lstsq`` (default): the λ in [0, 1] minimising the validation squared error,
    which accounts for their correlation: mp-IRT's λ and the anchor mean see the same anchors,
    so their errors move together and the independent-errors rule over-weights the mean.
    """
    e_irt, e_mean = np.ravel(irt_err), np.ravel(mean_err)
    if how == "tinybenchmarks":
        b2, s2 = np.mean(e_irt**2), np.mean(e_mean**2)
        return float(b2 / (b2 + s2)) if b2 + s2 > 0 else 0.5
    if how != "lstsq":
        raise ConfigError(f"unknown mix rule {how!r}; choose from {MIX_RULES}")
    d = e_irt - e_mean
    denom = float(np.dot(d, d))
    return float(np.clip(np.dot(e_irt, d) / denom, 0, 1)) if denom > 0 else 0.5


def endpoint_abilities(bank: ItemBank, responses, prior_scale: float = 1.0) -> np.ndarray:
    """θ_j of each row of ``responses`` (a ResponseMatrix) from all its items the bank knows."""
    shared = [x for x in responses.items if x in bank]
    if not shared:
        raise DataError(f"{responses.source}: none of its items is in {bank.source}")
    idx = bank.index(shared, "endpoint")
    Y = responses.columns(shared, "endpoint")
    return fit_abilities(bank.alpha[idx], bank.beta[idx], Y, prior_scale)
