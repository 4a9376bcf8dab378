"""The six estimators against known truth (scaled down), their algebra, and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from merge3.errors import ConfigError, DataError
from merge3.estimate import (
    ESTIMATORS,
    GMPIRTEstimator,
    GPIRTEstimator,
    IRTEstimator,
    MeanEstimator,
    MPIRTEstimator,
    PIRTEstimator,
    TwoPL,
    endpoint_abilities,
)
from merge3.estimate.estimators import mix_weight
from merge3.estimate.synthetic import make_world, merges
from merge3.extract import AnchorSet, TaskAnchors, random_anchors


def _correct(rm, anchors):
    return {t: rm.columns(a.items) for t, a in anchors.tasks.items()}


def _mae(est, truth):
    return float(np.mean([np.abs(est[t] - truth[t]).mean() for t in truth]))


@pytest.fixture(scope="module")
def setting():
    """Sharp regime, 4 tasks × 150 items, 2PL fitted on 200 reference models; merges of 3."""
    world = make_world(items_per_task=150, regime="sharp", seed=0)
    rng = np.random.default_rng(1)
    ref = world.responses(rng.normal(size=(200, 2)), rng, "ref")
    bank = TwoPL(dims=2, steps=300, seed=0).fit(ref).item_bank()
    groups = []
    for _ in range(3):
        ends = rng.normal(size=(3, 2))
        test, _ = merges(ends, 30, rng, sizes=(3,))
        val, _ = merges(ends, 15, rng, sizes=(3,))
        groups.append(
            dict(
                ends=endpoint_abilities(bank, world.responses(ends, rng, "end")),
                test=world.responses(test, rng, "m"),
                truth=world.true_accuracy(test),
                val=world.responses(val, rng, "v"),
            )
        )
    return world, bank, groups


def test_gmpirt_beats_mean_on_merges_scaled_down(setting):
    # Scaled-down version of the target (n = 20: gmpirt ≤ 0.03 and ≤ ½ of mean's MAE).
    world, bank, groups = setting
    errs = {"mean": [], "mpirt": [], "gmpirt": [], "gmpirt-0.5": []}
    for seed in range(2):
        anchors = random_anchors(bank.items_by_task(), 20, seed)
        for g in groups:
            mp = MPIRTEstimator(anchors, bank, g["ends"])
            gm = GMPIRTEstimator(anchors, bank, g["ends"], lam=None)
            gm.calibrate(_correct(g["val"], anchors), g["val"].true_accuracy())
            c = _correct(g["test"], anchors)
            for name, est in [
                ("mean", MeanEstimator(anchors)),
                ("mpirt", mp),
                ("gmpirt", gm),
                ("gmpirt-0.5", GMPIRTEstimator(anchors, bank, g["ends"])),
            ]:
                errs[name].append(_mae(est.estimate(c), g["truth"]))
    mae = {k: float(np.mean(v)) for k, v in errs.items()}
    assert mae["gmpirt"] <= 0.5 * mae["mean"], mae
    assert mae["gmpirt"] <= 0.03, mae
    assert mae["mpirt"] < mae["gmpirt-0.5"] < mae["mean"], mae


def test_irt_family_beats_mean_on_reference_like_models(setting):
    world, bank, _ = setting
    rng = np.random.default_rng(5)
    theta = rng.normal(size=(60, 2))
    rm, truth = world.responses(theta, rng, "h"), world.true_accuracy(theta)
    anchors = random_anchors(bank.items_by_task(), 15, 0)
    c = _correct(rm, anchors)
    mean = _mae(MeanEstimator(anchors).estimate(c), truth)
    for cls in (IRTEstimator, PIRTEstimator):
        assert _mae(cls(anchors, bank).estimate(c), truth) < 0.7 * mean
    gp = GPIRTEstimator(anchors, bank, lam=None).calibrate(c, rm.true_accuracy(), "tinybenchmarks")
    assert all(0 < v < 1 for v in gp.lam_.values())
    assert _mae(gp.estimate(c), truth) < mean


def test_pirt_with_every_item_as_anchor_is_the_observed_mean(setting):
    world, bank, _ = setting
    rng = np.random.default_rng(0)
    rm = world.responses(rng.normal(size=(5, 2)), rng, "x")
    anchors = random_anchors(bank.items_by_task(), 150, 0)
    est = PIRTEstimator(anchors, bank).estimate(_correct(rm, anchors))
    for t, acc in rm.true_accuracy().items():
        np.testing.assert_allclose(est[t], acc)


def test_mixed_estimators_interpolate(setting):
    world, bank, groups = setting
    anchors = random_anchors(bank.items_by_task(), 10, 0)
    c = _correct(groups[0]["test"], anchors)
    mean = MeanEstimator(anchors).estimate(c)
    pirt = PIRTEstimator(anchors, bank).estimate(c)
    mp = MPIRTEstimator(anchors, bank, groups[0]["ends"]).estimate(c)
    for t in mean:
        np.testing.assert_allclose(GPIRTEstimator(anchors, bank, lam=1).estimate(c)[t], mean[t])
        np.testing.assert_allclose(GPIRTEstimator(anchors, bank, lam=0).estimate(c)[t], pirt[t])
        half = GMPIRTEstimator(anchors, bank, groups[0]["ends"]).estimate(c)[t]
        np.testing.assert_allclose(half, (mean[t] + mp[t]) / 2)


def test_mix_weight_rules():
    rng = np.random.default_rng(0)
    e_mean = rng.normal(0, 0.08, 500)
    e_irt = 0.5 * e_mean + rng.normal(0, 0.01, 500)  # correlated, smaller
    assert mix_weight(e_irt, e_mean) < 0.05  # least squares: the mean adds nothing
    assert 0.15 < mix_weight(e_irt, e_mean, "tinybenchmarks") < 0.3
    with pytest.raises(ConfigError):
        mix_weight(e_irt, e_mean, "magic")


def test_registry_and_estimate_is_cheap(setting):
    import time

    _, bank, groups = setting
    assert set(ESTIMATORS) == {"mean", "irt", "pirt", "gpirt", "mpirt", "gmpirt"}
    anchors = random_anchors(bank.items_by_task(), 25, 0)
    est = GMPIRTEstimator(anchors, bank, groups[0]["ends"])
    c = {t: np.tile(v, (4, 1)) for t, v in _correct(groups[0]["test"], anchors).items()}
    t0 = time.perf_counter()
    out = est.estimate(c)
    assert time.perf_counter() - t0 < 1.0
    assert all(v.shape == (120,) and np.all((v >= 0) & (v <= 1)) for v in out.values())


def test_bad_input_is_a_clear_error(setting):
    _, bank, groups = setting
    anchors = random_anchors(bank.items_by_task(), 5, 0)
    foreign = AnchorSet({"task0": TaskAnchors(("task0/q1", "other/q9"), np.array([0.5, 0.5]))})
    with pytest.raises(DataError, match="'other/q9' is not in the IRT item bank"):
        IRTEstimator(foreign, bank)
    wrong = AnchorSet({"task0": TaskAnchors(("task1/q1",), np.array([1.0]))})
    with pytest.raises(DataError, match="belongs to task 'task1'"):
        PIRTEstimator(wrong, bank)
    with pytest.raises(ConfigError, match="endpoint"):
        MPIRTEstimator(anchors, bank, None)
    with pytest.raises(ConfigError, match="give the mix"):
        GPIRTEstimator(anchors, bank, lam=None).estimate({})
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        GPIRTEstimator(anchors, bank, lam=1.5)
    est = IRTEstimator(anchors, bank)
    with pytest.raises(DataError, match="no anchor correctness given for task 'task0'"):
        est.estimate({})
    nan = {t: np.full((1, 5), np.nan) for t in anchors.tasks}
    with pytest.raises(DataError, match="NaN-only"):
        est.estimate(nan)


def test_posterior_mpirt_beats_map_at_few_anchors_with_oracle_items():
    # Bayes: with the true items and endpoints, the posterior mean under the uniform prior the
    # merges were drawn from can only beat the MAP point on average; at 10 anchors it must.
    world = make_world(items_per_task=150, regime="realistic", seed=3)
    rng = np.random.default_rng(4)
    bank = world.bank()
    anchors = random_anchors(bank.items_by_task(), 10, seed=0)
    err = {"map": [], "posterior": []}
    for _ in range(4):
        ends = rng.normal(size=(3, 2))
        theta, _ = merges(ends, 60, rng, sizes=(3,))
        truth, c = world.true_accuracy(theta), _correct(world.responses(theta, rng, "m"), anchors)
        for how in err:
            est = MPIRTEstimator(anchors, bank, ends, inference=how)
            err[how].append(_mae(est.estimate(c), truth))
    assert np.mean(err["posterior"]) < 0.95 * np.mean(err["map"]), err


def test_posterior_weights_are_a_distribution_and_seeded(setting):
    world, bank, groups = setting
    anchors = random_anchors(bank.items_by_task(), 20, seed=1)
    g = groups[0]
    c = _correct(g["test"], anchors)
    a = MPIRTEstimator(anchors, bank, g["ends"], inference="posterior", samples=512, seed=7)
    b = MPIRTEstimator(anchors, bank, g["ends"], inference="posterior", samples=512, seed=7)
    w = a.posterior_weights(c)
    assert w.shape == (30, 512) and np.allclose(w.sum(1), 1) and (w >= 0).all()
    lam = a.mixing(c)
    assert np.allclose(lam.sum(1), 1) and (lam >= 0).all()
    for t, v in a.estimate(c).items():
        np.testing.assert_array_equal(v, b.estimate(c)[t])
        assert ((v >= 0) & (v <= 1)).all()
    # With a very informative likelihood the posterior concentrates where MAP is.
    many = random_anchors(bank.items_by_task(), 150, seed=1)
    cm = _correct(g["test"], many)
    post = MPIRTEstimator(many, bank, g["ends"], inference="posterior", seed=0).estimate(cm)
    point = MPIRTEstimator(many, bank, g["ends"]).estimate(cm)
    assert _mae(post, point) < 0.01


def test_posterior_inference_needs_the_simplex(setting):
    world, bank, groups = setting
    anchors = random_anchors(bank.items_by_task(), 5, seed=0)
    with pytest.raises(ConfigError, match="simplex"):
        MPIRTEstimator(anchors, bank, groups[0]["ends"], "affine", inference="posterior")
    with pytest.raises(ConfigError, match="inference"):
        MPIRTEstimator(anchors, bank, groups[0]["ends"], inference="laplace")
