"""Weighted averaging of whole models, and task arithmetic (Ilharco et al., ICLR 2023)."""

from __future__ import annotations

from typing import Any

import torch

from merge3.merging import kernels
from merge3.merging.registry import LAMBDA, WEIGHT, MergeOperator, Parameter, ParamValues, register


def weighted_sum_into(
    out: torch.Tensor,
    base: torch.Tensor,
    task_vectors: torch.Tensor,
    coefficients: torch.Tensor,
    base_coefficient: float = 1.0,
) -> None:
    """``out = b·base + Σ_t c_t τ_t`` in one pass over memory.

    A fused kernel (or ``addmv`` when base, task vectors and output share a full-precision dtype)
    reads the T task vectors and the base once and writes ``out`` once, which is the physical
    floor of a linear merge; the naive ``base + (c[:, None] * τ).sum(0)`` allocates a T-times
    larger temporary. Half types are accumulated in fp32 and rounded once.
    """
    same = out.dtype == base.dtype == task_vectors.dtype
    if (
        same
        and out.dtype in (torch.float32, torch.float64)
        and out.is_contiguous()
        and not kernels.will_compile(out.numel(), out.device)
    ):
        c = coefficients.to(device=task_vectors.device, dtype=task_vectors.dtype)
        flat_tau = task_vectors.reshape(task_vectors.shape[0], -1)
        torch.addmv(base.reshape(-1), flat_tau.t(), c, beta=base_coefficient, out=out.view(-1))
        return
    acc = kernels.accumulate_dtype(base.dtype)
    c = coefficients.to(device=base.device, dtype=acc)
    b = torch.tensor([base_coefficient], dtype=acc, device=base.device)
    kernels.launch(kernels.linear_kernel, out, (base, task_vectors), (c, b))


@register
class TaskArithmetic(MergeOperator):
    """θ = θ₀ + λ Σ_t w_t τ_t; with ``normalize`` the weights are divided by Σ_t w_t."""

    name = "task_arithmetic"
    parameters = (
        WEIGHT,
        LAMBDA,
        Parameter("normalize", False),
    )

    def merge(
        self,
        out: torch.Tensor,
        base: torch.Tensor,
        task_vectors: torch.Tensor,
        params: ParamValues,
        prepared: Any = None,
    ) -> None:
        weights = params["weight"]
        if params["normalize"]:
            total = float(weights.sum())
            weights = weights / total if total != 0 else weights
        weighted_sum_into(out, base, task_vectors, weights * float(params["lambda"]))


@register
class Linear(MergeOperator):
    """θ = Σ_t w_t θ_t over the endpoints (mergekit's ``linear``; the base gets no weight).

    Computed as θ₀ + Σ_t w_t τ_t + (Σ_t w_t − 1) θ₀ so it reuses the resident task vectors; with
    ``normalize`` (default) the weights are divided by their sum and the last term vanishes.
    """

    name = "linear"
    parameters = (
        WEIGHT,
        Parameter("normalize", True),
    )

    def merge(
        self,
        out: torch.Tensor,
        base: torch.Tensor,
        task_vectors: torch.Tensor,
        params: ParamValues,
        prepared: Any = None,
    ) -> None:
        weights = params["weight"]
        total = float(weights.sum())
        if params["normalize"] and total != 0:
            weights = weights / total
            total = 1.0
        # Σ w_t θ_t = Σ w_t τ_t + (Σ w_t) θ₀
        weighted_sum_into(out, base, task_vectors, weights, base_coefficient=total)
