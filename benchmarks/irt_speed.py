"""IRT speed, side by side with py-irt in one run, on the same data; prints ratios.

Data: D = 2 multidimensional 2PL, 200 models × 4,000 items (4 tasks) by default, 10% of the
responses held out. Both libraries fit a D = 2 2PL on the rest, alternately (merge3, py-irt,
merge3, py-irt, … ``--reps`` times each, same data and seed) so that both see the same machine
load; medians of each and the ratio of the medians are reported. Held-out log-likelihood is
computed on the held-out responses (abilities and item parameters as fitted; deterministic per
seed). Then: MAP abilities of 1,000 candidates from 100 anchors (and mp-IRT mixing weights over
3 endpoints).

    .venv/bin/python benchmarks/irt_speed.py [--reps N] [--pyirt-epochs N] [--models M --items I]

The defaults fit ``make bench`` (274 s on 2 cores, 2026-12-05); the earlier single-fit run used
``--models 400 --items 10000`` (py-irt ≈ 29 min per fit there). py-irt is optional (extra
``pyirt``; ``benchmarks/run_all.py`` installs it beside the venv); without it the py-irt columns
are skipped and said so. Writes ``benchmarks/results/irt_speed.json`` (``--out``) and this
benchmark's section of ``experiments/RESULTS.md`` (not with ``--no-write``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from merge3.estimate.ability import fit_abilities, fit_mixing
from merge3.estimate.irt import TwoPL
from merge3.estimate.responses import ResponseMatrix
from merge3.estimate.synthetic import make_world
from merge3.results_md import replace_section

OUT = Path(__file__).parent / "results" / "irt_speed.json"
RESULTS = Path(__file__).parents[1] / "experiments" / "RESULTS.md"
START, END = "<!-- irt_speed:start -->", "<!-- irt_speed:end -->"


def write_results(r: dict) -> None:
    """Replace this benchmark's section of experiments/RESULTS.md with the numbers of ``r``."""
    reps = r.get("reps", 1)
    med = " (median)" if reps > 1 else ""

    def each(key: str) -> str:
        return " / ".join(f"{t:.1f}" for t in r.get(f"{key}_times_s", [r[f"{key}_s"]]))

    lines = [
        START,
        "## IRT speed (issue #4): `benchmarks/irt_speed.py`",
        "",
        f"D = 2 2PL on {r['models']} × {r['items']} synthetic responses, 10% held out; "
        + (
            f"medians of {reps} alternated reps (merge3, py-irt, merge3, …; same data, rep k "
            "fits with seed k in both libraries). "
            if reps > 1
            else "one fit each. "
        )
        + f"2 CPU cores (1-min load average {r['load_avg_1min_start']:.1f} at the start, "
        f"{r['load_avg_1min_end']:.1f} at the end; on a shared box CPU time is the steadier "
        "figure).",
        "",
        f"| | wall s{med} | wall s per rep | CPU s{med} | held-out log-lik |",
        "|---|---|---|---|---|",
        f"| merge3 (Pyro MAP, {r['merge3_steps']} steps) | {r['merge3_fit_s']:.1f} | "
        f"{each('merge3_fit')} | {r['merge3_fit_cpu_s']:.1f} | {r['merge3_heldout_ll']:.4f} |",
    ]
    if "pyirt_fit_s" in r:
        lines += [
            f"| py-irt multidim_2pl ({r['pyirt_epochs']} epochs) | {r['pyirt_fit_s']:.1f} | "
            f"{each('pyirt_fit')} | {r['pyirt_fit_cpu_s']:.1f} | {r['pyirt_heldout_ll']:.4f} |",
            f"| true parameters | | | | {r['truth_heldout_ll']:.4f} |",
            "",
            *(
                [
                    f"py-irt diverged in rep {f['rep']} (seed {f['seed']}) after {f['s']:.0f} s: "
                    f"{f['error'].rstrip(':')} (NaN); its median is over the other reps."
                    for f in r.get("pyirt_failures", [])
                ]
                + [""]
                if r.get("pyirt_failures")
                else []
            ),
            f"py-irt / merge3{' (ratio of the medians)' if med else ''}: "
            f"{r['speedup']:.1f}× wall time, "
            f"{r['speedup_cpu']:.1f}× CPU time.",
        ]
    lines += [
        "",
        f"Abilities (MAP, batched Newton) of 1,000 candidates × 100 anchors: "
        f"{r['abilities_1000x100_s']:.3f} s; mp-IRT mixing weights (J = 3, simplex): "
        f"{r['mixing_1000x100_J3_s']:.3f} s.",
        END,
    ]
    text = "\n".join(lines)
    replace_section(RESULTS, START, END, text)


def heldout_ll(p: np.ndarray, Y: np.ndarray, held: np.ndarray) -> float:
    p = np.clip(p[held], 1e-9, 1 - 1e-9)
    y = Y[held]
    return float(np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def fit_pyirt(
    Y: np.ndarray, train: np.ndarray, epochs: int, seed: int
) -> tuple[float, float, np.ndarray]:
    """py-irt's ``multidim_2pl`` (its default optimiser settings) on the training responses."""
    from merge3.estimate.pyirt_backend import fit_pyirt as backend

    n_models, n_items = Y.shape
    rm = ResponseMatrix(
        tuple(f"m{m}" for m in range(n_models)),
        tuple(f"t/i{i}" for i in range(n_items)),
        ("t",) * n_items,
        np.where(train, Y, np.nan),
    )
    t0, c0 = time.perf_counter(), time.process_time()
    bank = backend(rm, "2pl", dims=2, epochs=epochs, seed=seed)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    theta = np.array([bank.abilities[m] for m in rm.models])
    return elapsed, cpu, 1 / (1 + np.exp(-(theta @ bank.alpha.T - bank.beta)))


def fit_stats(tool: str, runs: dict[str, list[float]]) -> dict:
    """One library's fits: median and per-rep wall time, CPU time and held-out log-likelihood."""
    out = {}
    for key, median_name, list_name in (
        ("s", "fit_s", "fit_times_s"),
        ("cpu", "fit_cpu_s", "fit_cpu_times_s"),
        ("ll", "heldout_ll", "heldout_lls"),
    ):
        values = runs[f"{tool}_{key}"]
        out[f"{tool}_{median_name}"] = statistics.median(values)
        out[f"{tool}_{list_name}"] = values
    return out


def pyirt_missing(no_pyirt: bool) -> str | None:
    """Why py-irt will not run, or None when it is importable."""
    if no_pyirt:
        return "--no-pyirt"
    try:
        import py_irt  # noqa: F401
    except ImportError as exc:
        return str(exc)
    return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", type=int, default=200)
    ap.add_argument("--items", type=int, default=4000)
    ap.add_argument("--reps", type=int, default=3, help="alternated fits of each library")
    ap.add_argument("--pyirt-epochs", type=int, default=2000, help="py-irt's default is 2000")
    ap.add_argument("--no-pyirt", action="store_true")
    ap.add_argument("--out", type=Path, default=OUT, help="results JSON")
    ap.add_argument("--from-json", action="store_true", help="only rewrite RESULTS.md from JSON")
    ap.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    args = ap.parse_args()
    if args.reps < 1:
        ap.error("--reps must be at least 1")
    if args.from_json:
        write_results(json.loads(args.out.read_text()))
        return
    print(f"torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}", flush=True)

    rng = np.random.default_rng(0)
    world = make_world(items_per_task=args.items // 4, seed=0)
    theta = rng.normal(size=(args.models, 2))
    Y = world.sample(theta, rng)
    held = rng.random(Y.shape) < 0.1
    train = np.where(held, np.nan, Y)
    result: dict = {
        "models": args.models,
        "items": args.items,
        "heldout_fraction": 0.1,
        "reps": args.reps,
        "order": "alternated: merge3, py-irt, merge3, py-irt, ...; rep k fits with seed k",
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "command": "benchmarks/irt_speed.py " + " ".join(sys.argv[1:]),
    }
    result["load_avg_1min_start"] = os.getloadavg()[0]
    result["truth_heldout_ll"] = heldout_ll(world.prob(theta), Y, held)
    missing = pyirt_missing(args.no_pyirt)
    if missing:
        print(f"py-irt not run ({missing}); install the extra `pyirt` to compare", flush=True)
    runs: dict[str, list[float]] = {}
    failures: list[dict] = []
    for rep in range(args.reps):
        t0, c0 = time.perf_counter(), time.process_time()
        fit = TwoPL(dims=2, seed=rep).fit(train)
        secs, cpu = time.perf_counter() - t0, time.process_time() - c0
        ll = heldout_ll(fit.predict_proba(), Y, held)
        for key, v in (("merge3_s", secs), ("merge3_cpu", cpu), ("merge3_ll", ll)):
            runs.setdefault(key, []).append(v)
        print(
            f"rep {rep}: merge3 2PL D=2 fit {secs:.1f} s (CPU {cpu:.1f} s, load "
            f"{os.getloadavg()[0]:.1f}), held-out LL {ll:.4f} (true parameters "
            f"{result['truth_heldout_ll']:.4f})",
            flush=True,
        )
        if missing:
            continue
        t0 = time.perf_counter()
        try:
            secs, cpu, p = fit_pyirt(Y, ~held, args.pyirt_epochs, rep)
        except (ValueError, RuntimeError) as exc:  # py-irt's SVI can diverge to NaN
            first = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
            failures.append(
                {"rep": rep, "seed": rep, "s": time.perf_counter() - t0, "error": first}
            )
            print(f"rep {rep}: py-irt failed after {failures[-1]['s']:.1f} s: {first}", flush=True)
            continue
        ll = heldout_ll(p, Y, held)
        for key, v in (("pyirt_s", secs), ("pyirt_cpu", cpu), ("pyirt_ll", ll)):
            runs.setdefault(key, []).append(v)
        print(
            f"rep {rep}: py-irt multidim_2pl ({args.pyirt_epochs} epochs) {secs:.1f} s "
            f"(CPU {cpu:.1f} s, load {os.getloadavg()[0]:.1f}), held-out LL {ll:.4f}",
            flush=True,
        )

    med = {k: statistics.median(v) for k, v in runs.items()}
    result.update(fit_stats("merge3", runs), merge3_steps=fit.n_iter_)
    if failures:
        result["pyirt_failures"] = failures
    if not missing and "pyirt_s" in runs:
        result.update(
            fit_stats("pyirt", runs),
            pyirt_epochs=args.pyirt_epochs,
            speedup=med["pyirt_s"] / med["merge3_s"],
            speedup_cpu=med["pyirt_cpu"] / med["merge3_cpu"],
        )
        print(
            f"medians of {args.reps} (py-irt: {len(runs['pyirt_s'])} that converged): merge3 "
            f"{med['merge3_s']:.1f} s, py-irt "
            f"{med['pyirt_s']:.1f} s; ratio py-irt / merge3: wall time {result['speedup']:.1f}x, "
            f"CPU time {result['speedup_cpu']:.1f}x; held-out LL difference merge3 − py-irt: "
            f"{result['merge3_heldout_ll'] - result['pyirt_heldout_ll']:+.4f}",
            flush=True,
        )

    # Abilities of 1,000 candidates from 100 anchors (25 per task), batched.
    anchors = np.concatenate(
        [np.arange(k * args.items // 4, k * args.items // 4 + 25) for k in range(4)]
    )
    cand = rng.normal(size=(1000, 2))
    Ya = world.sample(cand, rng)[:, anchors]
    a, b = fit.alpha_[anchors], fit.beta_[anchors]
    fit_abilities(a, b, Ya[:10])  # warm-up
    t0 = time.perf_counter()
    fit_abilities(a, b, Ya)
    result["abilities_1000x100_s"] = time.perf_counter() - t0
    ends = rng.normal(size=(3, 2))
    t0 = time.perf_counter()
    fit_mixing(a, b, ends, Ya, "simplex")
    result["mixing_1000x100_J3_s"] = time.perf_counter() - t0
    print(
        f"abilities 1000 candidates × 100 anchors: {result['abilities_1000x100_s']:.3f} s; "
        f"mp-IRT λ (J = 3, simplex): {result['mixing_1000x100_J3_s']:.3f} s"
    )
    result["load_avg_1min_end"] = os.getloadavg()[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    if not args.no_write:
        write_results(result)


if __name__ == "__main__":
    main()
