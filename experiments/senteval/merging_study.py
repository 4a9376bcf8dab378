"""Merging six SentEval endpoints of all-MiniLM-L6-v2: baselines tuned on validation, and MERGE³.

Baselines (every endpoint weight 1): averaging (task arithmetic with λ = 1/6), task arithmetic,
TIES (density 0.2, disjoint mean), DARE-TIES (density 0.3, disjoint mean, l1 rescale) and TSV-M.
Their one scalar (λ, or α for TSV) is picked on the full ``search`` (validation) split by mean
normalised accuracy (merged ÷ the endpoint's own accuracy), then the pick is scored on ``test``.

MERGE³ is driven from merge3's components, because the ``merge3 search`` engine loads causal
LMs only (see README): the reference models are everything evaluated on the full ``search``
split above (base, six endpoints, every grid merge); a 2PL (D = 2) is fitted on them in Pyro;
anchors are extracted from the ``search`` items; ``gmpirt`` gets the endpoints' abilities from
their responses and its mix λ from the grid merges (they are merges of the same endpoints, with
full responses: exactly gmpirt's validation data). A pymoo GA (``make_algorithm('ga')``,
ask-and-tell as merge3's runner does) searches TIES' per-endpoint weights and densities and λ,
maximising the mean estimated accuracy over the six tasks: one scalar, since the table needs one
model, and it is the objective MERGE³'s single-model runs use. The candidate with the best
estimate is then scored on ``test`` (the search never sees a test item).

    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \\
        python experiments/senteval/merging_study.py
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from finetune import Recipe, build_all
from pymoo.core.evaluator import Evaluator
from pymoo.core.termination import NoTermination
from pymoo.problems.static import StaticProblem
from study import (
    RESULTS,
    TASKS,
    Bench,
    accuracy,
    command,
    load_splits,
    machine,
    markdown_table,
    response_matrix,
    study_cache,
)
from tqdm import tqdm

from merge3.assets import minilm_dir
from merge3.estimate import TwoPL
from merge3.estimate.cli_support import build_estimator
from merge3.evolve.algorithms import make_algorithm
from merge3.evolve.genome import GenomeSpace
from merge3.evolve.problem import MergeProblem
from merge3.extract import extract
from merge3.merging import get_operator
from merge3.results_md import replace_section

START, END = "<!-- senteval_merging:start -->", "<!-- senteval_merging:end -->"
BASELINES: dict[str, tuple[dict, str, list[float]]] = {
    # operator: (fixed parameters, tuned parameter, grid)
    "task_arithmetic": ({}, "lambda", [0.1, 0.2, 0.3, 0.4, 0.5, 0.7]),
    "ties": ({"density": 0.2, "normalize": True}, "lambda", [0.6, 0.8, 1.0, 1.2, 1.5, 2.0]),
    "dare_ties": ({"density": 0.3, "normalize": True}, "lambda", [0.6, 0.8, 1.0, 1.2, 1.5, 2.0]),
    "tsv": ({}, "alpha", [0.4, 0.6, 0.8, 1.0, 1.3, 1.6]),
}


def normalised(acc: dict[str, float], ref: dict[str, float]) -> float:
    """Mean over tasks of merged ÷ fine-tuned accuracy."""
    return float(np.mean([acc[t] / ref[t] for t in TASKS]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--anchors", type=int, default=20, help="anchors per task for MERGE³")
    ap.add_argument("--extraction", default="irt-kmeans")
    ap.add_argument("--population", type=int, default=20)
    ap.add_argument("--generations", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    t_start = time.time()
    dirs = build_all()
    bench = Bench(minilm_dir(), dirs)
    splits = load_splits()
    search = {t: splits[t]["search"] for t in TASKS}
    test = {t: splits[t]["test"] for t in TASKS}
    ev_search, ev_test = bench.evaluator(search), bench.evaluator(test)
    search_rows: dict[str, dict] = {}
    test_acc: dict[str, dict[str, float]] = {}

    for name, task in tqdm([("base", None)] + [(f"ft-{t}", t) for t in TASKS], desc="endpoints"):
        bench.load_endpoint(task)
        search_rows[name] = bench.correct(ev_search)
        test_acc[name] = accuracy(bench.correct(ev_test))
    ft_test = {t: test_acc[f"ft-{t}"][t] for t in TASKS}
    ft_search = {t: accuracy(search_rows[f"ft-{t}"])[t] for t in TASKS}
    base_heads = test_acc["base"]

    rows = {"base encoder + task heads": (base_heads, "")}
    merge_s: list[float] = []
    merge_s.append(bench.merge("task_arithmetic", {"weight": 1.0, "lambda": 1 / len(TASKS)}))
    rows["averaging (λ = 1/6)"] = (accuracy(bench.correct(ev_test)), "")
    grid_models = []
    picks = {}
    for op, (fixed, pname, grid) in tqdm(BASELINES.items(), desc="baselines"):
        scores = {}
        for v in grid:
            merge_s.append(bench.merge(op, {"weight": 1.0, **fixed, pname: v}))
            name = f"{op}@{pname}={v}"
            search_rows[name] = bench.correct(ev_search)
            grid_models.append(name)
            scores[v] = normalised(accuracy(search_rows[name]), ft_search)
        best = max(grid, key=lambda v: scores[v])
        bench.merge(op, {"weight": 1.0, **fixed, pname: best})
        picks[op] = {"param": pname, "value": best, "search_scores": scores}
        rows[op] = (
            accuracy(bench.correct(ev_test)),
            f"{pname} = {best} (search {scores[best]:.3f})",
        )
        print(op, picks[op], flush=True)

    # --- MERGE³: extract anchors, estimate with gmpirt, evolve with a GA ----------------------
    t_m3 = time.time()
    refs = response_matrix(search_rows, search)
    irt = TwoPL(dims=2, seed=args.seed).fit(refs)
    bank = irt.item_bank()
    anchors = extract(args.extraction, args.anchors, args.seed, bank=bank, responses=refs)
    endpoints_rm = refs.rows([f"ft-{t}" for t in TASKS])
    estimator = build_estimator(
        "gmpirt", anchors, bank, endpoints=endpoints_rm, validation=refs.rows(grid_models)
    )
    by_id = {i.id: i for t in TASKS for i in search[t]}
    ev_anchor = bench.evaluator(
        {t: [by_id[x] for x in anchors.tasks[t].items] for t in anchors.tasks}
    )
    space = GenomeSpace(get_operator("ties"), list(TASKS), fixed={"normalize": True})
    problem = MergeProblem(space.lower, space.upper, 1)
    algorithm = make_algorithm("ga", args.population, args.seed)
    algorithm.setup(problem, termination=NoTermination(), seed=args.seed)
    history = []
    cand_s = []
    for _ in tqdm(range(args.generations), desc="MERGE³ generations"):
        pop = algorithm.ask()
        F = []
        for x in pop.get("X"):
            t0 = time.perf_counter()
            recipe = space.decode(x)
            bench.merge(recipe["operator"], recipe["params"])
            c = bench.correct(ev_anchor)
            est = estimator.estimate({t: c[t][None] for t in anchors.tasks})
            fit = float(np.mean([est[t][0] for t in TASKS]))
            cand_s.append(time.perf_counter() - t0)
            history.append((fit, recipe))
            F.append([-fit])
        Evaluator().eval(StaticProblem(problem, F=np.array(F)), pop)
        algorithm.tell(infills=pop)
    search_s = time.time() - t_m3
    best_fit, best_recipe = max(history, key=lambda h: h[0])
    bench.merge(best_recipe["operator"], best_recipe["params"])
    m3_test = accuracy(bench.correct(ev_test))
    m3_search = normalised(accuracy(bench.correct(ev_search)), ft_search)
    n_anchor_items = sum(len(a.items) for a in anchors.tasks.values())
    rows["MERGE³ (ties, GA, gmpirt)"] = (
        m3_test,
        f"est. mean acc {best_fit:.3f}; search {m3_search:.3f}",
    )
    out = {
        "picks": picks,
        "merge3": {"recipe": best_recipe, "estimate": best_fit, "lam": estimator.lam_},
        "test": {k: v[0] for k, v in rows.items()},
        "finetuned": ft_test,
    }
    (study_cache() / "merging_study.json").write_text(json.dumps(out, indent=2, default=float))

    header = ["model", *TASKS, "mean acc", "normalised", "tuned on search"]
    lines = [["fine-tuned (each task: its own endpoint)"]]
    lines[0] += [f"{ft_test[t]:.3f}" for t in TASKS]
    lines[0] += [f"{np.mean(list(ft_test.values())):.3f}", "1.000", ""]
    for name, (acc, note) in rows.items():
        lines.append(
            [name, *(f"{acc[t]:.3f}" for t in TASKS)]
            + [f"{np.mean([acc[t] for t in TASKS]):.3f}", f"{normalised(acc, ft_test):.3f}", note]
        )
    cost = (
        f"MERGE³ search: {len(history)} candidates ({args.population} × {args.generations} "
        f"generations), {n_anchor_items} anchor items each ({args.anchors} per task, "
        f"`{args.extraction}`) vs {sum(len(v) for v in search.values())} items of the full "
        f"search split; {np.mean(cand_s):.2f} s per candidate (merge + anchors + estimate), "
        f"{search_s:.0f} s in all including the IRT fit on {len(refs.models)} reference models. "
        f"gmpirt mix λ per task: "
        + ", ".join(f"{t} {estimator.lam_[t]:.2f}" for t in TASKS)
        + f". Median merge time of a baseline candidate {np.median(merge_s):.2f} s (after each "
        "operator's one-off precompute)."
    )
    text = "\n".join(
        [
            START,
            "## SentEval merging study (issue #7): `experiments/senteval/merging_study.py`",
            "",
            "    " + command(),
            "",
            "all-MiniLM-L6-v2 fully fine-tuned on each task's `train` split "
            f"(`experiments/senteval/finetune.py`, recipe {Recipe()}), one linear head per "
            "task; the six encoders merged, each task read through its own head. Accuracy on "
            "the `test` splits (bf16 evaluation, max 64 tokens); normalised = mean over tasks "
            "of merged ÷ fine-tuned. Baselines' λ/α picked on the full `search` split over "
            "the grids "
            + "; ".join(f"{op} {p} ∈ {g}" for op, (_, p, g) in BASELINES.items())
            + ". TIES density 0.2, DARE-TIES density 0.3, both with the disjoint mean.",
            "",
            *markdown_table(header, lines),
            "",
            cost,
            "",
            f"Machine: {machine()}; {time.time() - t_start:.0f} s in all.",
            END,
        ]
    )
    print(text)
    if not args.no_write:
        replace_section(RESULTS, START, END, text)
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
