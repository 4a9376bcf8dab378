"""End to end against mergenetic 0.1.1: wall time per candidate of one generation of the demo.

The demo setting (``merge3 demo``: SmolLM2-135M-Instruct, three MMLU LoRA experts, TIES over a
weight and a density per expert, 10 irt-info anchors per subject group, gmpirt) is evaluated for
one NSGA-II generation of population 8 by both tools, candidate by candidate, alternating which
goes first, in one run:

* merge3: ``Fitness`` of the run (merge in place → score the anchors on the resident model →
  estimate), set up as ``merge3 search`` sets it up (models resident, TIES tables precomputed,
  anchors tokenised once, IRT fitted on the cached reference responses).
* mergenetic: its ``MultilingualMergingProblem._evaluate`` on the same genome, in its own venv
  (``mergenetic_venv.py``) through ``mergenetic_worker.py``: mergekit ``run_merge`` to a folder →
  ``AutoModelForCausalLM.from_pretrained`` → generated answers to the same anchors (its Hugging
  Face route; its lm-eval route loads the model into vLLM, which needs a GPU) → its gmpirt with
  the same IRT parameters, anchors and endpoint abilities.

The genomes are merge3's first NSGA-II generation with λ = 1 (mergenetic's TIES has no λ, and
mergekit's default is 1), so both tools build the same merged model; the script checks that by
comparing mergenetic's merged weights with merge3's live model after each candidate (outside
the timed region). Writes ``benchmarks/results/e2e_mergenetic.json`` with a ``summary`` row for
``make bench``'s table.

    .venv/bin/python benchmarks/e2e_mergenetic.py [--candidates 8] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe  # noqa: E402
from mergenetic_venv import ensure_venv  # noqa: E402

from merge3.config import dump_config  # noqa: E402
from merge3.demo.prepare import ensure_demo  # noqa: E402
from merge3.demo.run import demo_config  # noqa: E402
from merge3.evolve.algorithms import make_algorithm  # noqa: E402
from merge3.evolve.calibrate import prepare_estimation  # noqa: E402
from merge3.evolve.fitness import Fitness, Merger  # noqa: E402
from merge3.evolve.problem import MergeProblem  # noqa: E402
from merge3.evolve.progress import SilentReporter  # noqa: E402
from merge3.evolve.tasks import load_tasks  # noqa: E402
from merge3.models.io import TensorReader  # noqa: E402
from merge3.runs import RunDir  # noqa: E402
from merge3.tiny import cache_root  # noqa: E402

OUT = Path(__file__).parent / "results" / "e2e_mergenetic.json"
WORKER = Path(__file__).parent / "mergenetic_worker.py"
BENCH = "arc"  # mergenetic's estimator only accepts Open LLM Leaderboard scenario names
TARGET = 5.0
PREVIEW = 200  # characters of each generated answer kept in the results JSON
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def transformers4_copy(src: Path, dst: Path) -> Path:
    """A view of a transformers-5 model folder that transformers 4.x reads the same way.

    Weights and tokenizer.json are symlinked; config.json gains the top-level ``rope_theta``
    and ``torch_dtype`` 4.x looks for, tokenizer_config.json names the tokenizer class the hub's
    SmolLM2 folder names (transformers 5 writes its own backend class there)."""
    src = src.resolve()
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        target = dst / f.name
        if target.exists() or target.is_symlink():
            target.unlink()
        if f.name == "config.json":
            cfg = json.loads(f.read_text())
            rope = cfg.get("rope_parameters") or {}
            cfg.setdefault("rope_theta", rope.get("rope_theta", 10000.0))
            cfg.setdefault("torch_dtype", cfg.get("dtype", "float32"))
            target.write_text(json.dumps(cfg, indent=2))
        elif f.name == "tokenizer_config.json":
            tok = json.loads(f.read_text())
            tok["tokenizer_class"] = "GPT2Tokenizer"  # as on the hub (no token_type_ids)
            tok["model_input_names"] = ["input_ids", "attention_mask"]
            target.write_text(json.dumps(tok, indent=2))
        else:
            target.symlink_to(f)
    return dst


def mergenetic_prompt(item) -> str:
    """The item as a mergenetic multiple-choice prompt: question and ``(A) …`` options.

    mergenetic appends its own ``\\nAnswer:`` and reads the last ``(X)`` of the answer."""
    text = (item.context + item.question).rstrip()
    if text.endswith("Answer:"):
        text = text[: -len("Answer:")].rstrip()
    lines = []
    for line in text.split("\n"):
        if len(line) > 2 and line[1] == "." and line[0] in "ABCD":
            line = f"({line[0]}){line[2:]}"
        lines.append(line)
    return "\n".join(lines)


def tiny_benchmarks(bank) -> dict:
    """merge3's item parameters in the layout mergenetic's estimator reads from tinyBenchmarks.

    Its logit is Σ_d (A_d θ_d − B_d); merge3's is αᵀθ − β: A = α, and β on the first dimension."""
    n, dims = bank.alpha.shape
    a = bank.alpha.T[None].copy()  # (1, D, N)
    b = np.zeros((1, dims, n))
    b[0, 0] = bank.beta
    return {
        "lb": {"irt_parameters": {"A": a, "B": b}, "scenarios_position": {BENCH: list(range(n))}}
    }


def first_generation(space, n: int, seed: int, n_obj: int) -> np.ndarray:
    """merge3's first NSGA-II generation (seeded), with λ set to 1 where λ is a gene."""
    problem = MergeProblem(space.lower, space.upper, n_obj)
    algorithm = make_algorithm("nsga2", n, seed, n_obj)
    algorithm.setup(problem, seed=seed)
    genomes = np.array(algorithm.ask().get("X"), dtype=float)
    for k, gene in enumerate(space.genes):
        if gene.parameter == "lambda":
            genomes[:, k] = 1.0
    return genomes


def as_mergenetic(space, genome: np.ndarray) -> list[float]:
    """[w_1 … w_J, d_1 … d_J]: mergenetic's TIES genome."""
    by = {(g.parameter, g.endpoint): x for g, x in zip(space.genes, genome, strict=True)}
    j = len(space.endpoints)
    return [by[("weight", i)] for i in range(j)] + [by[("density", i)] for i in range(j)]


def weight_gap(folder: Path, model) -> dict[str, float]:
    """How far mergenetic's merged folder is from merge3's live model (same candidate).

    Tensors the folder lacks (a tied ``lm_head``) are skipped; how many were compared is kept,
    so a folder that shares no names with the model cannot pass as identical."""
    worst, num, den, compared = 0.0, 0.0, 0.0, 0
    with TensorReader(folder) as theirs:
        for name, p in model.state_dict().items():
            if name not in theirs:
                continue
            ours, other = p.float(), theirs.get(name).float()
            worst = max(worst, float((ours - other).abs().max()))
            num += float((ours - other).pow(2).sum())
            den += float(ours.pow(2).sum())
            compared += 1
    if not compared:
        raise RuntimeError(f"{folder}: no tensor in common with merge3's model")
    return {"max_abs": worst, "rel_fro": (num / den) ** 0.5, "tensors": compared}


class Worker:
    """mergenetic_worker.py in mergenetic's venv: one genome in, one JSON result out."""

    def __init__(self, python: Path, setup: Path, cwd: Path, log: Path) -> None:
        env = {**os.environ, **OFFLINE, "PYTHONUNBUFFERED": "1"}
        env.pop("PYTHONPATH", None)
        self.log = log.open("w")
        self.proc = subprocess.Popen(
            [str(python), str(WORKER), str(setup)],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        self.ready = self._read()

    def _read(self) -> dict:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("@@result "):
                return json.loads(line[len("@@result ") :])
        raise RuntimeError(f"mergenetic worker exited ({self.proc.wait()}); see {self.log.name}")

    def evaluate(self, genome: list[float]) -> dict:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"genome": genome}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)
        self.log.close()


def prepare_mergenetic(
    cfg, tasks, estimation, work: Path, batch_size: int, max_new_tokens: int | None = None
) -> Path:
    """Model views, tinyBenchmarks.pkl and the worker's set-up file in mergenetic's workdir."""
    models = {
        name: transformers4_copy(Path(path), work / "models" / name)
        for name, path in {"base": cfg.models.base, **cfg.models.endpoints}.items()
    }
    estimator = estimation.estimator
    bank = estimator.irt.bank
    (work / "tinyBenchmarks.pkl").write_bytes(pickle.dumps(tiny_benchmarks(bank)))
    search, sample_ids, weights = {}, {}, {}
    for task, anchors in estimation.anchors.tasks.items():
        by_id = {i.id: i for i in tasks[task].items("search")}
        items = [by_id[x] for x in anchors.items]
        search[task] = {
            "prompt": [mergenetic_prompt(i) for i in items],
            "answer": ["ABCD"[int(i.answer)] for i in items],
        }
        sample_ids[task] = [int(k) for k in bank.index(list(anchors.items))]
        weights[task] = [float(w) for w in anchors.weights]
    setup = {
        "workdir": str(work),
        "base": str(models["base"]),
        "endpoints": [str(models[n]) for n in cfg.models.endpoints],
        "dtype": cfg.models.dtype,
        "eval_batch_size": batch_size,
        "smoke_max_new_tokens": max_new_tokens,
        "search": search,
        "conf_pe": {
            "sample_ids": sample_ids,
            "weights": weights,
            "thetas": np.asarray(estimator.irt.endpoints, float).tolist(),
            "bench": BENCH,
            "mode": "gmpirt",
        },
    }
    path = work / "setup.json"
    path.write_text(json.dumps(setup))
    return path


def median(xs) -> float:
    return float(statistics.median(xs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--candidates", type=int, default=8, help="one generation: population 8")
    ap.add_argument(
        "--eval-batch-size", type=int, default=5, help="mergenetic's default eval_batch_size"
    )
    ap.add_argument(
        "--mergenetic-candidates",
        type=int,
        default=3,
        help="how many of them also go through mergenetic (≈ 15 min each on 2 CPU cores)",
    )
    ap.add_argument(
        "--smoke-max-new-tokens",
        type=int,
        default=None,
        help="harness check only: cap mergenetic's generation (its default is 1024 tokens); "
        "the results are marked smoke and are not a measurement",
    )
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--keep-workdir", action="store_true")
    args = ap.parse_args()
    if not 1 <= args.mergenetic_candidates <= args.candidates:
        ap.error("--mergenetic-candidates must be between 1 and --candidates")
    os.environ.update(OFFLINE)
    machine_start = describe()
    python = ensure_venv()
    ensure_demo()
    cfg = demo_config(generations=1, population=args.candidates)

    t0 = time.perf_counter()
    tasks = load_tasks(cfg)
    merger = Merger(cfg)
    tmp = Path(tempfile.mkdtemp(prefix="e2e-mergenetic-"))
    run = RunDir(tmp / "run")
    run.create(dump_config(cfg))
    store = run.store()
    estimation = prepare_estimation(run, cfg, merger, tasks, store, SilentReporter())
    fitness = Fitness.build(cfg, merger, tasks, estimation.anchors, estimation.estimator)
    merge3_setup_s = time.perf_counter() - t0
    print(f"merge3 set-up (load, TIES tables, IRT, anchors): {merge3_setup_s:.1f} s")

    work = cache_root() / "bench" / "mergenetic-work"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    setup = prepare_mergenetic(
        cfg, tasks, estimation, work, args.eval_batch_size, args.smoke_max_new_tokens
    )
    t1 = time.perf_counter()
    worker = Worker(python, setup, work, tmp / "mergenetic.log")
    mergenetic_setup_s = time.perf_counter() - t1
    print(f"mergenetic set-up (process, imports, problem): {mergenetic_setup_s:.1f} s")

    space = merger.space
    genomes = first_generation(space, args.candidates, cfg.search.seed, len(cfg.objective_names))
    answers = {t: list(v["answer"]) for t, v in json.loads(setup.read_text())["search"].items()}
    rows = []
    try:
        for i, genome in enumerate(genomes):
            paired = i < args.mergenetic_candidates
            order = ("merge3", "mergenetic") if i % 2 == 0 else ("mergenetic", "merge3")
            row: dict = {"candidate": i, "genome": genome.tolist(), "first": order[0]}
            for who in order if paired else ("merge3",):
                if who == "merge3":
                    ts = time.perf_counter()
                    ev = fitness(genome)
                    row["merge3"] = {
                        "wall_s": time.perf_counter() - ts,
                        **ev.timings,
                        "estimates": ev.estimates,
                        "anchor_correct": ev.anchor_correct,
                    }
                else:
                    row["mergenetic"] = worker.evaluate(as_mergenetic(space, genome))
            line = f"candidate {i}: merge3 {row['merge3']['wall_s']:.2f} s"
            if paired:
                theirs = row["mergenetic"]
                row["weights_vs_mergenetic"] = weight_gap(Path(theirs["merged"]), merger.model)
                theirs["anchor_correct"] = {
                    t: [
                        float(x == a)
                        for x, a in zip(theirs["extracted"][t], answers[t], strict=True)
                    ]
                    for t in answers
                }
                theirs["predictions"] = {  # the first characters say enough (up to 1024 tokens)
                    t: [text[:PREVIEW] for text in texts]
                    for t, texts in theirs["predictions"].items()
                }
                line += (
                    f", mergenetic {theirs['wall_s']:.1f} s (merge {theirs['merge_s']:.1f}, "
                    f"load {theirs['load_s']:.1f}, generate + estimate "
                    f"{theirs['evaluate_estimate_s']:.1f}); merged weights max |Δ| "
                    f"{row['weights_vs_mergenetic']['max_abs']:.2e}"
                )
            rows.append(row)
            print(line, flush=True)
    finally:
        worker.close()
        store.close()
    result = summarize(rows, merge3_setup_s, mergenetic_setup_s, worker.ready, args)
    result["machine"] = {"start": machine_start, "end": describe()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result["summary"], indent=2))
    print(f"wrote {args.out}")
    if not args.keep_workdir:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)


def summarize(rows, merge3_setup_s, mergenetic_setup_s, ready, args) -> dict:
    """Medians per candidate, the stage breakdowns, agreement, and the summary rows.

    The ratio is of paired medians (the candidates both tools evaluated, alternated); merge3's
    median over the whole generation is reported beside it."""
    paired = [r for r in rows if "mergenetic" in r]
    ours_all = [r["merge3"]["wall_s"] for r in rows]
    ours = [r["merge3"]["wall_s"] for r in paired]
    theirs = [r["mergenetic"]["wall_s"] for r in paired]
    floor = [r["mergenetic"]["merge_s"] + r["mergenetic"]["load_s"] for r in paired]
    ratio = median(theirs) / median(ours)
    floor_ratio = median(floor) / median(ours)
    stages = {
        "merge3": {
            k: median([r["merge3"][k] for r in paired])
            for k in ("merge_s", "evaluate_s", "estimate_s")
        },
        "mergenetic": {
            k: median([r["mergenetic"][k] for r in paired])
            for k in ("merge_s", "load_s", "evaluate_estimate_s")
        },
    }
    agree = [
        float(a == b)
        for r in paired
        for t in r["merge3"]["anchor_correct"]
        for a, b in zip(
            r["merge3"]["anchor_correct"][t], r["mergenetic"]["anchor_correct"][t], strict=True
        )
    ]
    mg, m3 = stages["mergenetic"], stages["merge3"]
    smoke = args.smoke_max_new_tokens is not None
    tag = (
        f"SMOKE (generation capped at {args.smoke_max_new_tokens} tokens), not a measurement; "
        if smoke
        else ""
    )
    common = f"median of {len(paired)} paired candidates of {len(rows)}, alternated"
    summary = [
        {
            "benchmark": "e2e_mergenetic",
            "comparison": "demo generation (pop 8): wall s per candidate vs mergenetic 0.1.1 as "
            "written (HF route on CPU: mergekit to disk, load, generate ≤ 1024 tokens, gmpirt)",
            "merge3": median(ours),
            "alternative": median(theirs),
            "unit": "s/candidate",
            "ratio": ratio,
            "target": TARGET,
            "target_text": f"≥ {TARGET:g}×",
            "met": ratio >= TARGET,
            "note": f"{tag}{common}; mergenetic merge {mg['merge_s']:.1f} s + load "
            f"{mg['load_s']:.1f} s + generate/estimate {mg['evaluate_estimate_s']:.1f} s",
        },
        {
            "benchmark": "e2e_mergenetic",
            "comparison": "lower bound: mergenetic's merge to disk + load alone (a free "
            "evaluator) vs merge3's whole candidate",
            "merge3": median(ours),
            "alternative": median(floor),
            "unit": "s/candidate",
            "ratio": floor_ratio,
            "target": TARGET,
            "target_text": f"≥ {TARGET:g}×",
            "met": floor_ratio >= TARGET,
            "note": f"{tag}{common}; merge3 merge {m3['merge_s']:.2f} s + anchors "
            f"{m3['evaluate_s']:.2f} s + estimate {m3['estimate_s']:.3f} s",
        },
    ]
    return {
        "smoke": smoke,
        "candidates": len(rows),
        "paired_candidates": len(paired),
        "eval_batch_size": args.eval_batch_size,
        "merge3_setup_s": merge3_setup_s,
        "mergenetic_setup_s": mergenetic_setup_s,
        "mergenetic_ready": ready,
        "per_candidate_s": {
            "merge3": {
                "median_paired": median(ours),
                "median_all": median(ours_all),
                "all": ours_all,
            },
            "mergenetic": {"median": median(theirs), "all": theirs},
        },
        "generation_s": {
            "merge3": float(sum(ours_all)),
            "mergenetic_estimated": float(median(theirs) * len(rows)),
        },
        "stages_median_s": stages,
        "ratio": ratio,
        "lower_bound_ratio": floor_ratio,
        "anchor_agreement": float(np.mean(agree)) if agree else None,
        "merged_weights_max_abs_diff": max(r["weights_vs_mergenetic"]["max_abs"] for r in paired),
        "merged_weights_rel_fro_diff": max(r["weights_vs_mergenetic"]["rel_fro"] for r in paired),
        "rows": rows,
        "summary": summary,
    }


if __name__ == "__main__":
    main()
