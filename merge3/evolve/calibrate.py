"""Before the search: reference responses, IRT item parameters, anchors and the estimator.

IRT-based estimators need item parameters and the endpoints' abilities. Unless the config names
an item file, the run fits them itself: the endpoints, the base and ``reference_merges`` seeded
random merges are evaluated on the whole search split (each row committed as it is measured, so
a crash loses at most one), a 1PL/2PL model is fitted, and everything is cached in RUN_DIR/irt/
with what it cost. The same reference rows calibrate the g-estimators' mix.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from merge3.config import RunConfig
from merge3.data.tasks import Task
from merge3.estimate.base import Estimator
from merge3.estimate.cli_support import build_estimator
from merge3.estimate.irt import MODELS
from merge3.estimate.itembank import ItemBank
from merge3.estimate.responses import ResponseMatrix
from merge3.evolve.fitness import Merger
from merge3.evolve.progress import Reporter
from merge3.evolve.response_cache import open_cache
from merge3.extract import AnchorSet, extract, random_anchors, stratified_anchors
from merge3.runs import CandidateStore, RunDir, atomic_write_text

FROM_REFERENCES = ("irt-kmeans", "correctness-kmeans", "irt-info")
"""Extraction methods that read the reference models' responses or the IRT fit on them."""


@dataclass
class Estimation:
    anchors: AnchorSet
    estimator: Estimator


def needs_references(cfg: RunConfig) -> bool:
    return cfg.estimator.needs_irt or cfg.anchors.method in FROM_REFERENCES


def prepare_estimation(
    run: RunDir,
    cfg: RunConfig,
    merger: Merger,
    tasks: Mapping[str, Task],
    store: CandidateStore,
    reporter: Reporter,
) -> Estimation:
    """Anchors and estimator of the run, from the cache in RUN_DIR where it exists."""
    responses = bank = None
    if needs_references(cfg):
        responses = reference_responses(cfg, merger, tasks, store, reporter)
        evaluate_s = sum(seconds for _, seconds in store.references().values())
        bank = item_bank(run, cfg, responses, reporter, evaluate_s)
    if run.anchors_path.is_file():
        anchors = AnchorSet.load(run.anchors_path)
    else:
        anchors = choose_anchors(cfg, tasks, bank, responses)
        atomic_write_text(run.anchors_path, json.dumps(anchors.to_json(), indent=2))
    est = cfg.estimator
    endpoints = validation = None
    if responses is not None:
        names = list(responses.models)
        endpoints = responses.rows([n for n in names if n.startswith("endpoint:")])
        merges = [n for n in names if n.startswith("merge:")]
        validation = responses.rows(merges) if merges and est.lam is None else None
    estimator = build_estimator(
        est.name, anchors, bank, endpoints, validation, est.lam, est.constraint, est.inference
    )
    return Estimation(anchors, estimator)


def choose_anchors(
    cfg: RunConfig,
    tasks: Mapping[str, Task],
    bank: ItemBank | None,
    responses: ResponseMatrix | None,
) -> AnchorSet:
    a = cfg.anchors
    by_task = {name: [i.id for i in task.items("search")] for name, task in tasks.items()}
    if a.method == "random":
        return random_anchors(by_task, a.n_per_task, a.seed)
    if a.method == "stratified":
        subjects = {
            i.id: i.metadata.get("subject") for t in tasks.values() for i in t.items("search")
        }
        return stratified_anchors(by_task, a.n_per_task, a.seed, subjects)
    return extract(a.method, a.n_per_task, a.seed, bank=bank, responses=responses)


def _reference_models(cfg: RunConfig, merger: Merger) -> list[tuple[str, dict | int | None]]:
    """(name, what to load): endpoints by index, the base, seeded random merges by recipe."""
    models: list[tuple[str, dict | int | None]] = [
        (f"endpoint:{name}", j) for j, name in enumerate(cfg.models.endpoints)
    ]
    models.append(("base", None))
    rng = np.random.default_rng(cfg.estimator.seed)
    space = merger.space
    for k in range(cfg.estimator.reference_merges):
        genome = space.lower + rng.random(len(space.genes)) * (space.upper - space.lower)
        models.append((f"merge:{k}", space.decode(genome)))
    return models


def reference_responses(
    cfg: RunConfig,
    merger: Merger,
    tasks: Mapping[str, Task],
    store: CandidateStore,
    reporter: Reporter,
) -> ResponseMatrix:
    """Correctness of every reference model on every search item (evaluated once per run)."""
    done = store.references()
    models = _reference_models(cfg, merger)
    todo = [(n, what) for n, what in models if n not in done]
    cache = open_cache(cfg)
    if todo and cache is not None:  # answers kept from an earlier run with the same models
        keys = {n: cache.key(what, _all_search(tasks)) for n, what in todo}
        for name, _ in todo:
            hit = cache.get(keys[name])
            if hit is not None:
                store.add_reference(name, hit[0].tolist(), hit[1])
        done = store.references()
        todo = [(n, what) for n, what in todo if n not in done]
    if todo:
        reporter.phase(f"evaluating {len(todo)} reference models on the full search split for IRT")
        evaluators = {
            name: merger.evaluator(task, task.items("search")) for name, task in tasks.items()
        }
        for name, what in todo:
            t0 = time.perf_counter()
            load_reference(merger, what)
            parts, total = [], sum(len(ev.items) for ev in evaluators.values())
            for ev in evaluators.values():
                parts.append(ev(merger.model))
                reporter.items(sum(map(len, parts)), total)
            correct = np.concatenate(parts)
            seconds = time.perf_counter() - t0
            store.add_reference(name, correct.tolist(), seconds)
            if cache is not None:
                cache.put(cache.key(what, _all_search(tasks)), correct, seconds)
        done = store.references()
    items = [i for task in tasks.values() for i in task.items("search")]
    values = np.array([done[n][0] for n, _ in models], dtype=float)
    return ResponseMatrix(
        tuple(n for n, _ in models),
        tuple(i.id for i in items),
        tuple(i.task for i in items),
        values,
        tuple(i.metadata.get("subject") for i in items),
        source="reference responses",
    )


def load_reference(merger: Merger, what: dict | int | None) -> None:
    """Write a reference model into the live model: endpoint ``j``, the base, or a recipe."""
    if isinstance(what, int):
        merger.load_endpoint(what)
    elif what is None:
        merger.endpoints.restore_base()
    else:
        merger.merge(what)


def _all_search(tasks: Mapping[str, Task]) -> list[tuple[Task, list]]:
    """Every task's search items, in the order of a reference response row."""
    return [(task, task.items("search")) for task in tasks.values()]


def item_bank(
    run: RunDir,
    cfg: RunConfig,
    responses: ResponseMatrix,
    reporter: Reporter,
    evaluate_s: float = 0.0,
) -> ItemBank:
    """The configured item file, or the run's own fit (cached in RUN_DIR/irt/items.json)."""
    est = cfg.estimator
    if est.irt_items is not None:
        return ItemBank.load(est.irt_items)
    path = run.irt_dir / "items.json"
    if path.is_file():
        return ItemBank.load(path)
    t0 = time.perf_counter()
    bank = MODELS[est.irt_model](dims=est.dims, seed=est.seed).fit(responses).item_bank()
    fit_s = time.perf_counter() - t0
    run.irt_dir.mkdir(exist_ok=True)
    for name, save in (("responses.csv", responses.save), ("items.json", bank.save)):
        tmp = run.irt_dir / f".{name}.tmp{Path(name).suffix}"
        save(tmp)
        tmp.replace(run.irt_dir / name)  # items.json last: its presence means the fit is done
    cost = {
        "reference_models": len(responses.models),
        "items": len(responses.items),
        "evaluate_s": evaluate_s,
        "fit_s": fit_s,
    }
    atomic_write_text(run.irt_dir / "cost.json", json.dumps(cost, indent=2))
    reporter.phase(
        f"IRT ({est.irt_model}, {est.dims}-D) from {cost['reference_models']} models × "
        f"{cost['items']} items: evaluation {evaluate_s:.1f} s, fit {fit_s:.1f} s"
    )
    return bank
