"""Per-candidate merge time on a randomly initialised 7B-shaped Llama in bf16 (a GPU check).

The values of the weights do not change the cost of a merge, so nothing is downloaded: a
Llama-2-7B-shaped model (32 layers, hidden 4096, MLP 11008, vocabulary 32000; 6.7B parameters)
is built on the device with random bf16 weights and 3 random bf16 task vectors, all resident
((T + 2) × 12.6 GiB = 63 GiB before any operator's tables). Per operator: the one-off
precompute, then ``--reps`` candidates of (a) ``Endpoints.apply`` in place interleaved with
(c) the one-pass limit ``out.copy_(θ₀); out.add_(τ_t, alpha=w_t)``; medians, (a)/(c) and peak
device memory. It needs only torch and merge3's merging/models code (no pydantic, pymoo or
lm-eval), so it runs from a bare checkout on the GPU machine:

    PYTHONPATH=. python3 benchmarks/merge_7b.py --out $OUT/merge_7b.json           # H200
    .venv/bin/python benchmarks/merge_7b.py --shape tiny --device cpu --reps 2      # smoke run

TSV-M is off by default at 7B: its precompute is 672 SVDs of up to 4096 × 11008 (its
per-candidate merge is a weighted sum of precomputed blocks, the cost of task arithmetic).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from merge3.merging import get_operator
from merge3.models.endpoints import Endpoints

SHAPES = {
    "7b": dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
               num_attention_heads=32, num_key_value_heads=32),
    "tiny": dict(vocab_size=256, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=4),
}  # fmt: skip
N_TASKS = 3


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(shape: str, device: torch.device, seed: int = 0) -> Endpoints:
    """A random bf16 Llama on ``device`` and T random task vectors, without touching disk."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**SHAPES[shape], tie_word_embeddings=False)
    with torch.device("meta"):
        model = LlamaForCausalLM(cfg)
    # bf16 on the meta device first, so the device never holds an fp32 copy (27 GB at 7B).
    # Buffers such as rotary frequencies stay uninitialised: no forward pass runs here.
    model = model.to(torch.bfloat16).to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    task_vectors = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(0, 0.02, generator=gen)
            tv = torch.empty((N_TASKS, *p.shape), dtype=p.dtype, device=device)
            task_vectors[name] = tv.normal_(0, 1e-3, generator=gen)
    return Endpoints(model, task_vectors, [f"ep{t}" for t in range(N_TASKS)])


@torch.no_grad()
def one_pass_limit(endpoints: Endpoints, weights: list[float]) -> None:
    for name, p in endpoints.params.items():
        p.data.copy_(endpoints.base[name])
        for t in range(N_TASKS):
            p.data.add_(endpoints.task_vectors[name][t], alpha=weights[t])


def candidate(op_name: str, gen: torch.Generator) -> dict:
    values: dict = {"weight": (0.2 + 0.8 * torch.rand(N_TASKS, generator=gen)).tolist()}
    if op_name in ("ties", "dare_ties", "dare_linear"):
        values["density"] = (0.1 + 0.8 * torch.rand(N_TASKS, generator=gen)).tolist()
    return values


def timed(fn, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def measure(endpoints: Endpoints, op_name: str, reps: int, device: torch.device) -> dict:
    op = get_operator(op_name)
    gen = torch.Generator().manual_seed(0)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    prepare_s = timed(lambda: endpoints.prepare(op), device)
    warm = candidate(op_name, gen)
    first_s = timed(lambda: endpoints.apply(op, op.resolve(warm, N_TASKS)), device)
    merges, limits = [], []
    for _ in range(reps):
        values = candidate(op_name, gen)
        params = op.resolve(values, N_TASKS)
        limits.append(timed(lambda v=values: one_pass_limit(endpoints, v["weight"]), device))
        merges.append(timed(lambda p=params: endpoints.apply(op, p), device))
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    result = {
        "prepare_s": prepare_s,
        "first_call_s": first_s,
        "median_s": statistics.median(merges),
        "times_s": merges,
        "limit_median_s": statistics.median(limits),
        "limit_times_s": limits,
        "ratio_vs_limit": statistics.median(merges) / statistics.median(limits),
        "table_bytes": endpoints.table_bytes(op),
        "peak_device_bytes": peak,
    }
    endpoints.release(op_name)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=list(SHAPES), default="7b")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--ops", default="task_arithmetic,ties,dare_ties")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--out", default="", help="results JSON (default: print only)")
    args = parser.parse_args()
    device = torch.device(args.device)
    t0 = time.perf_counter()
    endpoints = build(args.shape, device)
    build_s = time.perf_counter() - t0
    n_params = sum(p.numel() for p in endpoints.params.values())
    results: dict = {
        "shape": args.shape,
        "parameters": n_params,
        "dtype": "bfloat16",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "build_s": build_s,
        "resident_bytes": endpoints.model_bytes() * (N_TASKS + 2),
        "operators": {},
    }
    print(f"{args.shape}: {n_params / 1e9:.2f}B parameters on {results['device']}", flush=True)
    print(
        "| operator | (a) merge3 s | (c) limit s | (a)/(c) | precompute s | tables GiB | peak GiB |"
    )
    print("|---|---|---|---|---|---|---|", flush=True)
    for op_name in args.ops.split(","):
        r = results["operators"][op_name] = measure(endpoints, op_name, args.reps, device)
        peak = "–" if r["peak_device_bytes"] is None else f"{r['peak_device_bytes'] / 2**30:.1f}"
        print(
            f"| {op_name} | {r['median_s']:.4f} | {r['limit_median_s']:.4f} | "
            f"{r['ratio_vs_limit']:.2f} | {r['prepare_s']:.1f} | {r['table_bytes'] / 2**30:.1f} | "
            f"{peak} |",
            flush=True,
        )
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
