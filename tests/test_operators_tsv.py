"""TSV-M and TSV-C against a direct reference written here from the paper's recipe."""

from __future__ import annotations

import torch

from merge3.merging import get_operator
from merge3.merging.tsv import compress


def low_rank_task_vectors(n_tasks: int, m: int, n: int, rank: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.stack(
        [
            torch.randn(m, rank, generator=g, dtype=torch.float64)
            @ torch.randn(rank, n, generator=g, dtype=torch.float64)
            for _ in range(n_tasks)
        ]
    )


def reference_tsv(tv: torch.Tensor, alpha: float) -> torch.Tensor:
    """Gargiulo et al.: SVD each τ_t, keep r/T, concatenate, polar-orthogonalise, rebuild."""
    n_tasks = tv.shape[0]
    k = min(tv.shape[1:]) // n_tasks
    us, ss, vs = [], [], []
    for t in range(n_tasks):
        u, s, vh = torch.linalg.svd(tv[t], full_matrices=False)
        us.append(u[:, :k])
        ss.append(s[:k])
        vs.append(vh[:k])
    u_cat, s_cat, v_cat = torch.cat(us, 1), torch.cat(ss), torch.cat(vs, 0)
    uu, _, uvh = torch.linalg.svd(u_cat, full_matrices=False)
    vu, _, vvh = torch.linalg.svd(v_cat, full_matrices=False)
    return alpha * torch.linalg.multi_dot((uu, uvh, torch.diag(s_cat), vu, vvh))


def test_tsv_matches_reference_on_low_rank_task_vectors():
    tv = low_rank_task_vectors(3, 24, 18, rank=4, seed=0)
    base = torch.randn(24, 18, dtype=torch.float64)
    op = get_operator("tsv")
    out = torch.empty_like(base)
    op.merge(out, base, tv, op.resolve({"alpha": 0.7}, 3), op.prepare(base, tv))
    torch.testing.assert_close(out, base + reference_tsv(tv, 0.7))


def test_tsv_per_task_weights_scale_blocks_and_vectors_take_the_mean():
    tv = low_rank_task_vectors(3, 20, 20, rank=3, seed=1)
    base = torch.zeros(20, 20, dtype=torch.float64)
    op = get_operator("tsv")
    blocks = op.prepare(base, tv)
    torch.testing.assert_close(blocks.sum(0), reference_tsv(tv, 1.0))
    out = torch.empty_like(base)
    w = [0.2, 1.0, 0.5]
    op.merge(out, base, tv, op.resolve({"weight": w}, 3), blocks)
    torch.testing.assert_close(out, sum(wt * b for wt, b in zip(w, blocks, strict=True)))
    vec = torch.randn(3, 7, dtype=torch.float64)
    out1 = torch.zeros(7, dtype=torch.float64)
    op.merge(out1, torch.zeros(7, dtype=torch.float64), vec, op.resolve({}, 3), None)
    torch.testing.assert_close(out1, vec.mean(0))


def test_tsv_compress_reports_fraction_and_exact_low_rank_reconstruction():
    tv = {"w": low_rank_task_vectors(3, 30, 30, rank=3, seed=2).float(), "b": torch.randn(3, 30)}
    packed = compress(tv, fraction=0.1)  # keeps 3 components of 30: exact for rank-3 vectors
    for t in range(3):
        assert packed.reconstruction_error(tv, t) < 1e-5
    # per task: U 30×3 + S 3 + Vh 3×30 = 183 of 900 entries, plus the dense 1-D tensor
    assert abs(packed.stored_fraction - (3 * 183 + 90) / (3 * 930)) < 1e-9
    lossy = compress({"w": low_rank_task_vectors(2, 30, 30, rank=20, seed=3)}, fraction=0.1)
    err = lossy.reconstruction_error({"w": low_rank_task_vectors(2, 30, 30, 20, 3)}, 0)
    assert 0.05 < err < 1.0


def test_tsv_compress_operator_is_task_arithmetic_on_reconstructions():
    tv = low_rank_task_vectors(2, 16, 12, rank=2, seed=4)
    base = torch.randn(16, 12, dtype=torch.float64)
    op = get_operator("tsv_compress")
    out = torch.empty_like(base)
    op.merge(out, base, tv, op.resolve({"weight": [0.5, 1.5]}, 2), op.prepare(base, tv))
    torch.testing.assert_close(out, base + 0.5 * tv[0] + 1.5 * tv[1])  # rank 2 ≤ k = 6
