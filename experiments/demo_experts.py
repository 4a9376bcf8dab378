"""Measure the demo's LoRA experts on SmolLM2-135M-Instruct: training time per expert and
letter accuracy (0-shot MMLU, lm-eval's prompt) of each expert vs the base on every group's
``test`` items (a seeded sample of ``--n-test`` per group).

    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \\
        python experiments/demo_experts.py --n-test 200
"""

from __future__ import annotations

import argparse
import json
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
    args = ap.parse_args()
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
        print(f"expert {g}: train {train_s:.0f}s", rows[g], flush=True)
    print("| model | " + " | ".join(DEMO_GROUPS) + " |")
    for name, acc in rows.items():
        print(f"| {name} | " + " | ".join(f"{acc[g]:.3f}" for g in DEMO_GROUPS) + " |")


if __name__ == "__main__":
    main()
