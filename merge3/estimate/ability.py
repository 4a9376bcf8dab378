"""Abilities of new models from a few responses, item parameters held fixed; batched.

Both fits are logistic regressions with the items as rows, so one vectorised solve serves a
whole batch of candidates:

- :func:`fit_abilities`: MAP θ_m under θ ~ N(0, s²I) (s = ∞ gives the MLE), by Newton's method
  (the log-posterior is concave, the Hessian D × D per model).
- :func:`fit_mixing`: mp-IRT's θ_m = Σ_j λ_mj θ_j over endpoint abilities θ_j; only λ_m is fitted.
  ``constraint`` chooses the feasible set: ``simplex`` (λ ≥ 0, Σλ = 1: the merge stays inside its
  endpoints' hull), ``affine`` (Σλ = 1), ``nonneg`` (λ ≥ 0) or ``free``. A Gaussian prior
  N(1/J, τ²) keeps λ finite when the anchors cannot tell endpoints apart.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from merge3.errors import ConfigError, DataError

CONSTRAINTS = ("simplex", "affine", "nonneg", "free")


def _prepare(Y: np.ndarray, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    Y = np.atleast_2d(np.asarray(Y, float))
    if Y.shape[1] != n_items:
        raise DataError(f"{Y.shape[1]} responses per model but {n_items} items given")
    obs = ~np.isnan(Y)
    empty = np.flatnonzero(~obs.any(axis=1))
    if empty.size:
        raise DataError(f"model #{empty[0]} has no responses on these items (NaN-only row)")
    return np.nan_to_num(Y), obs.astype(float)


def _newton(
    X: np.ndarray,
    offset: np.ndarray,
    Y: np.ndarray,
    W: np.ndarray,
    prior_mean: np.ndarray,
    prior_prec: float,
    iters: int,
) -> np.ndarray:
    """argmax_z Σ_i W·loglik(σ(X_i z + offset_i)) − prior_prec/2 ‖z − prior_mean‖², batched.

    ``X`` is (I, K) shared by every model; ``Y``/``W`` are (M, I). Steps are capped in length
    so that the first iterations cannot overshoot when the prior is weak.
    """
    M, K = Y.shape[0], X.shape[1]
    z = np.broadcast_to(prior_mean, (M, K)).copy()
    eye = np.eye(K)
    for _ in range(iters):
        p = 1 / (1 + np.exp(-(z @ X.T + offset)))
        g = ((Y - p) * W) @ X - prior_prec * (z - prior_mean)
        h = np.einsum("mi,ik,il->mkl", W * p * (1 - p), X, X) + (prior_prec + 1e-9) * eye
        step = np.linalg.solve(h, g[..., None])[..., 0]
        norm = np.linalg.norm(step, axis=1, keepdims=True)
        step *= np.minimum(1.0, 3.0 / np.maximum(norm, 1e-12))
        z += step
        if np.max(np.abs(step)) < 1e-8:
            break
    return z


def fit_abilities(
    alpha: np.ndarray, beta: np.ndarray, Y: np.ndarray, prior_scale: float = 1.0, iters: int = 50
) -> np.ndarray:
    """MAP θ (M × D) of M models from responses ``Y`` (M × I, NaN = not asked) on I items."""
    alpha = np.atleast_2d(np.asarray(alpha, float))
    y, w = _prepare(Y, len(beta))
    prec = 0.0 if np.isinf(prior_scale) else 1 / prior_scale**2
    return _newton(alpha, -np.asarray(beta, float), y, w, np.zeros(alpha.shape[1]), prec, iters)


def fit_mixing(
    alpha: np.ndarray,
    beta: np.ndarray,
    endpoints: np.ndarray,
    Y: np.ndarray,
    constraint: str = "simplex",
    prior_scale: float = 1.0,
) -> np.ndarray:
    """Mixing weights λ (M × J) with θ_m = λ_m @ ``endpoints`` (J × D) fitted on responses Y."""
    if constraint not in CONSTRAINTS:
        raise ConfigError(f"unknown mixing constraint {constraint!r}; choose from {CONSTRAINTS}")
    endpoints = np.atleast_2d(np.asarray(endpoints, float))
    J = endpoints.shape[0]
    X = np.atleast_2d(np.asarray(alpha, float)) @ endpoints.T  # (I, J): logit is X λ − β
    offset = -np.asarray(beta, float)
    y, w = _prepare(Y, len(beta))
    prec = 1 / prior_scale**2
    uniform = np.full(J, 1 / J)
    if constraint == "free":
        return _newton(X, offset, y, w, uniform, prec, 50)
    if constraint == "affine":
        return _solve_face(X, offset, y, w, np.arange(J), True, prec)
    if J > MAX_FACE_ENDPOINTS:
        return _fit_mixing_bounded(X, offset, y, w, constraint, prec)
    return _fit_mixing_faces(X, offset, y, w, constraint == "simplex", prec)


MAX_FACE_ENDPOINTS = 6


def _solve_face(
    X: np.ndarray,
    offset: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    face: np.ndarray,
    affine: bool,
    prec: float,
) -> np.ndarray:
    """Optimum of λ with λ_k = 0 off ``face`` (and Σλ = 1 if ``affine``), ignoring λ ≥ 0."""
    J = X.shape[1]
    Xf = X[:, face]
    lam = np.zeros((y.shape[0], J))
    if not affine:
        lam[:, face] = _newton(Xf, offset, y, w, np.full(len(face), 1 / J), prec, 50)
        return lam
    k = len(face)
    centre = np.full(k, 1 / k)
    if k == 1:
        lam[:, face] = 1.0
        return lam
    # Σλ = 1 exactly: λ = 1/k + B z, B an orthonormal basis of the sum-zero subspace (so the
    # prior N(1/J, τ²) on λ becomes N(0, τ²) on z, up to a constant).
    B = np.linalg.svd(np.eye(k) - 1 / k)[0][:, : k - 1]
    z = _newton(Xf @ B, offset + Xf @ centre, y, w, np.zeros(k - 1), prec, 50)
    lam[:, face] = centre + z @ B.T
    return lam


def _objective(X, offset, y, w, lam, prec) -> np.ndarray:
    logits = lam @ X.T + offset
    ll = (w * (y * logits - np.logaddexp(0, logits))).sum(axis=1)
    return ll - 0.5 * prec * ((lam - 1 / X.shape[1]) ** 2).sum(axis=1)


def _fit_mixing_faces(
    X: np.ndarray, offset: np.ndarray, y: np.ndarray, w: np.ndarray, affine: bool, prec: float
) -> np.ndarray:
    """Exact λ ≥ 0 (and Σλ = 1 if ``affine``) by active sets: the concave optimum over the
    polytope is the unconstrained optimum of one face; take the best feasible face optimum.
    Faces are only solved for the models whose full-face solution is infeasible."""
    J = X.shape[1]
    best = _solve_face(X, offset, y, w, np.arange(J), affine, prec)
    todo = np.flatnonzero((best < -1e-12).any(axis=1))
    if todo.size == 0:
        return best
    yt, wt = y[todo], w[todo]
    score = np.full(todo.size, -np.inf)
    pick = np.zeros((todo.size, J))
    for size in range(1, J):
        for face in itertools.combinations(range(J), size):
            lam = _solve_face(X, offset, yt, wt, np.array(face), affine, prec)
            lam = np.where(np.abs(lam) < 1e-12, 0.0, lam)
            obj = np.where(
                (lam >= 0).all(axis=1), _objective(X, offset, yt, wt, lam, prec), -np.inf
            )
            better = obj > score
            score[better], pick[better] = obj[better], lam[better]
    best[todo] = pick
    return best


def _fit_mixing_bounded(
    X: np.ndarray, offset: np.ndarray, y: np.ndarray, w: np.ndarray, constraint: str, prec: float
) -> np.ndarray:
    """Simplex (softmax) or non-negative (exp) λ by L-BFGS: for many endpoints; slower."""
    J = X.shape[1]
    t = {
        k: torch.as_tensor(v, dtype=torch.float64) for k, v in dict(X=X, o=offset, y=y, w=w).items()
    }
    z = torch.zeros(y.shape[0], J, dtype=torch.float64, requires_grad=True)
    if constraint == "nonneg":
        with torch.no_grad():
            z.fill_(np.log(1 / J))

    def weights() -> torch.Tensor:
        return torch.softmax(z, dim=1) if constraint == "simplex" else torch.exp(z)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        lam = weights()
        logits = lam @ t["X"].T + t["o"]
        nll = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, t["y"], weight=t["w"], reduction="sum"
        )
        loss = nll + 0.5 * prec * ((lam - 1 / J) ** 2).sum()
        loss.backward()
        return loss

    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead
    opt = torch.optim.LBFGS(
        [z],
        lr=1,
        max_iter=200,
        tolerance_grad=1e-7,
        tolerance_change=1e-10,
        history_size=20,
        line_search_fn="strong_wolfe",
    )
    try:
        opt.step(closure)
    finally:
        torch.set_num_threads(previous)
    with torch.no_grad():
        return weights().numpy()
