"""After the search: true held-out accuracy of the chosen candidates, and the best merge saved.

Both steps are resumable like the search itself: each candidate's test accuracy is committed as
soon as it is measured, and ``best/`` is written atomically, so a resume finishes what is left.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import numpy as np

from merge3.analysis import front_of, ranked
from merge3.config import RunConfig
from merge3.data.items import Item
from merge3.data.tasks import Task
from merge3.evolve.fitness import Merger
from merge3.evolve.progress import Reporter, SilentReporter
from merge3.export import export_merge
from merge3.runs import CandidateRow, CandidateStore, RunDir


def final_candidates(rows: Sequence[CandidateRow], cfg: RunConfig) -> list[CandidateRow]:
    """The front (ranked), or the top k of every candidate when ``final.top_k`` is set."""
    names = cfg.objective_names
    if cfg.final.top_k is None:
        return ranked(front_of(rows, names), names)
    return ranked(rows, names)[: cfg.final.top_k]


def finalize(
    run: RunDir,
    cfg: RunConfig,
    merger: Merger,
    store: CandidateStore,
    tasks: Mapping[str, Task],
    test_items: Mapping[str, Sequence[Item]],
    reporter: Reporter | None = None,
) -> None:
    chosen = final_candidates(list(store), cfg)
    if not chosen:
        return
    reporter = reporter or SilentReporter()
    done = store.finals()
    todo = [r for r in chosen if (r.generation, r.index) not in done]
    if test_items and todo:
        evaluators = {t: merger.evaluator(tasks[t], items) for t, items in test_items.items()}
        per_model = sum(len(items) for items in test_items.values())
        reporter.phase(f"re-scoring {len(todo)} candidates on {per_model} held-out test items")
        for k, row in enumerate(todo):
            t0 = time.perf_counter()
            merger.merge(row.recipe)
            accuracy = {}
            for t, ev in evaluators.items():
                accuracy[t] = float(np.nanmean(ev(merger.model)))
                reporter.items(
                    k * per_model + sum(len(test_items[u]) for u in accuracy), len(todo) * per_model
                )
            store.add_final(
                row.generation, row.index, accuracy, {"test_s": time.perf_counter() - t0}
            )
    best_dir = run.path / "best"
    if cfg.final.export_best and not best_dir.exists():
        best = chosen[0]
        scores = {
            "candidate": [best.generation, best.index],
            "estimated": best.objectives,
            "test_accuracy": store.finals().get((best.generation, best.index), {}),
        }
        export_merge(merger, best.recipe, best_dir, scores, run.config_path.read_text())
