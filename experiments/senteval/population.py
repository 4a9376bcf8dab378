"""A population of real merged MiniLM models, evaluated on the full SentEval test splits.

Rows: the base (each task through its endpoint's head), the six endpoints, and ``--models``
merges of the six endpoints with random recipes: operator uniform over task_arithmetic / ties /
dare_ties / tsv, per-endpoint weights ~ U(0, 1), densities ~ U(0.1, 1), λ or α uniform over a
range where merges go from poor to good (so the matrix spans abilities, as IRT needs). Every
row holds per-item correctness on all 9 330 test items. The matrix, recipes and per-model
timings are cached as ``cache_root()/senteval/population-KEY.npz`` (KEY: endpoints, count,
seed, evaluation dtype), with a partial file every 10 models so a killed run resumes.

Evaluation is bf16 by default (≈1.7× faster here); the run first evaluates
``--check`` merges both in fp32 and in bf16 and stores the per-item agreement, which the
estimator study reports.

    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \\
        python experiments/senteval/population.py --models 100
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from finetune import build_all
from study import TASKS, Bench, load_splits, study_cache
from tqdm import tqdm

from merge3.assets import minilm_dir

OPERATORS = ("task_arithmetic", "ties", "dare_ties", "tsv")


def random_recipe(rng: np.random.Generator, n: int) -> tuple[str, dict]:
    """One random merge recipe of ``n`` endpoints (operator, parameters)."""
    op = str(rng.choice(OPERATORS))
    weight = np.round(rng.uniform(0, 1, n), 4).tolist()
    if op == "task_arithmetic":
        return op, {"weight": weight, "lambda": round(float(rng.uniform(0.1, 1.0)), 4)}
    if op == "tsv":
        return op, {"weight": weight, "alpha": round(float(rng.uniform(0.2, 2.0)), 4)}
    return op, {
        "weight": weight,
        "density": np.round(rng.uniform(0.1, 1.0, n), 4).tolist(),
        "lambda": round(float(rng.uniform(0.3, 2.0)), 4),
        "normalize": True,
    }


def population_path(endpoint_dirs: dict, models: int, seed: int, dtype: str) -> Path:
    blob = json.dumps([sorted(p.name for p in endpoint_dirs.values()), models, seed, dtype])
    return study_cache() / f"population-{hashlib.sha256(blob.encode()).hexdigest()[:12]}.npz"


def _load_rows(path: Path) -> dict[str, dict]:
    if not path.is_file():
        return {}
    with np.load(path, allow_pickle=False) as z:
        done = json.loads(str(z["rows"]))
    return {m: {**r, "correct": np.array(r["correct"])} for m, r in done.items()}


def snapshot(models: int = 100, seed: int = 0, dtype: str = "bf16") -> Path:
    """The rows evaluated so far (main and helper partial files) as one npz, evaluating
    nothing: for a study that must run before the population is complete."""
    path = population_path(build_all(verbose=False), models, seed, dtype)
    rows = _load_rows(path.with_suffix(".partial.npz"))
    rows.update(_load_rows(path.with_suffix(".reverse.partial.npz")))
    first = ["check", "base", *(f"ft-{t}" for t in TASKS)]
    rows = dict(
        sorted(
            rows.items(),
            key=lambda kv: (kv[0] not in first, first.index(kv[0]) if kv[0] in first else 0, kv[0]),
        )
    )
    splits = load_splits()
    out = path.with_suffix(".snapshot.npz")
    with np.load(path.with_suffix(".partial.npz"), allow_pickle=False) as z:
        threads = int(z["threads"])  # the evaluating run's, not this process's
    _save(out, rows, {t: splits[t]["test"] for t in TASKS}, threads)
    return out


def build_population(
    models: int = 100, seed: int = 0, check: int = 2, dtype: str = "bf16", helper: bool = False
):
    """The cached population file (built now if absent); returns its path.

    ``helper``: a second process that walks the plan from its end, saving to its own partial
    file, and stops where the main run's saved rows (plus the main run's next 10) begin; the
    main run, restarted, takes both partial files and writes the final matrix. Two one-thread
    processes stand contention from other jobs better than one two-thread process.
    """
    dirs = build_all(verbose=False)
    path = population_path(dirs, models, seed, dtype)
    if path.is_file():
        return path
    eval_dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
    bench = Bench(minilm_dir(), dirs, eval_dtype=eval_dtype)
    splits = load_splits()
    test = {t: splits[t]["test"] for t in TASKS}
    evaluator = bench.evaluator(test)
    partial = path.with_suffix(".partial.npz")
    reverse = path.with_suffix(".reverse.partial.npz")
    rng = np.random.default_rng(seed)
    plan: list[tuple[str, str | None, dict | None]] = [("base", None, None)]
    plan += [(f"ft-{t}", t, None) for t in TASKS]
    for k in range(models):
        op, params = random_recipe(rng, len(TASKS))
        plan.append((f"pop-{k:03d}", op, params))
    if helper:
        _helper(bench, evaluator, plan, partial, reverse, test)
        return path
    rows = _load_rows(partial)
    rows.update({m: r for m, r in _load_rows(reverse).items() if m not in rows})
    agreement = []
    if check and "check" not in rows:  # fp32 vs bf16 on the first `check` merges
        for name, op, params in plan[1 + len(TASKS) : 1 + len(TASKS) + check]:
            bench.merge(op, params)
            fp32 = np.concatenate(list(evaluator(bench.endpoints.model).values()))
            low = np.concatenate(list(bench.correct(evaluator).values()))
            agreement.append(
                {
                    "model": name,
                    "agree": float(np.mean(fp32 == low)),
                    "acc_fp32": float(np.mean(fp32)),
                    "acc_eval": float(np.mean(low)),
                }
            )
            print("fp32 vs", dtype, agreement[-1], flush=True)
        rows["check"] = {"agreement": agreement, "correct": np.zeros(0)}
    for name, op, params in tqdm(plan, desc="population", mininterval=10):
        if name in rows:
            continue
        rows[name] = _evaluate(bench, evaluator, op, params)
        if len(rows) % 5 == 0:
            _save(partial, rows, test)
    order = {name: k for k, (name, _, _) in enumerate(plan)}
    rows = dict(sorted(rows.items(), key=lambda kv: order.get(kv[0], -1)))
    _save(path, rows, test)
    partial.unlink(missing_ok=True)
    reverse.unlink(missing_ok=True)
    return path


def _evaluate(bench: Bench, evaluator, op: str | None, params: dict | None) -> dict:
    t0 = time.perf_counter()
    if params is None:
        bench.load_endpoint(op)
        merge_s = time.perf_counter() - t0
    else:
        merge_s = bench.merge(op, params)
    t1 = time.perf_counter()
    correct = bench.correct(evaluator)
    return {
        "operator": op,
        "params": params,
        "merge_s": merge_s,
        "eval_s": time.perf_counter() - t1,
        "correct": np.concatenate([correct[t] for t in TASKS]),
    }


def _helper(bench: Bench, evaluator, plan: list, partial: Path, reverse: Path, test: dict) -> None:
    rows = _load_rows(reverse)
    index = {name: k for k, (name, _, _) in enumerate(plan)}
    for name, op, params in tqdm(plan[::-1], desc="population (from the end)", mininterval=10):
        main_done = [index[m] for m in _load_rows(partial) if m in index]
        if index[name] <= max(main_done, default=0) + 10:
            break
        if name not in rows:
            rows[name] = _evaluate(bench, evaluator, op, params)
            _save(reverse, rows, test)
    _save(reverse, rows, test)


def _save(path: Path, rows: dict, test: dict, threads: int | None = None) -> None:
    """npz written to a temporary name and renamed: a reader never sees half a file."""
    names = [m for m in rows if m != "check"]
    meta = {m: {k: v for k, v in r.items() if k != "correct"} for m, r in rows.items()}
    serial = {m: {**meta[m], "correct": rows[m]["correct"].tolist()} for m in rows}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        tmp,
        values=np.stack([rows[m]["correct"] for m in names]),
        models=np.array(names),
        items=np.array([i.id for t in TASKS for i in test[t]]),
        tasks=np.array([t for t in TASKS for _ in test[t]]),
        meta=json.dumps(meta),
        rows=json.dumps(serial) if path.name.endswith(".partial.npz") else "{}",
        torch=torch.__version__,
        threads=torch.get_num_threads() if threads is None else threads,
    )
    os.replace(tmp, path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--check", type=int, default=2, help="merges also evaluated in fp32")
    ap.add_argument("--dtype", default="bf16", choices=("bf16", "fp32"))
    ap.add_argument("--helper", action="store_true", help="second worker, from the plan's end")
    ap.add_argument("--snapshot", action="store_true", help="write the rows done so far, only")
    args = ap.parse_args()
    if args.snapshot:
        print(snapshot(args.models, args.seed, args.dtype))
        return
    print(build_population(args.models, args.seed, args.check, args.dtype, args.helper))


if __name__ == "__main__":
    main()
