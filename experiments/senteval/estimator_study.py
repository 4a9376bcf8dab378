"""How well do the estimators predict real merged models' accuracy, and what do anchors save?

Real response matrix: ``population.py`` (base, six endpoints, ≥ 100 random merges of the six
MiniLM endpoints, each on all 9 330 SentEval test items). For each seed the random merges are
split in two disjoint halves: a 2PL (D = 2) is fitted in Pyro on the first half ("reference"
models); the second half is estimated from n anchors per task, for every extraction method ×
every estimator. ``mpirt``/``gmpirt`` take the endpoints' abilities from their full responses;
``gpirt``/``gmpirt`` take their mix λ from the reference half (the models the IRT was fitted
on: the only fully evaluated merges a user would have). Truth: each held-out model's accuracy
on its full test split. Cells: MAE, averaged over tasks, held-out models and seeds.

Cost: items evaluated per candidate (6 n anchors vs the full split) and wall time per
candidate (merge + anchor evaluation + estimate vs merge + full evaluation), measured on the
same resident bench the search uses.

    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \\
        python experiments/senteval/estimator_study.py --seeds 3
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping, Sequence

import numpy as np
from study import RESULTS, TASKS, command, machine, markdown_table
from tqdm import tqdm

from merge3.estimate import TwoPL
from merge3.estimate.cli_support import NAMES, anchor_correctness, build_estimator
from merge3.estimate.responses import ResponseMatrix
from merge3.extract import METHODS, extract
from merge3.results_md import replace_section

START, END = "<!-- senteval_estimators:start -->", "<!-- senteval_estimators:end -->"
N_ANCHORS = (5, 10, 20, 50, 100)


def load_population(path) -> tuple[ResponseMatrix, dict]:
    with np.load(path, allow_pickle=False) as z:
        rm = ResponseMatrix(
            tuple(map(str, z["models"])),
            tuple(map(str, z["items"])),
            tuple(map(str, z["tasks"])),
            z["values"].astype(float),
            source=str(path),
        )
        meta = json.loads(str(z["meta"]))
    return rm, meta


def split_models(models: Sequence[str], seed: int) -> tuple[list[str], list[str]]:
    """Two disjoint halves of ``models`` (seeded permutation; the first half the larger)."""
    perm = np.random.default_rng(seed).permutation(len(models))
    k = (len(models) + 1) // 2
    return [models[i] for i in sorted(perm[:k])], [models[i] for i in sorted(perm[k:])]


def mae(est: Mapping[str, np.ndarray], truth: Mapping[str, np.ndarray]) -> float:
    """Mean absolute error, averaged over models within a task, then over tasks."""
    return float(np.mean([np.mean(np.abs(np.asarray(est[t]) - truth[t])) for t in truth]))


def true_accuracy(rm: ResponseMatrix) -> dict[str, np.ndarray]:
    """Each model's accuracy on every item of each task (the full split)."""
    by_task = rm.items_by_task()
    return {t: np.nanmean(rm.columns(by_task[t], "task"), axis=1) for t in by_task}


def cost_rows(n_items_full: int, ns: Sequence[int], n_tasks: int) -> list[tuple[int, int, float]]:
    """(n per task, items per candidate, full ÷ anchors) for each anchor count."""
    return [(n, n * n_tasks, n_items_full / (n * n_tasks)) for n in ns]


def run_seed(
    rm: ResponseMatrix, population: list[str], seed: int, ns: Sequence[int], dims: int
) -> dict:
    fit_models, test_models = split_models(population, seed)
    assert not set(fit_models) & set(test_models)
    ref, held = rm.rows(fit_models), rm.rows(test_models)
    endpoints = rm.rows([f"ft-{t}" for t in TASKS])
    truth = true_accuracy(held)
    t0 = time.perf_counter()
    bank = TwoPL(dims=dims, seed=seed).fit(ref).item_bank()
    fit_s = time.perf_counter() - t0
    cells: dict[tuple[str, int, str], float] = {}
    est_s: dict[str, list[float]] = {}
    for method in METHODS:
        for n in ns:
            anchors = extract(method, n, seed, bank=bank, responses=ref)
            correct = anchor_correctness(held, anchors)
            for name in NAMES:
                est = build_estimator(name, anchors, bank, endpoints=endpoints, validation=ref)
                t1 = time.perf_counter()
                values = est.estimate(correct)
                est_s.setdefault(name, []).append((time.perf_counter() - t1) / len(test_models))
                cells[(method, n, name)] = mae(values, truth)
    return {
        "cells": cells,
        "fit_s": fit_s,
        "est_s": est_s,
        "sizes": (len(ref.models), len(held.models)),
    }


def measure_candidate_time(meta: dict, ns: Sequence[int], repeats: int = 4) -> dict:
    """Seconds per candidate on the resident bench: merge + n anchors per task.

    The full split is timed once in the same process (so contention from other jobs hits
    both sides alike); the population run's medians over its TIES merges are kept beside it.
    """
    from finetune import build_all
    from study import Bench, load_splits

    from merge3.assets import minilm_dir

    pop = [r for m, r in meta.items() if m.startswith("pop-") and r["operator"] == "ties"]
    out = {
        "population": (
            float(np.median([r["merge_s"] for r in pop])),
            float(np.median([r["eval_s"] for r in pop])),
        )
    }
    bench = Bench(minilm_dir(), build_all(verbose=False))
    splits = load_splits()
    test = {t: splits[t]["test"] for t in TASKS}
    recipes = [(r["operator"], r["params"]) for r in pop][:repeats]
    rng = np.random.default_rng(0)
    bench.merge(*recipes[0])  # warm-up: operator tables are built once per run
    merge_s = bench.merge(*recipes[1 % len(recipes)])
    t0 = time.perf_counter()
    bench.correct(bench.evaluator(test))  # once: the same process's conditions as anchors
    out["full"] = merge_s, time.perf_counter() - t0
    for n in ns:
        ev = bench.evaluator(
            {t: [test[t][i] for i in rng.choice(len(test[t]), n, replace=False)] for t in TASKS}
        )
        merge_s, eval_s = [], []
        for op, params in recipes:
            merge_s.append(bench.merge(op, params))
            t0 = time.perf_counter()
            bench.correct(ev)
            eval_s.append(time.perf_counter() - t0)
        out[f"n={n}"] = float(np.median(merge_s)), float(np.median(eval_s))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--models", type=int, default=100, help="population size (population.py)")
    ap.add_argument("--dims", type=int, default=2)
    ap.add_argument("--population-file", default=None, help="an npz (e.g. a partial run)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    t_start = time.time()
    from population import build_population

    path = args.population_file or build_population(args.models)
    rm, meta = load_population(path)
    population = [m for m in rm.models if m.startswith("pop-")]
    results = [
        run_seed(rm, population, s, N_ANCHORS, args.dims)
        for s in tqdm(range(args.seeds), desc="seeds")
    ]
    cells = {k: float(np.mean([r["cells"][k] for r in results])) for k in results[0]["cells"]}
    header = ["extraction", "n / task", *NAMES, "best ÷ mean"]
    rows = []
    for method in METHODS:
        for n in N_ANCHORS:
            vals = [cells[(method, n, e)] for e in NAMES]
            rows.append([method, str(n), *(f"{v:.4f}" for v in vals), f"{min(vals) / vals[0]:.2f}"])
    best = min(cells, key=cells.get)
    timing = measure_candidate_time(meta, N_ANCHORS)
    full_items = len(rm.items)
    est_s = {e: float(np.mean([np.mean(r["est_s"][e]) for r in results])) for e in NAMES}
    full_m, full_e = timing["full"]
    pop_merge, pop_eval = timing["population"]
    cost = []
    for n, items, ratio in cost_rows(full_items, N_ANCHORS, len(TASKS)):
        m, e = timing[f"n={n}"]
        per = m + e + est_s["gmpirt"]
        cost.append(
            [
                str(n),
                str(items),
                f"{ratio:.1f}×",
                f"{m:.3f}",
                f"{e:.3f}",
                f"{est_s['gmpirt']:.4f}",
                f"{per:.2f}",
                f"{(full_m + full_e) / per:.1f}×",
            ]
        )
    acc = np.array([true_accuracy(rm.rows([m]))[t][0] for m in population for t in TASKS])
    sizes = results[0]["sizes"]
    z = np.load(path, allow_pickle=False)
    text = "\n".join(
        [
            START,
            "## SentEval: estimators on real merged models (issue #7): "
            "`experiments/senteval/estimator_study.py`",
            "",
            "    " + command(),
            "",
            f"Response matrix: {len(population)} random merges of the six MiniLM endpoints "
            "(`experiments/senteval/population.py`: operator uniform over task_arithmetic / "
            "ties / dare_ties / tsv, random weights, densities and λ/α) × "
            f"{full_items} SentEval test items (all six full test splits), bf16 evaluation; "
            f"per-task accuracy of the merges ranges {acc.min():.3f}–{acc.max():.3f} "
            f"(mean {acc.mean():.3f}). "
            f"{_agreement_text(meta)} Per seed ({args.seeds} seeds), a 2PL (D = {args.dims}) "
            f"is fitted on {sizes[0]} merges; the disjoint other {sizes[1]} are estimated "
            "from n anchors per task (anchors extracted with the reference half's fit / "
            "responses). `mpirt`/`gmpirt`: endpoint abilities from the endpoints' full "
            "responses; `gpirt`/`gmpirt` mix λ calibrated on the reference half. Cells: "
            "MAE of estimated vs true full-split accuracy, mean over tasks, held-out models "
            f"and seeds. IRT fit {np.mean([r['fit_s'] for r in results]):.0f} s per seed. "
            f"Lowest MAE: {best[2]} with {best[0]} anchors, n = {best[1]}: {cells[best]:.4f}. "
            "SentEval items carry no subjects, so `stratified` draws the same anchors as "
            "`random`.",
            "",
            *markdown_table(header, rows),
            "",
            "Cost per candidate (medians, measured on the resident bench: merge = a TIES merge "
            "of the six endpoints written in place, bf16 evaluation copy synced; eval = one "
            "pass over the items; estimate = gmpirt on one model). Full split (timed once in this "
            "process): "
            f"{full_items} items, merge {full_m:.3f} s + eval {full_e:.2f} s = "
            f"{full_m + full_e:.2f} s per candidate (population run: merge {pop_merge:.2f} s, "
            f"eval {pop_eval:.2f} s, medians over its TIES merges).",
            "",
            *markdown_table(
                [
                    "n / task",
                    "items / candidate",
                    "full ÷ anchors (items)",
                    "merge s",
                    "eval s",
                    "estimate s",
                    "total s",
                    "full ÷ anchors (wall)",
                ],
                cost,
            ),
            "",
            f"Machine: {machine()}; population evaluated with torch {z['torch']}, "
            f"{int(z['threads'])} threads; {time.time() - t_start:.0f} s in all "
            "(population cached).",
            END,
        ]
    )
    print(text)
    if not args.no_write:
        replace_section(RESULTS, START, END, text)
        print(f"wrote {RESULTS}")


def _agreement_text(meta: dict) -> str:
    check = meta.get("check", {}).get("agreement", [])
    if not check:
        return ""
    agree = ", ".join(
        f"{c['agree']:.4f} (acc {c['acc_fp32']:.4f} fp32 vs {c['acc_eval']:.4f})" for c in check
    )
    return f"bf16 vs fp32 per-item agreement on {len(check)} merges: {agree}."


if __name__ == "__main__":
    main()
