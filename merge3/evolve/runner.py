"""The ask-and-tell search loop, with a store row per candidate and a checkpoint per generation.

Resume is exact because every source of randomness lives in state that is checkpointed (pymoo
keeps its ``numpy.random.Generator`` inside the pickled algorithm) or is fixed by the config
(anchors, seeds): re-asking a generation after a crash proposes the same genomes, and those
already in ``run.sqlite`` are read back instead of being evaluated again.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from pymoo.core.evaluator import Evaluator
from pymoo.core.termination import NoTermination
from pymoo.problems.static import StaticProblem

from merge3.analysis import front_csv, front_of
from merge3.config import RunConfig, dump_config, load_config
from merge3.data.tasks import Task
from merge3.errors import DataError
from merge3.evolve.algorithms import make_algorithm
from merge3.evolve.calibrate import prepare_estimation
from merge3.evolve.executor import Executor, check_executor, make_executor
from merge3.evolve.final import finalize
from merge3.evolve.fitness import Merger
from merge3.evolve.generation import FailureGuard, evaluate_generation
from merge3.evolve.problem import MergeProblem
from merge3.evolve.progress import Reporter, SilentReporter
from merge3.evolve.tasks import load_tasks
from merge3.runs import CandidateRow, CandidateStore, RunDir, atomic_write_text


def prepare_assets(cfg: RunConfig) -> None:
    """Build what the config says it can build (the bundled tiny setting, the demo's models
    and items) when it is missing."""
    if cfg.prepare == "tiny":
        from merge3.tiny import build_tiny

        build_tiny()
    elif cfg.prepare == "demo":
        from merge3.demo.prepare import ensure_demo

        ensure_demo()


def start_search(
    config: str | Path | RunConfig, run_dir: str | Path, reporter: Reporter | None = None
) -> RunDir:
    """Validate everything, then create the run directory and search.

    ``config``: a YAML file, or a config already parsed (``merge3 demo`` edits its own).
    All checks that can fail on user input (config, model folders, item files, anchor counts)
    run before the run directory is created, so a mistake leaves nothing behind.
    """
    cfg = config if isinstance(config, RunConfig) else load_config(config)
    run = RunDir(run_dir)
    run.check_new()
    check_executor(cfg)
    prepare_assets(cfg)
    tasks = load_tasks(cfg)
    for name, task in tasks.items():
        n_items = len(task.items("search"))
        if cfg.anchors.n_per_task > n_items:
            raise DataError(
                f"task {name!r}: {cfg.anchors.n_per_task} anchors asked for but its search "
                f"split has only {n_items} items"
            )
    merger = Merger(cfg)
    run.create(dump_config(cfg))
    _run(run, cfg, merger, tasks, reporter or SilentReporter())
    return run


def resume_search(run_dir: str | Path, reporter: Reporter | None = None) -> RunDir:
    """Continue a run from its newest intact checkpoint; stored candidates are not re-evaluated."""
    run = RunDir(run_dir).require()
    cfg = load_config(run.config_path)
    check_executor(cfg)
    prepare_assets(cfg)
    tasks = load_tasks(cfg)
    _run(run, cfg, Merger(cfg), tasks, reporter or SilentReporter())
    return run


def _run(
    run: RunDir, cfg: RunConfig, merger: Merger, tasks: Mapping[str, Task], reporter: Reporter
) -> None:
    """Estimation set-up (cached in the run), then the search, then the final evaluation."""
    run.remove_leftovers()  # temporary files of writes that a kill interrupted
    store = run.store()
    executor: Executor | None = None
    try:
        estimation = prepare_estimation(run, cfg, merger, tasks, store, reporter)
        if cfg.search.executor != "in_process":
            merger.release()  # the workers hold the models during the search; one copy at a time
        executor = make_executor(
            cfg, merger, tasks, estimation.anchors, estimation.estimator, reporter.items
        )
        _search(run, cfg, merger, executor, store, reporter)
        executor.close()
        reporter.phase("final evaluation on the test split and export of the best merge")
        test_items = {name: t.items("test") for name, t in tasks.items() if t.items("test")}
        finalize(run, cfg, merger, store, tasks, test_items, reporter)
    finally:
        if executor is not None:
            executor.close()
        reporter.finish()
        store.close()


def _search(
    run: RunDir,
    cfg: RunConfig,
    merger: Merger,
    executor: Executor,
    store: CandidateStore,
    reporter: Reporter,
) -> None:
    names = cfg.objective_names
    space = merger.space
    problem = MergeProblem(space.lower, space.upper, len(names))
    checkpoint = run.latest_checkpoint()
    if checkpoint is None:
        done = 0
        algorithm = make_algorithm(
            cfg.search.algorithm, cfg.search.population, cfg.search.seed, len(names)
        )
        algorithm.setup(problem, termination=NoTermination(), seed=cfg.search.seed)
    else:
        done, state = checkpoint
        algorithm = state["algorithm"]
    best: dict[str, float] = {}
    for row in store:
        if not row.failed:
            best = _better(best, row.objectives)
    guard = FailureGuard(cfg.search.max_consecutive_failures, run.path)

    def on_row(row: CandidateRow, was_stored: bool) -> None:
        nonlocal best
        if not row.failed:
            best = _better(best, row.objectives)
        elif not was_stored:
            first_line = row.error.splitlines()[0] if row.error else ""
            reporter.phase(
                f"generation {row.generation + 1}, candidate {row.index} failed: {first_line}"
            )
        reporter.candidate(best, was_stored)

    reporter.start(cfg.search.generations, done)
    while done < cfg.search.generations:
        population = algorithm.ask()
        genomes = population.get("X")
        reused = sum(
            (r := store.get(done, i)) is not None and not r.failed for i in range(len(genomes))
        )
        reporter.generation(done, len(genomes), reused)
        rows = evaluate_generation(store, space, executor, guard, done, genomes, names, on_row)
        F = np.array([[-row.objectives[n] for n in names] for row in rows], dtype=float)
        Evaluator().eval(StaticProblem(problem, F=F), population)
        algorithm.tell(infills=population)
        done += 1
        run.save_checkpoint(done, {"algorithm": algorithm, "generation": done})
        atomic_write_text(run.front_path, front_csv(front_of(store, names), names, space.names))


def _better(best: Mapping[str, float], objectives: Mapping[str, float]) -> dict[str, float]:
    """Per-objective maximum seen so far (the live 'best' line)."""
    return {k: max(v, best.get(k, -np.inf)) for k, v in objectives.items()}
