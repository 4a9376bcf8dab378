"""Item response theory in Pyro: 1PL, 2PL and multidimensional 2PL, fitted by vectorised SVI.

P(model m answers item i) = σ(α_iᵀθ_m − β_i), θ_m ∈ R^D, α_i ∈ R^D_{>0} (α_i ≡ 1, D = 1 for 1PL).
The Pyro model below is only the generative story; :class:`IRT` configures inference outside it:
a MAP fit (``AutoDelta`` guide, ``Trace_ELBO``) over the whole matrix at once, one tensor
operation per step, seeded, on CPU or GPU. Missing responses are masked out of the likelihood;
scores in [0, 1] are allowed with ``binary=False`` (a soft-label Bernoulli quasi-likelihood).

Priors: θ ~ N(0, I), β ~ N(0, σ_β²), log α ~ N(0, σ_α²). With ``hierarchical=True`` the scales
σ_β, σ_α and a mean of β get their own priors (as in py-irt) and are fitted too. The θ prior
fixes the location/scale of the latent space; for D > 1 the fit is identified only up to an
invertible linear map of θ (α > 0 narrows it), so compare θ̂ with a truth after whitening and
an orthogonal Procrustes rotation, as the tests and ``experiments/estimator_accuracy.py`` do.
"""

from __future__ import annotations

import numpy as np
import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoDelta, init_to_sample

from merge3.errors import ConfigError, DataError
from merge3.estimate.ability import fit_abilities
from merge3.estimate.itembank import ItemBank
from merge3.estimate.responses import ResponseMatrix


def irt_model(
    obs: torch.Tensor,
    mask: torch.Tensor,
    dims: int = 1,
    discriminating: bool = True,
    beta_scale: float = 3.0,
    alpha_scale: float = 0.5,
    hierarchical: bool = False,
) -> None:
    """Generative story of an (M models × I items) response matrix ``obs`` (0 where masked)."""
    n_models, n_items = obs.shape
    zero, one = obs.new_zeros(()), obs.new_ones(())
    beta_loc = zero
    if hierarchical:
        beta_loc = pyro.sample("beta_loc", dist.Normal(zero, one))
        beta_scale = pyro.sample("beta_scale", dist.LogNormal(zero, one))
        if discriminating:
            alpha_scale = pyro.sample("alpha_scale", dist.LogNormal(zero - 1, one))
    with pyro.plate("models", n_models, dim=-2):
        theta = pyro.sample("theta", dist.Normal(zero, one).expand([1, dims]).to_event(1))
    with pyro.plate("items", n_items, dim=-1):
        beta = pyro.sample("beta", dist.Normal(beta_loc, beta_scale * one))
        if discriminating:
            alpha = pyro.sample(
                "alpha", dist.LogNormal(zero, alpha_scale * one).expand([n_items, dims]).to_event(1)
            )
        else:
            alpha = obs.new_ones(n_items, dims)
    logits = theta.squeeze(-2) @ alpha.T - beta
    # The Bernoulli likelihood of every observed response, as one fused masked sum: the same
    # density as a `Bernoulli(logits).mask(mask)` site inside two plates, at half the cost.
    loglik = -F.binary_cross_entropy_with_logits(logits, obs, weight=mask, reduction="sum")
    pyro.factor("y", loglik)


SMALL = 1_000_000  # responses; below this a fit runs on one thread


class IRT:
    """An IRT model with a scikit-learn style API: hyper-parameters in, ``fit(Y)``, ``*_`` out.

    ``fit`` takes a (models × items) array with NaN for missing, or a :class:`ResponseMatrix`
    (then item ids, tasks and model ids are kept and :meth:`item_bank` can be saved).
    """

    kind = "2pl"
    discriminating = True

    def __init__(
        self,
        dims: int = 1,
        *,
        steps: int = 250,
        lr: float = 0.5,
        beta_scale: float = 3.0,
        alpha_scale: float = 0.5,
        hierarchical: bool = False,
        binary: bool = True,
        seed: int = 0,
        device: str = "cpu",
        threads: int | None = None,
    ) -> None:
        self.dims = dims
        self.steps = steps
        self.lr = lr
        self.beta_scale = beta_scale
        self.alpha_scale = alpha_scale
        self.hierarchical = hierarchical
        self.binary = binary
        self.seed = seed
        self.device = device
        self.threads = threads

    def get_params(self) -> dict:
        keys = ("dims", "steps", "lr", "beta_scale", "alpha_scale", "hierarchical", "binary")
        return {k: getattr(self, k) for k in (*keys, "seed", "device", "threads")}

    # --- fitting ----------------------------------------------------------------------------
    def _model_kwargs(self) -> dict:
        return dict(
            dims=self.dims,
            discriminating=self.discriminating,
            beta_scale=self.beta_scale,
            alpha_scale=self.alpha_scale,
            hierarchical=self.hierarchical,
        )

    def fit(self, Y: np.ndarray | ResponseMatrix) -> IRT:
        if self.dims < 1:
            raise ConfigError(f"dims must be ≥ 1, not {self.dims}")
        if not self.discriminating and self.dims != 1:
            raise ConfigError("a 1PL model has one dimension; use 2pl for dims > 1")
        if isinstance(Y, ResponseMatrix):
            Y.validate(binary=self.binary)
            self.item_ids_, self.tasks_, self.subjects_ = Y.items, Y.tasks, Y.subjects
            self.model_ids_ = Y.models
            values = Y.values
        else:
            values = np.asarray(Y, dtype=float)
            ResponseMatrix(
                tuple(map(str, range(values.shape[0]))),
                tuple(map(str, range(values.shape[1]))),
                ("task",) * values.shape[1],
                values,
                source="Y",
            ).validate(binary=self.binary)
            self.item_ids_ = self.tasks_ = self.subjects_ = self.model_ids_ = None
        dev = torch.device(self.device)
        mask = torch.as_tensor(~np.isnan(values), dtype=torch.float32, device=dev)
        obs = torch.as_tensor(np.nan_to_num(values), dtype=torch.float32, device=dev)

        # Small matrices are overhead-bound: one CPU thread is faster (and kinder to neighbours).
        threads = self.threads or (1 if values.size < SMALL else torch.get_num_threads())
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            self._svi(obs, mask, values.shape[1])
        finally:
            torch.set_num_threads(previous)
        return self

    def _svi(self, obs: torch.Tensor, mask: torch.Tensor, n_items: int) -> None:
        pyro.clear_param_store()
        pyro.set_rng_seed(self.seed)
        kwargs = self._model_kwargs()

        def model(obs: torch.Tensor, mask: torch.Tensor) -> None:
            irt_model(obs, mask, **kwargs)

        # Random (seeded) start breaks the symmetry between latent dimensions.
        guide = AutoDelta(model, init_loc_fn=init_to_sample)
        optim = pyro.optim.ClippedAdam({"lr": self.lr, "lrd": 0.02 ** (1 / self.steps)})
        svi = SVI(model, guide, optim, Trace_ELBO())
        losses = []
        for _ in range(self.steps):
            losses.append(svi.step(obs, mask))
        with torch.no_grad():
            est = guide.median()
        self.loss_curve_ = np.asarray(losses) / mask.sum().item()
        self.n_iter_ = self.steps
        self.theta_ = est["theta"].squeeze(-2).double().cpu().numpy()
        self.beta_ = est["beta"].double().cpu().numpy()
        if self.discriminating:
            self.alpha_ = est["alpha"].double().cpu().numpy()
        else:
            self.alpha_ = np.ones((n_items, 1))
        pyro.clear_param_store()

    # --- using a fit ------------------------------------------------------------------------
    def predict_proba(self, theta: np.ndarray | None = None) -> np.ndarray:
        """P(correct) of each model (rows of ``theta``, default the fitted ones) on each item."""
        theta = self.theta_ if theta is None else np.atleast_2d(theta)
        return _sigmoid(theta @ self.alpha_.T - self.beta_)

    def log_likelihood(self, Y: np.ndarray, theta: np.ndarray | None = None) -> float:
        """Mean per-response Bernoulli log-likelihood of ``Y`` (NaN skipped)."""
        p = np.clip(self.predict_proba(theta), 1e-9, 1 - 1e-9)
        Y = np.asarray(Y, float)
        ok = ~np.isnan(Y)
        ll = Y * np.log(p) + (1 - Y) * np.log1p(-p)
        return float(ll[ok].mean())

    def abilities(self, Y: np.ndarray, items: np.ndarray | None = None) -> np.ndarray:
        """MAP θ of new models from their responses ``Y`` on ``items`` (column indices)."""
        idx = slice(None) if items is None else np.asarray(items)
        return fit_abilities(self.alpha_[idx], self.beta_[idx], Y)

    def item_bank(self) -> ItemBank:
        """The fitted item parameters with their ids, ready to save."""
        if getattr(self, "item_ids_", None) is None:
            raise DataError("item_bank() needs a fit on a ResponseMatrix (item ids unknown)")
        return ItemBank(
            kind=self.kind,
            items=self.item_ids_,
            tasks=self.tasks_,
            alpha=self.alpha_,
            beta=self.beta_,
            subjects=self.subjects_,
            abilities=dict(zip(self.model_ids_, self.theta_, strict=True)),
            info={"params": self.get_params()},
        )


class OnePL(IRT):
    """Rasch model: P = σ(θ_m − β_i)."""

    kind = "1pl"
    discriminating = False


class TwoPL(IRT):
    """(Multidimensional) 2PL: P = σ(α_iᵀθ_m − β_i); ``dims`` = D."""

    kind = "2pl"


MODELS: dict[str, type[IRT]] = {"1pl": OnePL, "2pl": TwoPL}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(0.5 * x))
