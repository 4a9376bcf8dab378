"""Anchor extraction: each method's contract (size, weights, seeds) and the JSON format."""

from __future__ import annotations

import numpy as np
import pytest

from merge3.errors import DataError
from merge3.estimate.itembank import ItemBank
from merge3.estimate.responses import ResponseMatrix
from merge3.extract import METHODS, AnchorSet, extract, kmeans_anchors, stratified_anchors


@pytest.fixture(scope="module")
def sources():
    rng = np.random.default_rng(0)
    items = tuple(f"t{k}/q{i}" for k in range(2) for i in range(60))
    tasks = tuple(x.split("/")[0] for x in items)
    subjects = tuple("big" if int(x.split("q")[1]) < 45 else "small" for x in items)
    bank = ItemBank(
        "2pl", items, tasks, rng.lognormal(0, 0.3, (120, 2)), rng.normal(size=120), subjects
    )
    values = (rng.random((40, 120)) < 0.6).astype(float)
    return bank, ResponseMatrix(tuple(f"m{i}" for i in range(40)), items, tasks, values, subjects)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_gives_n_weighted_anchors_reproducibly(sources, method):
    bank, rm = sources
    a = extract(method, 8, seed=1, bank=bank, responses=rm)
    assert set(a.tasks) == {"t0", "t1"} and a.method == method
    for task, ta in a.tasks.items():
        assert len(ta.items) == len(set(ta.items)) == 8
        assert all(x.startswith(task + "/") for x in ta.items)
        np.testing.assert_allclose(ta.weights.sum(), 1)
        assert np.all(ta.weights > 0)
    again = extract(method, 8, seed=1, bank=bank, responses=rm)
    assert again.to_json() == a.to_json()
    if method == "irt-info":
        # A deterministic design given the models' abilities: the seed only draws the
        # population when there are no responses (then it comes from the prior).
        assert (
            extract(method, 8, seed=2, bank=bank, responses=rm).to_json()["tasks"]
            == (a.to_json()["tasks"])
        )
        return
    other = extract(method, 8, seed=2, bank=bank, responses=rm)
    assert other.to_json()["tasks"] != a.to_json()["tasks"]


def test_stratified_allocates_by_subject_share():
    ids = [f"q{i}" for i in range(100)]
    subjects = {x: ("a" if i < 75 else "b") for i, x in enumerate(ids)}
    a = stratified_anchors({"t": ids}, 8, 0, subjects).tasks["t"]
    n_a = sum(subjects[x] == "a" for x in a.items)
    assert n_a == 6  # 75% of 8
    w = dict(zip(a.items, a.weights, strict=True))
    np.testing.assert_allclose(sum(v for x, v in w.items() if subjects[x] == "a"), 0.75)


def test_kmeans_weight_is_cluster_share_and_anchor_is_nearest():
    feats = np.array([[0.0], [0.1], [0.2], [10.0]])
    a = kmeans_anchors({"t": (["a", "b", "c", "d"], feats)}, 2, 0, "irt-kmeans").tasks["t"]
    assert a.items == ("b", "d")
    np.testing.assert_allclose(a.weights, [0.75, 0.25])


def test_json_roundtrip_and_errors(tmp_path, sources):
    bank, rm = sources
    a = extract("irt-kmeans", 5, 0, bank=bank)
    a.save(tmp_path / "a.json")
    b = AnchorSet.load(tmp_path / "a.json")
    assert b.to_json() == a.to_json()
    with pytest.raises(DataError, match="'t0': 61 anchors asked for but it has only 60"):
        extract("random", 61, 0, bank=bank)
    with pytest.raises(DataError, match="needs an IRT item file"):
        extract("irt-kmeans", 5, 0, responses=rm)
    with pytest.raises(DataError, match="needs a response matrix"):
        extract("correctness-kmeans", 5, 0, bank=bank)
    with pytest.raises(DataError, match="unknown extraction method"):
        extract("best", 5, 0, bank=bank)


def test_information_anchors_prefer_discriminating_items_near_the_models():
    # Half the items discriminate (α = 2) and sit where the models are (β ≈ 0); the rest are
    # flat (α = 0.2) or far too easy (β = −6). The design must take its anchors from the first.
    rng = np.random.default_rng(0)
    n_items = 80
    items = tuple(f"t/q{i}" for i in range(n_items))
    alpha = np.full((n_items, 1), 2.0)
    beta = rng.normal(0, 0.5, n_items)
    alpha[40:60] = 0.2
    beta[60:] = -6.0
    bank = ItemBank("2pl", items, ("t",) * n_items, alpha, beta)
    a = extract("irt-info", 10, seed=0, bank=bank)
    picked = [int(x.split("q")[1]) for x in a.tasks["t"].items]
    assert all(i < 40 for i in picked), picked
    # Greedy D-optimality spreads difficulties: not ten copies of the single best β.
    assert np.ptp(beta[picked]) > 0.5
    np.testing.assert_allclose(a.tasks["t"].weights, 0.1)
    with pytest.raises(DataError, match="irt-info needs an IRT item file"):
        extract(
            "irt-info",
            3,
            responses=ResponseMatrix(("m",), items, ("t",) * n_items, np.ones((1, n_items))),
        )
