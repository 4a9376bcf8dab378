"""Task Singular Vectors (Gargiulo et al., CVPR 2025): TSV-Merge and TSV-Compress.

TSV-M, per 2-D tensor: thin SVD of every τ_t, keep its top k = ⌊fraction·r⌋ components
(fraction 1/T by default), concatenate the U's and the V's, replace each concatenation by its
polar factor (U⊥ = P Qᵀ from U = P Σ Qᵀ) to remove the interference between tasks, and rebuild
Δ = U⊥ diag(Ŝ) V⊥. Non-matrix tensors take the mean of the task vectors. θ = θ₀ + α Δ.

The orthogonalised factors do not depend on per-task weights, so the run precomputes the blocks
D_t = U⊥_t diag(S_t) V⊥_t (one dense tensor per task, T × the tensor's size) and a candidate with
weights w is Δ(w) = Σ_t w_t D_t: TSV-M then costs what task arithmetic costs.

TSV-C keeps each task's top-k factors only (storage ≈ one model for k = r/T) and reconstructs
any task's vector from them; :func:`compress` reports the stored fraction and the error.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from merge3.merging.linear import weighted_sum_into
from merge3.merging.registry import LAMBDA, WEIGHT, MergeOperator, Parameter, ParamValues, register


@contextmanager
def one_thread() -> Iterator[None]:
    """Run LAPACK's SVD on one thread. MKL's bidiagonalisation (``gebrd``) syncs its OpenMP
    team at many small barriers, so on a busy 2-core machine a descheduled second thread makes
    the first spin: a 576×1536 SVD measured 16 s with 2 threads and 0.4 s with 1 (0.15 s of
    CPU), which made TSV's precompute of SmolLM2-135M take over 20 minutes instead of ~1."""
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def rank_kept(rows: int, cols: int, n_tasks: int, fraction: float | None) -> int:
    """k = ⌊fraction·r⌋ components per task (fraction 1/T by default), at least one."""
    r = min(rows, cols)
    f = 1.0 / n_tasks if fraction is None else fraction
    return max(1, min(r, int(f * r)))


def _svd_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def polar(x: torch.Tensor) -> torch.Tensor:
    """The orthogonal polar factor P Qᵀ of x = P Σ Qᵀ: the nearest matrix with orthonormal
    columns (or rows, when x is wide)."""
    p, _, qh = torch.linalg.svd(x, full_matrices=False)
    return p @ qh


def truncated_factors(tau: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-k thin SVD factors (U: m×k, S: k, Vh: k×n) of one task vector, in fp32/fp64."""
    u, s, vh = torch.linalg.svd(tau.to(_svd_dtype(tau.dtype)), full_matrices=False)
    return u[:, :k], s[:k], vh[:k]


def tsv_blocks(task_vectors: torch.Tensor, fraction: float | None = None) -> torch.Tensor:
    """D_t = U⊥_t diag(S_t) V⊥_t for a stack (T, m, n) of matrix task vectors; Σ_t D_t = Δ."""
    n_tasks, m, n = task_vectors.shape
    k = rank_kept(m, n, n_tasks, fraction)
    with one_thread():
        factors = [truncated_factors(task_vectors[t], k) for t in range(n_tasks)]
        u_perp = polar(torch.cat([f[0] for f in factors], dim=1))  # m × Tk
        v_perp = polar(torch.cat([f[2] for f in factors], dim=0))  # Tk × n
    blocks = torch.empty_like(task_vectors)
    for t, (_, s, _) in enumerate(factors):
        cols = slice(t * k, (t + 1) * k)
        blocks[t] = (u_perp[:, cols] * s) @ v_perp[cols]
    return blocks


@register
class Tsv(MergeOperator):
    """TSV-M: θ = θ₀ + α Σ_t w_t D_t (matrices), θ₀ + α Σ_t w_t τ_t / T (other tensors)."""

    name = "tsv"
    parameters = (
        WEIGHT,
        Parameter("alpha", 1.0, bounds=(0.0, 2.0)),
    )

    def __init__(self, fraction: float | None = None) -> None:
        if fraction is not None and not 0 < fraction <= 1:
            from merge3.errors import ConfigError

            raise ConfigError(f"tsv: fraction must be in (0, 1], got {fraction}")
        self.fraction = fraction

    def prepare(self, base: torch.Tensor, task_vectors: torch.Tensor, name: str = "") -> Any:
        if task_vectors.dim() != 3 or 0 in task_vectors.shape:
            return None
        return tsv_blocks(task_vectors, self.fraction)

    def merge(
        self,
        out: torch.Tensor,
        base: torch.Tensor,
        task_vectors: torch.Tensor,
        params: ParamValues,
        prepared: Any = None,
    ) -> None:
        coef = params["weight"] * float(params["alpha"])
        if task_vectors.dim() == 3 and 0 not in task_vectors.shape:
            blocks = prepared if prepared is not None else self.prepare(base, task_vectors)
            weighted_sum_into(out, base, blocks, coef)
        else:
            weighted_sum_into(out, base, task_vectors, coef / task_vectors.shape[0])


@dataclass
class CompressedTaskVectors:
    """TSV-C: per matrix tensor, each task's top-k factors; other tensors kept whole."""

    factors: dict[str, list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = field(
        default_factory=dict
    )
    dense: dict[str, torch.Tensor] = field(default_factory=dict)
    original_numel: int = 0

    @property
    def n_tasks(self) -> int:
        some = next(iter(self.factors.values()), None)
        return len(some) if some is not None else next(iter(self.dense.values())).shape[0]

    def stored_numel(self) -> int:
        low_rank = sum(
            u.numel() + s.numel() + vh.numel() for f in self.factors.values() for u, s, vh in f
        )
        return low_rank + sum(d.numel() for d in self.dense.values())

    @property
    def stored_fraction(self) -> float:
        """Numbers stored over the numbers of the T uncompressed task vectors."""
        return self.stored_numel() / max(1, self.original_numel)

    def reconstruct(self, task: int) -> dict[str, torch.Tensor]:
        """Task ``task``'s vector rebuilt from its factors (exact for non-matrix tensors)."""
        out = {name: (u * s) @ vh for name, f in self.factors.items() for u, s, vh in [f[task]]}
        out.update({name: d[task] for name, d in self.dense.items()})
        return out

    def reconstruction_error(self, task_vectors: Mapping[str, torch.Tensor], task: int) -> float:
        """‖τ_t − τ̂_t‖_F / ‖τ_t‖_F over the whole model."""
        rebuilt = self.reconstruct(task)
        err = sum(
            float((task_vectors[n][task].double() - r.double()).pow(2).sum())
            for n, r in rebuilt.items()
        )
        ref = sum(float(task_vectors[n][task].double().pow(2).sum()) for n in rebuilt)
        return (err / ref) ** 0.5 if ref > 0 else 0.0


def compress(
    task_vectors: Mapping[str, torch.Tensor], fraction: float | None = None
) -> CompressedTaskVectors:
    """Keep each task's top-k singular factors of every matrix tensor (TSV-C)."""
    out = CompressedTaskVectors()
    for name, tv in task_vectors.items():
        out.original_numel += tv.numel()
        if tv.dim() == 3 and 0 not in tv.shape:
            k = rank_kept(tv.shape[1], tv.shape[2], tv.shape[0], fraction)
            with one_thread():
                out.factors[name] = [truncated_factors(tv[t], k) for t in range(tv.shape[0])]
        else:
            out.dense[name] = tv.clone()
    return out


@register
class TsvCompress(MergeOperator):
    """Task arithmetic on TSV-C compressed task vectors: θ₀ + λ Σ_t w_t τ̂_t."""

    name = "tsv_compress"
    parameters = (
        WEIGHT,
        LAMBDA,
    )

    def __init__(self, fraction: float | None = None) -> None:
        self.fraction = fraction

    def prepare(self, base: torch.Tensor, task_vectors: torch.Tensor, name: str = "") -> Any:
        if task_vectors.dim() != 3 or 0 in task_vectors.shape:
            return None
        n_tasks, m, n = task_vectors.shape
        k = rank_kept(m, n, n_tasks, self.fraction)
        rebuilt = torch.empty_like(task_vectors)
        for t in range(n_tasks):
            with one_thread():
                u, s, vh = truncated_factors(task_vectors[t], k)
            rebuilt[t] = (u * s) @ vh
        return rebuilt

    def merge(
        self,
        out: torch.Tensor,
        base: torch.Tensor,
        task_vectors: torch.Tensor,
        params: ParamValues,
        prepared: Any = None,
    ) -> None:
        vectors = task_vectors if prepared is None else prepared
        if prepared is None and task_vectors.dim() == 3:
            vectors = self.prepare(base, task_vectors)
        weighted_sum_into(out, base, vectors, params["weight"] * float(params["lambda"]))
