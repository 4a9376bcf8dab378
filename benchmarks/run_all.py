"""``make bench``: every benchmark in turn, then one summary table.

Each benchmark runs as its own process with this interpreter, one after the other (they time
things, so never two at once), with the full settings its README section documents; its output
is streamed and kept in a log. A failing benchmark becomes a "failed" row and the others still
run. At the end the rows of every ``results/*.json`` (see ``summary.py``), the machine and its
load at start and end go to ``results/summary.json`` and to the generated section of
``benchmarks/README.md``, and the table is printed.

    .venv/bin/python benchmarks/run_all.py                      # everything (≈ 65 min on 2 cores)
    .venv/bin/python benchmarks/run_all.py --only irt_speed     # a subset
    .venv/bin/python benchmarks/run_all.py --report-only        # rebuild table and README only
    .venv/bin/python benchmarks/run_all.py --quick              # smoke run, writes to a temp dir

``--quick`` passes small settings to every script and writes all outputs to a temporary folder:
neither ``results/*.json`` nor the README nor ``experiments/RESULTS.md`` is touched.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import machine  # noqa: E402
import summary  # noqa: E402

from merge3.cachedirs import publish_folder  # noqa: E402
from merge3.tiny import cache_root  # noqa: E402

REPO = HERE.parent
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
# The versions irt_speed was first measured with; --no-deps because py-irt pins old pandas, typer
# and rich, which would downgrade the venv's (README: "pyirt" extra).
PYIRT_PACKAGES = ("py-irt==0.7.1", "ordered-set==4.1.0", "toml==0.10.2")


@dataclass(frozen=True)
class Bench:
    """One script: its full-run and quick arguments (``--out`` is added by :func:`command`)."""

    name: str
    full: tuple[str, ...]
    quick: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    gpu_only: bool = False

    @property
    def script(self) -> Path:
        return HERE / f"{self.name}.py"


BENCHES = (
    Bench(
        "merge_speed",
        ("--reps", "7", "--mergekit-reps", "3"),
        ("--ops", "task_arithmetic", "--reps", "2", "--mergekit-reps", "1"),
    ),
    Bench(
        "eval_speed",
        ("--reps", "3", "--setup-reps", "2", "--per-subject", "10"),
        ("--items", "4", "--subjects", "1", "--per-subject", "7", "--reps", "1")
        + ("--setup-reps", "1", "--gen-items", "1", "--gen-max-new-tokens", "8"),
        env={"OMP_NUM_THREADS": "1"},
    ),
    Bench(
        "irt_speed",
        ("--reps", "3"),
        ("--models", "40", "--items", "400", "--reps", "2", "--pyirt-epochs", "50", "--no-write"),
    ),
    Bench("merge_7b", (), ("--shape", "tiny", "--reps", "2"), gpu_only=True),
    Bench(
        "e2e_mergenetic",
        (),
        ("--candidates", "2", "--mergenetic-candidates", "1", "--smoke-max-new-tokens", "4"),
    ),
)
NAMES = tuple(b.name for b in BENCHES)
assert NAMES == summary.BENCHMARKS


def pyirt_dir() -> Path:
    """Where py-irt lives for the benchmark: in merge3's cache, outside the venv."""
    return cache_root() / "bench" / "pyirt-pkgs"


def ensure_pyirt() -> Path | None:
    """py-irt installed (once) with ``pip --no-deps --target`` into :func:`pyirt_dir`, for
    irt_speed's PYTHONPATH only; None (irt_speed then says "py-irt not run") if pip fails."""
    target = pyirt_dir()
    if (target / "DONE").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():  # a half-made folder of ours (no DONE): not usable
        shutil.rmtree(target)
    build = Path(tempfile.mkdtemp(prefix="pyirt-pkgs.", dir=target.parent))
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    cmd += ["--no-deps", "--target", str(build), *PYIRT_PACKAGES]
    print(f"installing {' '.join(PYIRT_PACKAGES)} into {target}", flush=True)
    if subprocess.run(cmd).returncode != 0:
        shutil.rmtree(build, ignore_errors=True)
        print("py-irt could not be installed: irt_speed runs without it", flush=True)
        return None
    (build / "DONE").write_text(" ".join(PYIRT_PACKAGES) + "\n")
    publish_folder(build, target)
    shutil.rmtree(build, ignore_errors=True)  # left only when another process published first
    return target


def previous_runs(out_dir: Path) -> dict[str, dict[str, Any]]:
    """The records of the benchmarks that ran in earlier invocations (last summary.json in
    ``out_dir``), so that a partial rerun (``--only``) or ``--report-only`` still says how and
    when each results file was made."""
    try:
        record = json.loads((out_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return {}
    when = record.get("machine", {}).get("utc")
    kept = {}
    for name, run in (record.get("runs") or {}).items():
        if run.get("status") == "ok":  # skipped, absent or failed ones say nothing now
            kept[name] = {**run, "when": run.get("when", when)}
    return kept


def command(bench: Bench, out_dir: Path, quick: bool) -> list[str] | None:
    """The argv of one run, writing its JSON into ``out_dir``; None in quick mode when the script
    lacks ``--out`` or one of its quick options (it would overwrite results or run in full)."""
    argv = [sys.executable, str(bench.script), *(bench.quick if quick else bench.full)]
    if quick:
        source = bench.script.read_text()
        flags = ["--out", *(a for a in bench.quick if a.startswith("--"))]
        if not all(f'"{flag}"' in source for flag in flags):
            return None
    elif bench.name == "e2e_mergenetic":  # its full run: no arguments, its own default output
        return argv
    return argv + ["--out", str(out_dir / f"{bench.name}.json")]


def stream(argv: list[str], env: dict[str, str], log: Path) -> int:
    """Run ``argv`` in the repo root, echoing and logging its output line by line."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as fh:
        fh.write("$ " + " ".join(argv) + "\n")
        proc = subprocess.Popen(
            argv,
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            fh.write(line)
        return proc.wait()


def run_one(bench: Bench, out_dir: Path, log_dir: Path, quick: bool) -> dict[str, Any]:
    """Run one benchmark (never raises for its failure); returns its record for summary.json."""
    if not bench.script.is_file():
        print(f"{bench.name}: not run ({bench.script.name} absent)", flush=True)
        return {"status": f"not run: {bench.script.name} absent"}
    argv = command(bench, out_dir, quick)
    if argv is None:
        print(f"{bench.name}: not run (--quick needs --out and its quick options)", flush=True)
        return {"status": "not run: --quick needs --out and its quick options"}
    env = {**os.environ, **OFFLINE, "PYTHONUNBUFFERED": "1", **bench.env}
    if bench.name == "irt_speed" and (pkgs := ensure_pyirt()) is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pkgs), env.get("PYTHONPATH")]))
    log = log_dir / f"{bench.name}.log"
    print(f"\n=== {bench.name}: {' '.join(argv[1:])}", flush=True)
    started, t0 = time.time(), time.perf_counter()
    rc = stream(argv, env, log)
    wall = time.perf_counter() - t0
    print(f"=== {bench.name}: exit {rc} after {wall:.0f} s (log {log})", flush=True)
    return {
        "status": "ok" if rc == 0 else f"failed, exit {rc}",
        "rc": rc,
        "wall_s": wall,
        "started": started,
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
        "argv": argv[1:],
        "log": str(log),
    }


def rows(out_dir: Path, runs: dict[str, dict[str, Any]], gpu: bool) -> list[summary.Row]:
    """Every benchmark's rows: this invocation's failures and skips, then what its JSON says."""
    out: list[summary.Row] = []
    for name in NAMES:
        run, path = runs.get(name, {}), out_dir / f"{name}.json"
        if run.get("rc"):
            log = run["log"].replace(str(Path.home()), "~")
            out.append(summary.note_row(name, f"failed, exit {run['rc']}, see log {log}"))
            if path.is_file() and path.stat().st_mtime >= run["started"]:
                out += summary.rows_from_file(name, path)
            continue
        if name == "merge_7b" and not gpu:
            out.append(summary.note_row(name, "skipped: no GPU (torch.cuda unavailable)"))
            if path.is_file():
                out += summary.rows_from_file(name, path)
            continue
        if not path.is_file() and run.get("status", "").startswith(("not run", "skipped")):
            out.append(summary.note_row(name, run["status"]))
            continue
        out += summary.rows_from_file(name, path)
    return out


def parse_names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = sorted(set(names) - set(NAMES))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown benchmark(s) {unknown}; known: {NAMES}")
    return names


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", type=parse_names, default=None, help="name[,name]: run just these")
    ap.add_argument("--skip", type=parse_names, default=[], help="name[,name]: do not run these")
    ap.add_argument("--report-only", action="store_true", help="no runs: rebuild from the JSONs")
    ap.add_argument("--quick", action="store_true", help="smoke settings, outputs to a temp dir")
    args = ap.parse_args(argv)
    if args.quick and args.report_only:
        ap.error("--quick and --report-only exclude each other")
    os.environ.update(OFFLINE)

    start = machine.describe()
    gpu = start["gpu"] != "none"
    if args.quick:
        out_dir = Path(tempfile.mkdtemp(prefix="merge3-bench-quick-"))
        log_dir = out_dir / "logs"
    else:
        out_dir = summary.RESULTS_DIR
        log_dir = cache_root() / "bench" / "logs"
    mode = "report-only" if args.report_only else "quick" if args.quick else "full"
    print(f"make bench ({mode}): outputs in {out_dir}", flush=True)

    runs: dict[str, dict[str, Any]] = {}
    earlier = previous_runs(out_dir) if not args.quick else {}
    if args.report_only:
        runs = earlier
    else:
        chosen = args.only or list(NAMES)
        for bench in BENCHES:
            if bench.name not in chosen or bench.name in args.skip:
                # its results file (if any) is from an earlier run: keep that run's record
                runs[bench.name] = earlier.get(bench.name, {"status": "skipped (--only/--skip)"})
            elif bench.gpu_only and not gpu:
                print(f"{bench.name}: skipped (no GPU: torch.cuda unavailable)", flush=True)
                runs[bench.name] = {"status": "skipped: no GPU"}
            else:
                runs[bench.name] = run_one(bench, out_dir, log_dir, args.quick)

    table_rows = rows(out_dir, runs, gpu)
    desc = dict(start)
    if not args.report_only:
        end = machine.describe()
        desc["end"] = {k: end[k] for k in ("loadavg_1_5_15", "utc")}
    text = summary.render_table(table_rows, desc, runs or None, summary.sources(out_dir))
    if args.report_only:
        text = (
            "Rebuilt from the existing `results/*.json` (`--report-only`): the machine's load "
            "average is the report's; the results files' own are listed below it.\n\n" + text
        )
    record = {"mode": mode, "machine": desc, "runs": runs, "rows": table_rows}
    (out_dir / "summary.json").write_text(json.dumps(record, indent=2) + "\n")
    if not args.quick:
        summary.write_readme(text)
    print("\n" + text)
    where = "" if args.quick else f" and the summary section of {summary.README}"
    print(f"wrote {out_dir / 'summary.json'}{where}")
    return 1 if any(r.get("rc") for r in runs.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
