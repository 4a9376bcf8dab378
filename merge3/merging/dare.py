"""DARE (Yu et al., ICML 2024): drop each delta entry with probability 1 − density, rescale.

``dare_linear`` sums the sparsified task vectors; ``dare_ties`` adds TIES' sign election and
disjoint merge. Rescale modes: ``inverse_density`` (the paper: ×1/density, unbiased), ``l1``
(mergekit's norm matching: the kept entries are scaled to the L1 norm of the whole task vector,
mergekit's ``rescale: true``) and ``none``.

Common random numbers: one uniform field per tensor and task is drawn once per run (seeded by
the operator's seed and the tensor name) and stored as float16 rounded down, so an entry is kept
with probability exactly h when its key is below h, the float16 nearest the density (|h − d| ≤
2.5e-4). Every candidate reuses the same field, so candidates differ only by their parameters,
and no random number is drawn per candidate. The L1 norm of the kept entries at every threshold
is a cumulative table indexed by the threshold's bit pattern (15 361 float64 per task, only for
tensors of at least that many entries; smaller ones are summed directly).
"""

from __future__ import annotations

import zlib
from typing import Any

import torch

from merge3.merging import kernels
from merge3.merging.registry import (
    DENSITY,
    LAMBDA,
    WEIGHT,
    MergeOperator,
    Parameter,
    ParamValues,
    register,
)
from merge3.merging.ties import l1_scale

ONE = 0x3C00
"""Bit pattern of 1.0 in float16: keys are float16 values in [0, 1), whose bit patterns
0 … 0x3BFF are ordered like the values, so a bit pattern indexes the cumulative L1 table."""


def tensor_seed(seed: int, name: str) -> int:
    """A seed per tensor that does not depend on the order tensors are visited in."""
    return (int(seed) * 1_000_003 + zlib.crc32(name.encode())) % (1 << 63)


def threshold_of(density: float) -> torch.Tensor:
    """The float16 threshold for ``density`` (nearest float16, at least the smallest positive).

    Keys are uniform draws rounded *down* to float16, so P(key < h) = h exactly for any float16
    h: the realised keep probability is the threshold itself.
    """
    h = torch.tensor(float(density), dtype=torch.float16)
    if float(h) <= 0:
        h = torch.tensor(1, dtype=torch.int16).view(torch.float16)
    return h.reshape(())


def random_field(shape: tuple[int, ...], seed: int, device: torch.device) -> torch.Tensor:
    """Uniform [0, 1) draws rounded down to float16, one row per task (2 bytes per entry).

    float16 rather than an integer type because the fused CPU kernel vectorises a float16
    comparison but not an int16 one (measured ~5× slower).
    """
    gen = torch.Generator(device="cpu").manual_seed(seed)
    keys = torch.empty(shape, dtype=torch.float16)
    zero = torch.zeros((), dtype=torch.float16)
    for t in range(shape[0]):
        u = torch.rand(shape[1:], generator=gen, dtype=torch.float64)
        h = u.to(torch.float16)
        # rounded up: step down one float16 (a whole-tensor select, no boolean gather/scatter)
        torch.where(h.double() > u, torch.nextafter(h, zero), h, out=keys[t])
    return keys.to(device)


def dare_table(task_vectors: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    n_tasks = task_vectors.shape[0]
    flat = task_vectors.reshape(n_tasks, -1)
    keys = random_field(tuple(flat.shape), seed, flat.device)
    table: dict[str, torch.Tensor] = {
        "keys": keys,
        "l1": flat.abs().sum(dim=1, dtype=torch.float64),
    }
    if flat.shape[1] >= ONE:
        cum = torch.zeros((n_tasks, ONE + 1), dtype=torch.float64, device=flat.device)
        for t in range(n_tasks):
            idx = keys[t].view(torch.int16).to(torch.int64)
            cum[t, 1:] = torch.bincount(idx, weights=flat[t].abs().double(), minlength=ONE)
        table["kept_l1"] = cum.cumsum(dim=1)  # kept_l1[t, b] = Σ |τ| over keys with bits < b
    return table


class _Dare(MergeOperator):
    consensus: str | None = None  # None: no sign election; else from the "consensus" parameter
    prepare_in_threads = True
    parameters = (
        WEIGHT,
        DENSITY,
        LAMBDA,
        Parameter("normalize", False),
        Parameter("rescale", "l1", choices=("l1", "inverse_density", "none")),
    )

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)

    def prepare(self, base: torch.Tensor, task_vectors: torch.Tensor, name: str = "") -> Any:
        return dare_table(task_vectors, tensor_seed(self.seed, name))

    def scales(
        self,
        task_vectors: torch.Tensor,
        table: dict[str, torch.Tensor],
        thresholds: list[torch.Tensor],
        mode: str,
    ) -> list[float]:
        """The per-task rescale factor of the kept entries."""
        out = []
        for t, h in enumerate(thresholds):
            bits = int(h.view(torch.int16))
            if mode == "none" or bits >= ONE:
                out.append(1.0)
            elif mode == "inverse_density":
                out.append(1.0 / float(h))  # 1 / (realised keep probability): unbiased
            elif "kept_l1" in table:
                out.append(l1_scale(float(table["l1"][t]), float(table["kept_l1"][t, bits])))
            else:
                flat = task_vectors[t].reshape(-1)
                kept = flat.abs()[table["keys"][t] < h]
                out.append(l1_scale(float(table["l1"][t]), float(kept.sum(dtype=torch.float64))))
        return out

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
            prepared = dare_table(task_vectors, tensor_seed(self.seed, ""))
        thresholds = [threshold_of(d) for d in params["density"].tolist()]
        scales = self.scales(task_vectors, prepared, thresholds, params["rescale"])
        acc = kernels.accumulate_dtype(base.dtype)
        dev = base.device
        w = params["weight"].to(device=dev, dtype=acc)
        coef = w * torch.tensor(scales, dtype=acc, device=dev)
        lam = float(params["lambda"])
        consensus = params["consensus"] if self.consensus is not None else None
        if consensus is None:  # fold normalisation and λ into the coefficients
            total = float(params["weight"].sum())
            divisor = total if params["normalize"] and abs(total) >= 1e-8 else 1.0
            coef = coef * (lam / divisor)
        level_t = torch.stack(thresholds).to(dev)
        kernels.launch(
            kernels.drop_kernel,
            out,
            (base, task_vectors, prepared["keys"]),
            (level_t, coef, w, torch.tensor([lam], dtype=acc, device=dev)),
            consensus=consensus,
            normalize=bool(params["normalize"]),
        )


@register
class DareLinear(_Dare):
    """θ = θ₀ + λ Σ_t w_t · rescale(drop_density_t(τ_t)) (÷ Σ w_t when ``normalize``)."""

    name = "dare_linear"


@register
class DareTies(_Dare):
    """DARE's random drop followed by TIES' sign election and disjoint merge."""

    name = "dare_ties"
    consensus = "sum"
    parameters = (
        Parameter("weight", 1.0, per_model=True, bounds=(0.0, 1.0), minimum=0.0),
        *_Dare.parameters[1:],
        Parameter("consensus", "sum", choices=("sum", "count")),
    )
