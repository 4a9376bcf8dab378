"""Fused per-element merge kernels: one pass over the task vectors per candidate.

A merge written as whole-tensor torch ops makes a temporary for every step (|τ|, the mask, the
weighted delta, the sign vote, ...), so TIES costs ~15 passes over memory. Here every kernel is a
function of *one element position* across the T endpoints, with the T loop unrolled in Python,
so that

* ``torch.compile`` fuses it into a single loop that reads each task vector once and writes the
  output once (used for large tensors; set ``MERGE3_COMPILE=0`` to disable, ``1`` to force);
* without compilation it runs eagerly over cache-sized chunks, so temporaries stay small and no
  second full model is ever allocated.

Per-candidate scalars (weights, thresholds, scales) are passed as small tensors, never as Python
floats, so a new candidate never triggers a recompilation.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from typing import Any

import torch

LOG = logging.getLogger(__name__)

CHUNK = 1 << 18
"""Elements per eager chunk: T task-vector slices plus temporaries fit in L2/L3."""

COMPILE_MIN = 1 << 16
"""Tensors smaller than this run eagerly even when compilation is on (not worth a kernel)."""

_compiled: dict[str, Callable[..., None]] = {}
_compile_broken = False


def compile_mode() -> str:
    """``MERGE3_COMPILE``: ``auto`` (default), ``1`` (always) or ``0`` (never)."""
    return os.environ.get("MERGE3_COMPILE", "auto").strip().lower()


def _want_compile(numel: int, device: torch.device) -> bool:
    mode = compile_mode()
    if _compile_broken or mode in ("0", "false", "no", "off"):
        return False
    if mode in ("1", "true", "yes", "on"):
        return True
    if numel < COMPILE_MIN:
        return False
    if device.type == "cpu":
        return shutil.which(os.environ.get("CXX", "g++")) is not None
    return device.type == "cuda"


def will_compile(numel: int, device: torch.device) -> bool:
    """Whether :func:`launch` would use the compiled kernel for a tensor of this size."""
    return _want_compile(numel, device)


def accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    """Half types are merged in fp32 and rounded once; fp64 stays fp64."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _into(kernel: Callable[..., torch.Tensor]) -> Callable[..., None]:
    def run(out: torch.Tensor, *args: Any, **flags: Any) -> None:
        out.copy_(kernel(*args, **flags))

    run.__name__ = f"{kernel.__name__}_into"
    return run


def launch(
    kernel: Callable[..., torch.Tensor],
    out: torch.Tensor,
    elementwise: tuple[torch.Tensor | None, ...],
    scalars: tuple[torch.Tensor, ...],
    **flags: Any,
) -> None:
    """Run ``kernel`` over flattened tensors and write the result into ``out``.

    ``elementwise`` holds per-element inputs: 1-D of length n (the base) or (T, n) stacks (task
    vectors, random keys); ``scalars`` small tensors that are passed whole.
    """
    global _compile_broken
    n = out.numel()
    flat = tuple(
        None
        if x is None
        else (
            x.reshape(-1)
            if x.dim() == out.dim() and x.shape == out.shape
            else x.reshape(x.shape[0], -1)
        )
        for x in elementwise
    )
    out_flat = out.view(-1) if out.is_contiguous() else None
    if out_flat is not None and _want_compile(n, out.device):
        fn = _compiled.get(kernel.__name__)
        if fn is None:
            import torch._dynamo

            cfg = torch._dynamo.config
            cfg.cache_size_limit = max(cfg.cache_size_limit, 64)
            cfg.accumulated_cache_size_limit = max(cfg.accumulated_cache_size_limit, 512)
            fn = _compiled[kernel.__name__] = torch.compile(_into(kernel), dynamic=True)
        try:
            fn(out_flat, *flat, *scalars, **flags)
            return
        except Exception as exc:  # a missing compiler or an inductor bug: fall back, once
            _compile_broken = True
            LOG.warning("torch.compile failed (%s); merging eagerly from now on", exc)
    target = (
        out_flat if out_flat is not None else torch.empty(n, dtype=out.dtype, device=out.device)
    )
    for start in range(0, n, CHUNK):
        stop = min(n, start + CHUNK)
        parts = tuple(
            None if x is None else (x[start:stop] if x.dim() == 1 else x[:, start:stop])
            for x in flat
        )
        target[start:stop].copy_(kernel(*parts, *scalars, **flags))
    if out_flat is None:
        out.copy_(target.view_as(out))


# --------------------------------------------------------------------------- kernels
# Each takes per-element slices first, then the per-candidate scalar tensors.


def linear_kernel(
    base: torch.Tensor, tv: torch.Tensor, coef: torch.Tensor, base_coef: torch.Tensor
) -> torch.Tensor:
    """``base_coef·θ₀ + Σ_t coef_t τ_t``."""
    acc = accumulate_dtype(base.dtype)
    c = coef.to(acc)
    res = base.to(acc) * base_coef.to(acc)
    for t in range(tv.shape[0]):
        res = res + tv[t].to(acc) * c[t]
    return res


def _combine(
    base: torch.Tensor,
    deltas: list[torch.Tensor],
    weight: torch.Tensor,
    lam: torch.Tensor,
    consensus: str | None,
    normalize: bool,
) -> torch.Tensor:
    """Sign election and disjoint (weighted) mean of the agreeing deltas; plain sum if no vote.

    Without a vote, normalisation and λ are already folded into the deltas' coefficients.
    """
    acc = deltas[0].dtype
    if consensus is None:
        total = deltas[0]
        for d in deltas[1:]:
            total = total + d
        return base.to(acc) + total
    if consensus == "sum":
        vote = deltas[0]
        for d in deltas[1:]:
            vote = vote + d
    else:  # count
        vote = torch.sign(deltas[0])
        for d in deltas[1:]:
            vote = vote + torch.sign(d)
    positive = vote >= 0
    num = torch.zeros_like(deltas[0])
    den = torch.zeros_like(deltas[0])
    w = weight.to(acc)
    for t, d in enumerate(deltas):
        agree = torch.where(positive, d > 0, d < 0)
        num = num + torch.where(agree, d, 0.0)
        if normalize:
            den = den + torch.where(agree, w[t], 0.0)
    if normalize:
        num = num / torch.where(den == 0, 1.0, den)
    return base.to(acc) + num * lam.to(acc)


def trim_kernel(
    base: torch.Tensor,
    tv: torch.Tensor,
    threshold: torch.Tensor,
    coef: torch.Tensor,
    weight: torch.Tensor,
    lam: torch.Tensor,
    *,
    consensus: str | None,
    normalize: bool,
) -> torch.Tensor:
    """Magnitude trim (keep ``|τ_t| ≥ threshold_t``), then vote and merge (TIES)."""
    acc = accumulate_dtype(base.dtype)
    c = coef.to(acc)
    deltas = [
        torch.where(tv[t].abs() >= threshold[t], tv[t].to(acc) * c[t], 0.0)
        for t in range(tv.shape[0])
    ]
    return _combine(base, deltas, weight, lam, consensus, normalize)


def drop_kernel(
    base: torch.Tensor,
    tv: torch.Tensor,
    keys: torch.Tensor,
    level: torch.Tensor,
    coef: torch.Tensor,
    weight: torch.Tensor,
    lam: torch.Tensor,
    *,
    consensus: str | None,
    normalize: bool,
) -> torch.Tensor:
    """Random drop (keep ``key_t < level_t``, a fixed float16 uniform field), then vote and
    merge."""
    acc = accumulate_dtype(base.dtype)
    c = coef.to(acc)
    deltas = [
        torch.where(keys[t] < level[t], tv[t].to(acc) * c[t], 0.0) for t in range(tv.shape[0])
    ]
    return _combine(base, deltas, weight, lam, consensus, normalize)
