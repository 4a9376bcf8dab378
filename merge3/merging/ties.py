"""TIES-merging (Yadav et al., NeurIPS 2023): trim, elect sign, disjoint merge.

mergekit semantics per tensor: keep the ``k = max(1, ⌊density·n⌋)`` largest |τ_t| of each task
vector, weight them, elect each entry's sign by the weighted mass (``sum``) or by a vote
(``count``), and average the agreeing entries (divided by the sum of their weights when
``normalize``). ``trim: global`` trims by one threshold over the whole model instead, as the TIES
paper does.

The trim threshold for any density is a lookup in a sorted table of |τ_t| built once per run, so
a candidate costs one fused pass. Entries tied with the threshold are all kept (mergekit keeps an
arbitrary k of them); with continuous weights ties only occur among exact zeros, which never
count.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from merge3.merging import kernels
from merge3.merging.registry import DENSITY, LAMBDA, MergeOperator, Parameter, ParamValues, register

_EPS = 1e-7

_BITS = {
    torch.float64: torch.int64,
    torch.float32: torch.int32,
    torch.float16: torch.int16,
    torch.bfloat16: torch.int16,
}


def kept_count(density: float, n: int) -> int:
    """mergekit's k: at least one entry of a non-empty tensor survives a positive density."""
    return n if density >= 1 else max(1, int(density * n))


def magnitude_table(task_vectors: torch.Tensor) -> dict[str, torch.Tensor]:
    """Sorted |τ_t| (ascending, in the task-vector dtype) and the L1 norm of each task vector.

    On the CPU the rows are sorted in place by NumPy as integers: the bit patterns of
    non-negative floats are ordered like their values (``abs`` clears the sign of −0; endpoints
    hold no NaN), so this sorts fp32/fp16/bf16 alike, values only; 16-bit types go through
    NumPy's radix sort. ``torch.sort`` also builds an int64 index for every entry and took ~3×
    the CPU time (SmolLM2-135M, T = 3, with :class:`Endpoints` sorting two tensors at a time:
    ~100 s → ~30 s wall on a loaded 2-core machine, 16 s of CPU).
    """
    flat = task_vectors.reshape(task_vectors.shape[0], -1).abs()
    l1 = flat.sum(dim=1, dtype=torch.float64)
    ibits = _BITS.get(flat.dtype)
    if flat.device.type == "cpu" and ibits is not None and flat.is_contiguous():
        flat.detach().view(ibits).numpy().sort(axis=1)
        return {"sorted": flat, "l1": l1}
    return {"sorted": flat.sort(dim=1).values, "l1": l1}


def l1_scale(before: float, after: float) -> float:
    """mergekit's norm matching: rescale the kept entries to the L1 norm of the whole vector."""
    return 1.0 if before < _EPS or after < _EPS else before / after


@register
class Ties(MergeOperator):
    """θ = θ₀ + λ · disjoint-mean_t(w_t · trim_density_t(τ_t))."""

    name = "ties"
    prepare_in_threads = True
    parameters = (
        Parameter("weight", 1.0, per_model=True, bounds=(0.0, 1.0), minimum=0.0),
        DENSITY,
        LAMBDA,
        Parameter("normalize", True),
        Parameter("rescale", False),
        Parameter("consensus", "sum", choices=("sum", "count")),
        Parameter("trim", "tensor", choices=("tensor", "global")),
    )

    def prepare(self, base: torch.Tensor, task_vectors: torch.Tensor, name: str = "") -> Any:
        return magnitude_table(task_vectors)

    def global_params(
        self, params: ParamValues, prepared: Mapping[str, Any]
    ) -> Mapping[str, Mapping[str, Any]] | None:
        if params["trim"] != "global":
            return None
        tables = [p["sorted"] for p in prepared.values() if p["sorted"].shape[1]]
        thresholds = global_thresholds(tables, params["density"])
        return {name: {"_threshold": thresholds} for name in prepared}

    def merge(
        self,
        out: torch.Tensor,
        base: torch.Tensor,
        task_vectors: torch.Tensor,
        params: ParamValues,
        prepared: Any = None,
    ) -> None:
        if base.numel() == 0:
            return
        if prepared is None:
            prepared = magnitude_table(task_vectors)
        table = prepared["sorted"]
        n = table.shape[1]
        weights = params["weight"]
        density = params["density"]
        thresholds = params.get("_threshold")
        scales = []
        if thresholds is None:
            thr = []
            for t in range(table.shape[0]):
                k = kept_count(float(density[t]), n)
                thr.append(table[t, n - k] if k < n else table.new_zeros(()))
            thresholds = torch.stack(thr)
        thresholds = thresholds.to(task_vectors.dtype)
        for t in range(table.shape[0]):
            scale = 1.0
            if params["rescale"] and float(density[t]) < 1:
                kept = table[t][table[t] >= thresholds[t]].sum(dtype=torch.float64)
                scale = l1_scale(float(prepared["l1"][t]), float(kept))
            scales.append(scale)
        acc = kernels.accumulate_dtype(base.dtype)
        w = weights.to(device=base.device, dtype=acc)
        coef = w * torch.tensor(scales, dtype=acc, device=base.device)
        lam = torch.tensor([float(params["lambda"])], dtype=acc, device=base.device)
        kernels.launch(
            kernels.trim_kernel,
            out,
            (base, task_vectors),
            (thresholds.to(base.device), coef, w, lam),
            consensus=params["consensus"],
            normalize=bool(params["normalize"]),
        )


def global_thresholds(tables: list[torch.Tensor], density: torch.Tensor) -> torch.Tensor:
    """Per task, the k-th largest |τ_t| over the whole model (k from ``density``), exactly.

    Bisection over the bit patterns of the table dtype (ordered like the non-negative values
    they encode), counting with ``searchsorted`` over the per-tensor sorted tables: no
    model-sized temporary, and it ends exactly on a table element.
    """
    dtype = tables[0].dtype
    ibits = _BITS[dtype]
    n_tasks = tables[0].shape[0]
    total = sum(t.shape[1] for t in tables)
    out = torch.zeros(n_tasks, dtype=dtype)

    def value(bits: int) -> torch.Tensor:
        return torch.tensor([bits], dtype=ibits).view(dtype)

    for task in range(n_tasks):
        k = kept_count(float(density[task]), total)
        if k >= total:
            continue
        rows = [t[task] for t in tables]

        def count_ge(v: torch.Tensor, rows: list[torch.Tensor] = rows) -> int:
            return sum(r.numel() - int(torch.searchsorted(r, v)) for r in rows)

        top = max(r[-1:] for r in rows)  # count_ge(0) = total >= k > count_ge(above top) = 0
        lo, hi = 0, int(top.view(ibits)) + 1
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if count_ge(value(mid)) >= k:
                lo = mid
            else:
                hi = mid
        out[task] = value(lo)[0]
    return out
