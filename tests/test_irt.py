"""IRT in Pyro: recovery of known parameters (scaled down), determinism, abilities, IO."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy.linalg import orthogonal_procrustes

from merge3.errors import ConfigError, DataError
from merge3.estimate.ability import _fit_mixing_bounded, _objective, fit_abilities, fit_mixing
from merge3.estimate.irt import OnePL, TwoPL
from merge3.estimate.itembank import ItemBank
from merge3.estimate.synthetic import make_world, merges


def aligned_corr(est: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Per-dimension corr after whitening θ̂ and the best rotation/reflection onto θ."""
    est = est - est.mean(0)
    est = est @ np.linalg.cholesky(np.linalg.inv(np.cov(est.T)))
    rot, _ = orthogonal_procrustes(est, true - true.mean(0))
    est = est @ rot
    return np.array([np.corrcoef(est[:, d], true[:, d])[0, 1] for d in range(true.shape[1])])


@pytest.fixture(scope="module")
def world_fit():
    world = make_world(items_per_task=100, seed=1)
    rng = np.random.default_rng(2)
    theta = rng.normal(size=(200, 2))
    rm = world.responses(theta, rng, "ref")
    return world, theta, rm, TwoPL(dims=2, steps=300, seed=0).fit(rm)


def test_2pl_recovers_known_abilities_and_difficulties(world_fit):
    # Scaled-down version of the 300 × 2000 claim (corr θ ≥ 0.95, β ≥ 0.9).
    world, theta, _, fit = world_fit
    assert aligned_corr(fit.theta_, theta).min() >= 0.93
    assert np.corrcoef(fit.beta_, world.beta)[0, 1] >= 0.93
    assert np.all(fit.alpha_ > 0)
    assert fit.loss_curve_[-1] < fit.loss_curve_[0]


def test_fit_is_deterministic_for_a_seed(world_fit):
    _, _, rm, fit = world_fit
    sub = rm.rows(rm.models[:60])
    a, b = TwoPL(dims=2, steps=40, seed=3).fit(sub), TwoPL(dims=2, steps=40, seed=3).fit(sub)
    np.testing.assert_array_equal(a.beta_, b.beta_)
    c = TwoPL(dims=2, steps=40, seed=4).fit(sub)
    assert not np.array_equal(a.beta_, c.beta_)


def test_1pl_and_missing_values():
    rng = np.random.default_rng(0)
    theta, beta = rng.normal(size=150), rng.normal(size=80)
    Y = (rng.random((150, 80)) < 1 / (1 + np.exp(-(theta[:, None] - beta)))).astype(float)
    Y[rng.random(Y.shape) < 0.2] = np.nan  # a fifth missing: masked, not imputed
    fit = OnePL(steps=300).fit(Y)
    assert np.all(fit.alpha_ == 1) and fit.theta_.shape == (150, 1)
    assert np.corrcoef(fit.beta_, beta)[0, 1] > 0.95
    assert np.corrcoef(fit.theta_[:, 0], theta)[0, 1] > 0.9
    with pytest.raises(ConfigError, match="one dimension"):
        OnePL(dims=2).fit(Y)


def test_binary_model_rejects_scores_but_soft_accepts():
    Y = np.array([[1, 0.5], [0, 1]])
    with pytest.raises(DataError, match="not 0/1"):
        TwoPL(steps=5).fit(Y)
    assert TwoPL(steps=5, binary=False).fit(Y).beta_.shape == (2,)


def test_hierarchical_prior_fits():
    rng = np.random.default_rng(0)
    Y = (rng.random((40, 30)) < 0.6).astype(float)
    fit = TwoPL(steps=50, hierarchical=True).fit(Y)
    assert np.isfinite(fit.beta_).all()


def test_heldout_loglik_beats_a_constant(world_fit):
    world, _, _, fit = world_fit
    rng = np.random.default_rng(9)
    Y = world.sample(rng.normal(size=(50, 2)), rng)
    theta = fit.abilities(Y)
    p = np.nanmean(Y)
    const = np.mean(Y * np.log(p) + (1 - Y) * np.log(1 - p))
    assert fit.log_likelihood(Y, theta) > const + 0.05


def test_abilities_batched_equals_one_by_one_and_is_fast():
    world = make_world(items_per_task=25, seed=0)
    rng = np.random.default_rng(1)
    theta = rng.normal(size=(1000, 2))
    Y = world.sample(theta, rng)
    Y[0, :50] = np.nan
    t0 = time.perf_counter()
    batch = fit_abilities(world.alpha, world.beta, Y)
    elapsed = time.perf_counter() - t0
    single = np.vstack([fit_abilities(world.alpha, world.beta, Y[k : k + 1]) for k in (0, 1, 2)])
    np.testing.assert_allclose(batch[:3], single, atol=1e-8)
    assert np.corrcoef(batch.sum(1), theta.sum(1))[0, 1] > 0.85
    assert elapsed < 3.0  # 1000 models × 100 items; the benchmark holds the 1 s target
    with pytest.raises(DataError, match="NaN-only"):
        fit_abilities(world.alpha, world.beta, np.full((1, 100), np.nan))


@pytest.mark.parametrize("constraint", ["simplex", "nonneg"])
def test_mixing_active_set_is_exact_and_feasible(constraint):
    world = make_world(items_per_task=25, seed=1)
    rng = np.random.default_rng(0)
    ends = rng.normal(size=(3, 2))
    theta, _ = merges(ends, 15, rng, sizes=(2,))
    Y = world.sample(theta, rng)
    lam = fit_mixing(world.alpha, world.beta, ends, Y, constraint)
    assert np.all(lam >= 0)
    if constraint == "simplex":
        np.testing.assert_allclose(lam.sum(1), 1)
    X, off, w = world.alpha @ ends.T, -world.beta, np.ones_like(Y)
    ref = _fit_mixing_bounded(X, off, Y, w, constraint, 1.0)
    gap = _objective(X, off, Y, w, lam, 1.0) - _objective(X, off, Y, w, ref, 1.0)
    assert gap.min() > -1e-6  # never worse than a generic optimiser


def test_mixing_recovers_weights_from_many_items():
    world = make_world(items_per_task=500, seed=1)
    rng = np.random.default_rng(0)
    ends = np.array([[1.5, -1.0], [-1.0, 1.5]])
    theta, lam_true = merges(ends, 30, rng, sizes=(2,))
    Y = world.sample(theta, rng)
    for c in ("simplex", "affine"):
        lam = fit_mixing(world.alpha, world.beta, ends, Y, c)
        assert np.abs(lam - lam_true).mean() < 0.08
    free = fit_mixing(world.alpha, world.beta, ends, Y, "free")
    assert np.abs(free @ ends - theta).mean() < 0.25
    with pytest.raises(ConfigError, match="unknown mixing constraint"):
        fit_mixing(world.alpha, world.beta, ends, Y, "box")


@pytest.mark.parametrize("suffix", [".json", ".safetensors"])
def test_item_bank_roundtrip(tmp_path, world_fit, suffix):
    _, _, rm, fit = world_fit
    bank = fit.item_bank()
    bank.save(tmp_path / f"items{suffix}")
    back = ItemBank.load(tmp_path / f"items{suffix}")
    assert back.items == rm.items and back.tasks == rm.tasks and back.kind == "2pl"
    np.testing.assert_allclose(back.alpha, fit.alpha_)
    np.testing.assert_allclose(back.beta, fit.beta_)
    np.testing.assert_allclose(back.abilities["ref3"], fit.theta_[3])


def test_item_bank_bad_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        ItemBank.load(tmp_path / "x.json")
    (tmp_path / "x.json").write_text('{"kind": "2pl"}')
    with pytest.raises(DataError, match="not an IRT item file"):
        ItemBank.load(tmp_path / "x.json")
