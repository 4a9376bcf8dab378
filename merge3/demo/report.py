"""The demo's final table: held-out accuracy of MERGE³'s merges beside what a user would try first.

Rows: the base, each expert, three untuned merges (the operators' published defaults, not
tuned on anything: a uniform average, task arithmetic with λ = 0.4, TIES with density 0.2 and
λ = 1) and the search's final candidates (its Pareto front, ranked by mean estimated accuracy;
or the ``final.top_k`` best).
Columns: accuracy on each group's ``test`` items, which neither the experts' training nor the
search ever read, and their mean. Baselines are evaluated on the run's resident models (no
reloading) and kept in the response cache, so a second demo evaluates only the new merges.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from merge3.evolve.calibrate import load_reference
from merge3.evolve.final import final_candidates
from merge3.evolve.fitness import Merger, check_finite
from merge3.evolve.response_cache import open_cache
from merge3.evolve.tasks import load_tasks
from merge3.merging import get_operator
from merge3.runs import atomic_write_text, load_run


@dataclass
class Row:
    """One model of the table: its test accuracy per group and, for a search result, the
    estimate the search had of it."""

    label: str
    kind: str  # base | expert | baseline | merge3
    test: dict[str, float]
    estimated: dict[str, float] = field(default_factory=dict)
    recipe: dict[str, Any] | None = None

    @property
    def mean(self) -> float:
        return float(np.mean(list(self.test.values())))


def baselines(endpoints: list[str]) -> dict[str, tuple[str, Any]]:
    """label → (kind, what to load): None the base, j endpoint j, else a recipe."""
    n = len(endpoints)

    def recipe(operator: str, **params: Any) -> dict[str, Any]:
        return {"operator": operator, "endpoints": endpoints, "params": params}

    out: dict[str, tuple[str, Any]] = {"base": ("base", None)}
    out.update({f"expert {name}": ("expert", j) for j, name in enumerate(endpoints)})
    out["average"] = (
        "baseline",
        recipe("task_arithmetic", weight=[1.0 / n] * n, **{"lambda": 1.0}),
    )
    out["task arithmetic λ=0.4"] = (
        "baseline",
        recipe("task_arithmetic", weight=[1.0] * n, **{"lambda": 0.4}),
    )
    out["ties d=0.2"] = (
        "baseline",
        recipe("ties", weight=[1.0] * n, density=[0.2] * n, **{"lambda": 1.0}),
    )
    return out


def load_model(merger: Merger, what: Any) -> None:
    """Write a baseline into the live model; a recipe may use another operator than the run's."""
    if isinstance(what, dict) and what["operator"] != merger.operator.name:
        op = get_operator(what["operator"])
        merger.endpoints.apply(op, op.resolve(what["params"], merger.endpoints.n_models))
        check_finite(merger.endpoints.params)
    else:
        load_reference(merger, what)


def demo_rows(
    run_dir: str | Path, merger: Merger | None = None, progress: bool = True
) -> list[Row]:
    """Every row of the table; baselines come from the response cache where they are in it."""
    from tqdm.auto import tqdm

    run = load_run(run_dir)
    cfg = run.config
    tasks = load_tasks(cfg)
    cache = open_cache(cfg)
    rows: list[Row] = []
    todo = baselines(list(cfg.models.endpoints))
    merger_ = merger
    evaluators: dict[str, Any] = {}
    bar = tqdm(todo.items(), desc="baselines on the test items", disable=not progress)
    for label, (kind, what) in bar:
        test, missing = {}, []
        keys = (
            {n: cache.key(what, [(t, t.items("test"))]) for n, t in tasks.items()} if cache else {}
        )
        for name in tasks:
            hit = cache.get(keys[name]) if cache else None
            if hit is None:
                missing.append(name)
            else:
                test[name] = float(np.nanmean(hit[0]))
        if missing:
            merger_ = merger_ or Merger(cfg)
            load_model(merger_, what)  # once per model, whatever the number of tasks
            for name in missing:
                task = tasks[name]
                if name not in evaluators:
                    evaluators[name] = merger_.evaluator(task, task.items("test"))
                t0 = time.perf_counter()
                correct = np.asarray(evaluators[name](merger_.model), float)
                if cache is not None:
                    cache.put(keys[name], correct, time.perf_counter() - t0)
                test[name] = float(np.nanmean(correct))
        test = {name: test[name] for name in tasks}
        rows.append(Row(label, kind, test, recipe=what if isinstance(what, dict) else None))
    for rank, cand in enumerate(final_candidates(run.rows, cfg), start=1):
        test = run.test_accuracy.get((cand.generation, cand.index))
        if test is None:
            continue
        label = f"MERGE³ #{rank} ({cand.generation}/{cand.index})"
        rows.append(Row(label, "merge3", dict(test), dict(cand.objectives), cand.recipe))
    return rows


def render(rows: list[Row], groups: list[str], title: str) -> None:
    """The table in the terminal (rich)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, caption="test: held-out items; est.: the search's own estimate")
    table.add_column("model", no_wrap=True)
    for g in groups:
        table.add_column(g.replace("_", " "), justify="right")
    table.add_column("mean", justify="right")
    table.add_column("est.", justify="right")
    best = max(r.mean for r in rows)
    for r in rows:
        est = f"{np.mean(list(r.estimated.values())):.3f}" if r.estimated else ""
        mean = f"{r.mean:.3f}"
        table.add_row(
            r.label,
            *(f"{r.test[g]:.3f}" for g in groups),
            f"[bold]{mean}[/bold]" if r.mean == best else mean,
            est,
        )
    console = Console()
    console.width = max(console.width, 100)  # a pipe or a CI log: do not wrap model names
    console.print(table)


def markdown(rows: list[Row], groups: list[str]) -> list[str]:
    head = "| model | " + " | ".join(groups) + " | mean | estimated mean |"
    lines = [head, "|---" * (len(groups) + 3) + "|"]
    for r in rows:
        est = f"{np.mean(list(r.estimated.values())):.3f}" if r.estimated else ""
        cells = " | ".join(f"{r.test[g]:.3f}" for g in groups)
        lines.append(f"| {r.label} | {cells} | {r.mean:.3f} | {est} |")
    return lines


def save(run_dir: str | Path, rows: list[Row], timings: Mapping[str, float]) -> Path:
    """``RUN_DIR/demo.json`` (rows and wall times) and ``RUN_DIR/demo.md`` (the table)."""
    run_dir = Path(run_dir)
    groups = list(rows[0].test)
    payload = {"rows": [asdict(r) | {"mean": r.mean} for r in rows], "seconds": dict(timings)}
    atomic_write_text(run_dir / "demo.json", json.dumps(payload, indent=2) + "\n")
    atomic_write_text(run_dir / "demo.md", "\n".join(markdown(rows, groups)) + "\n")
    return run_dir / "demo.md"
