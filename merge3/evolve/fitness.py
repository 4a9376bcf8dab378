"""Fitness of a genome: merge in place → evaluate the anchors → estimate accuracy per task.

Everything a genome cannot change (models, task vectors, tokenised anchor prompts, the
estimator) is built once in :meth:`Fitness.build`; a call costs one merge and one pass of
forward passes over the anchors.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from merge3.config import RunConfig
from merge3.data.items import Item
from merge3.data.tasks import Task
from merge3.estimate import Estimator
from merge3.evaluate.factory import builtin_evaluator
from merge3.evolve.genome import GenomeSpace
from merge3.evolve.granularity import REST, assign
from merge3.extract import AnchorSet
from merge3.merging import MergeOperator, get_operator
from merge3.models import Endpoints, load_causal_lm, load_tokenizer, parse_dtype


@dataclass(frozen=True)
class Evaluation:
    """What one candidate's evaluation produced."""

    recipe: dict
    anchor_correct: dict[str, list[float]]
    estimates: dict[str, float]
    objectives: dict[str, float]
    timings: dict[str, float]


class Merger:
    """The resident endpoints of a run and the operator: recipe in, merged live model out."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.operator: MergeOperator = get_operator(cfg.merge.operator)
        self.space = GenomeSpace.from_config(cfg)
        self.tokenizer = load_tokenizer(cfg.models.base, cfg.models.trust_remote_code)
        self._groups: dict[tuple[str, int], dict[str, str]] = {}
        self._endpoints: Endpoints | None = None
        self._load()  # now, so that a bad model folder fails before a run directory exists

    def _load(self) -> None:
        cfg = self.cfg
        model = load_causal_lm(
            cfg.models.base,
            parse_dtype(cfg.models.dtype),
            cfg.evaluation.device,
            cfg.models.trust_remote_code,
        )
        endpoints = Endpoints.from_folders(model, cfg.models.endpoints)
        endpoints.prepare(self.operator)
        self._endpoints = endpoints

    @property
    def endpoints(self) -> Endpoints:
        """The resident base, task vectors and live model; loaded again after :meth:`release`."""
        if self._endpoints is None:
            self._load()
        assert self._endpoints is not None
        return self._endpoints

    @property
    def loaded(self) -> bool:
        return self._endpoints is not None

    def release(self) -> None:
        """Free the resident models while workers hold their own (a distributed search).

        Otherwise the driver's (T + 2) model copies would sit beside a worker's on the same
        GPU or host for the whole search; they come back on the next use (the final
        evaluation), built exactly as before.
        """
        self._endpoints = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    @property
    def model(self):
        return self.endpoints.model

    def merge(self, recipe: Mapping) -> None:
        """Write the recipe's merge into the live model, in place; NaN/Inf weights raise."""
        self._apply(recipe)
        check_finite(self.endpoints.params)

    def _apply(self, recipe: Mapping) -> None:
        n = self.endpoints.n_models
        if "groups" not in recipe:
            self.endpoints.apply(self.operator, self.operator.resolve(recipe["params"], n))
            return
        resolved = {
            group: self.operator.resolve({**recipe["params"], **values}, n)
            for group, values in recipe["groups"].items()
        }
        group_of = self._group_of(recipe["granularity"]["mode"], recipe["granularity"]["blocks"])
        per_tensor = {name: resolved[group_of[name]] for name in self.endpoints.params}
        self.endpoints.apply(self.operator, resolved[REST], per_tensor=per_tensor)

    def _group_of(self, mode: str, blocks: int) -> dict[str, str]:
        """Tensor → group, computed once per granularity (not per candidate)."""
        key = (mode, blocks)
        if key not in self._groups:
            self._groups[key] = assign(self.endpoints.params, mode, blocks)
        return self._groups[key]

    def load_endpoint(self, index: int) -> None:
        """Write endpoint ``index`` itself (θ₀ + τ_j) into the live model."""
        self.endpoints.load_endpoint(index)

    def evaluator(self, task: Task, items: Sequence[Item]):
        """The evaluator ``task`` needs, with the run's settings (tokenises ``items`` now)."""
        e = self.cfg.evaluation
        return builtin_evaluator(
            task,
            items,
            self.tokenizer,
            batch_size=e.batch_size,
            device=e.device,
            max_length=getattr(self.model.config, "max_position_embeddings", None),
        )


@torch.no_grad()
def check_finite(params: Mapping[str, torch.Tensor]) -> None:
    """Raise ``FloatingPointError`` naming the first tensor with NaN or Inf entries.

    A merge that overflows (fp16, extreme coefficients) would otherwise be evaluated as a
    silently broken model, or exported. One read pass and one device sync for all tensors.
    """
    names = list(params)
    if not names:
        return
    # Fast path: a tensor's sum is NaN/Inf when any entry is, and summing allocates nothing
    # the size of the tensor (``isfinite(p).all()`` would write a full bool mask per tensor).
    sums = torch.stack([params[n].sum(dtype=torch.float32) for n in names])
    if bool(torch.isfinite(sums).all()):
        return
    for name in names:  # rare: find the tensor (a finite tensor whose sum overflowed passes)
        bad = int((~torch.isfinite(params[name])).sum())
        if bad:
            raise FloatingPointError(
                f"merged tensor {name!r} has {bad} NaN/Inf values of {params[name].numel()}"
            )


class Fitness:
    """Callable: genome → :class:`Evaluation`."""

    def __init__(
        self,
        merger: Merger,
        evaluators: Mapping[str, Any],
        estimator: Estimator,
        objective_mode: str,
    ) -> None:
        self.merger = merger
        self.space = merger.space
        self.evaluators = dict(evaluators)
        self.estimator = estimator
        self.objective_mode = objective_mode
        self.total_items = sum(len(ev.items) for ev in self.evaluators.values())
        self.on_items: Callable[[int, int], None] | None = None  # (done, total), for progress

    @classmethod
    def build(
        cls,
        cfg: RunConfig,
        merger: Merger,
        tasks: Mapping[str, Task],
        anchors: AnchorSet,
        estimator: Estimator,
    ) -> Fitness:
        """Tokenise each task's anchors once."""
        evaluators = {}
        for name, task_anchors in anchors.tasks.items():
            by_id = {item.id: item for item in tasks[name].items("search")}
            anchor_items = [by_id[i] for i in task_anchors.items]
            evaluators[name] = merger.evaluator(tasks[name], anchor_items)
        return cls(merger, evaluators, estimator, cfg.objective_mode)

    def __call__(self, genome: np.ndarray) -> Evaluation:
        t0 = time.perf_counter()
        recipe = self.space.decode(genome)
        self.merger.merge(recipe)
        t1 = time.perf_counter()
        correct, done = {}, 0
        for task, ev in self.evaluators.items():
            correct[task] = ev(self.merger.model)
            done += len(ev.items)
            if self.on_items is not None:
                self.on_items(done, self.total_items)
        t2 = time.perf_counter()
        estimates = {
            t: float(v[0])
            for t, v in self.estimator.estimate({t: c[None] for t, c in correct.items()}).items()
        }
        if self.objective_mode == "mean":
            objectives = {"mean": float(np.mean(list(estimates.values())))}
        else:
            objectives = dict(estimates)
        return Evaluation(
            recipe=recipe,
            anchor_correct={t: c.tolist() for t, c in correct.items()},
            estimates=estimates,
            objectives=objectives,
            timings={
                "merge_s": t1 - t0,
                "evaluate_s": t2 - t1,
                "estimate_s": time.perf_counter() - t2,
            },
        )
