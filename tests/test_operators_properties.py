"""Properties every operator must have, on random tensors (hypothesis, modest sizes)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from merge3.errors import ConfigError
from merge3.merging import OPERATORS, get_operator, kernels
from merge3.merging.tsv import polar, tsv_blocks

ALL = sorted(OPERATORS)
SHAPES = st.sampled_from([(7,), (5, 4), (12, 9), (3, 16)])
FAST = settings(max_examples=15, deadline=None)


def merged(name: str, base, tv, values=None, **ctor) -> torch.Tensor:
    op = type(get_operator(name))(**ctor)
    params = op.resolve(values or {}, tv.shape[0])
    out = torch.empty_like(base)
    op.merge(out, base, tv, params, op.prepare(base, tv, name="w"))
    return out


def random_pair(shape, n_tasks, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(shape, generator=g).to(dtype)
    tv = (torch.randn((n_tasks, *shape), generator=g) * 0.1).to(dtype)
    return base, tv


@FAST
@given(shape=SHAPES, seed=st.integers(0, 10_000))
def test_one_model_with_weight_one_gives_that_model(shape, seed):
    base, tv = random_pair(shape, 1, seed)
    for name in ("linear", "task_arithmetic", "ties", "dare_linear", "dare_ties"):
        out = merged(name, base, tv, {"weight": [1.0]})
        torch.testing.assert_close(out, base + tv[0], msg=name)


@FAST
@given(shape=SHAPES, seed=st.integers(0, 10_000), n=st.integers(1, 4))
def test_endpoints_equal_to_base_give_base(shape, seed, n):
    base, tv = random_pair(shape, n, seed)
    tv.zero_()
    for name in ALL:
        values = {"density": 0.5} if name in ("ties", "dare_linear", "dare_ties") else {}
        torch.testing.assert_close(merged(name, base, tv, values), base, msg=name)


@FAST
@given(shape=SHAPES, seed=st.integers(0, 10_000))
def test_ties_density_one_single_model(shape, seed):
    base, tv = random_pair(shape, 1, seed)
    out = merged("ties", base, tv, {"density": 1.0, "weight": [0.7]})
    torch.testing.assert_close(out, base + tv[0])  # normalised: the weight cancels


def test_dare_inverse_density_is_unbiased():
    base, tv = random_pair((64, 64), 2, 3)
    acc = torch.zeros_like(base)
    seeds = 200
    for seed in range(seeds):
        acc += merged(
            "dare_linear",
            base,
            tv,
            {"density": 0.4, "rescale": "inverse_density", "weight": [0.5, 0.8]},
            seed=seed,
        )
    expect = base + 0.5 * tv[0] + 0.8 * tv[1]
    err = (acc / seeds - expect).abs().mean() / (expect - base).abs().mean()
    assert err < 0.1  # sampling error of 200 draws; a biased rescale is off by > 50 %


def test_dare_same_seed_same_mask_and_density_monotone():
    base, tv = random_pair((40, 40), 1, 1)
    a = merged("dare_linear", base, tv, {"density": 0.3, "rescale": "none"})
    b = merged("dare_linear", base, tv, {"density": 0.3, "rescale": "none"})
    c = merged("dare_linear", base, tv, {"density": 0.6, "rescale": "none"})
    torch.testing.assert_close(a, b)
    kept_a, kept_c = a != base, c != base
    assert (kept_a & ~kept_c).sum() == 0  # common random numbers: masks are nested


@FAST
@given(shape=st.sampled_from([(6, 5), (8, 8), (4, 10)]), seed=st.integers(0, 10_000))
def test_tsv_single_task_full_rank_reconstructs(shape, seed):
    base, tv = random_pair(shape, 1, seed, torch.float64)
    out = merged("tsv", base, tv, fraction=1.0)
    torch.testing.assert_close(out, base + tv[0])


@FAST
@given(shape=st.sampled_from([(12, 9), (9, 12), (16, 16)]), seed=st.integers(0, 10_000))
def test_polar_factor_is_orthonormal(shape, seed):
    _, tv = random_pair(shape, 3, seed, torch.float64)
    u = torch.cat([torch.linalg.svd(tv[t])[0][:, :3] for t in range(3)], dim=1)
    up = polar(u)
    torch.testing.assert_close(up.T @ up, torch.eye(up.shape[1], dtype=torch.float64))
    blocks = tsv_blocks(tv)
    assert blocks.shape == tv.shape


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ALL)
def test_no_nan_or_inf_in_half_and_single(name, dtype):
    base, tv = random_pair((33, 17), 3, 5, dtype)
    values = {"density": [0.3, 0.6, 0.9]} if name in ("ties", "dare_linear", "dare_ties") else {}
    values["weight"] = [0.2, 0.5, 0.3]
    out = merged(name, base, tv, values)
    assert out.dtype == dtype
    assert torch.isfinite(out).all()
    ref = merged(name, base.double(), tv.double(), values)
    tol = {torch.float32: 1e-5, torch.float16: 2e-2, torch.bfloat16: 5e-2}[dtype]
    if name not in ("ties", "dare_ties"):  # sign votes can flip on rounding ties
        torch.testing.assert_close(out.double(), ref, atol=tol, rtol=tol)


@FAST
@given(seed=st.integers(0, 10_000), perm=st.permutations([0, 1, 2]))
def test_permuting_endpoints_changes_nothing(seed, perm):
    base, tv = random_pair((11, 13), 3, seed, torch.float64)
    w = torch.tensor([0.2, 0.7, 0.4], dtype=torch.float64)
    d = torch.tensor([0.3, 0.8, 0.5], dtype=torch.float64)
    idx = list(perm)
    for name in ("linear", "task_arithmetic", "ties", "tsv", "tsv_compress"):
        values = {"weight": w}
        if name == "ties":
            values["density"] = d
        a = merged(name, base, tv, values)
        values_p = {k: v[idx] for k, v in values.items()}
        b = merged(name, base, tv[idx], values_p)
        torch.testing.assert_close(a, b, msg=name)


def test_eager_chunks_equal_whole(monkeypatch):
    """Chunked eager merging (the fallback) equals a single chunk."""
    base, tv = random_pair((300, 70), 3, 9)
    values = {"density": [0.3, 0.5, 0.7], "weight": [0.4, 0.3, 0.9]}
    monkeypatch.setenv("MERGE3_COMPILE", "0")
    whole = merged("ties", base, tv, values)
    monkeypatch.setattr(kernels, "CHUNK", 1000)
    torch.testing.assert_close(merged("ties", base, tv, values), whole)
    torch.testing.assert_close(
        merged("dare_ties", base, tv, values), merged("dare_ties", base, tv, values)
    )


@pytest.mark.parametrize(
    "values, needle",
    [
        ({"density": 0.0}, "density"),
        ({"density": 1.5}, "density"),
        ({"density": [0.5, float("nan"), 0.5]}, "density"),
        ({"weight": [0.5, -0.1, 0.5]}, "weight"),
        ({"weight": [0.5, float("nan"), 0.5]}, "weight"),
        ({"consensus": "max"}, "consensus"),
        ({"weight": [0.5, 0.5]}, "3 values"),
        ({"lambda": float("inf")}, "lambda"),
        ({"dens": 0.5}, "dens"),
    ],
)
def test_bad_parameters_are_clear_errors(values, needle):
    with pytest.raises(ConfigError, match=needle):
        get_operator("ties").resolve(values, 3)


def test_task_arithmetic_allows_negative_weights():
    params = get_operator("task_arithmetic").resolve({"weight": [-1.0, 0.5, 0.5]}, 3)
    assert params["weight"][0] == -1.0


def test_compiled_kernel_equals_eager(monkeypatch):
    """The fused torch.compile kernel (used for large tensors) is the eager computation."""
    base, tv = random_pair((64, 48), 3, 11)
    values = {"density": [0.2, 0.5, 0.9], "weight": [0.3, 0.5, 0.9]}
    monkeypatch.setenv("MERGE3_COMPILE", "0")
    eager = merged("ties", base, tv, values)
    monkeypatch.setenv("MERGE3_COMPILE", "1")
    compiled = merged("ties", base, tv, values)
    assert not kernels._compile_broken, "torch.compile failed; merging fell back to eager"
    torch.testing.assert_close(compiled, eager)
