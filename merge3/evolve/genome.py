"""Genome ↔ recipe, derived from the operator's registered parameters.

Every numeric parameter with search bounds that the config does not fix becomes genes: one per
endpoint for per-model parameters (``weight[add]``), one for global ones (``lambda``), and, with
a per-layer-group granularity, one set per group (``weight[add]@attn``). Decoding a genome gives
the recipe: the operator's name and every parameter's value, fixed ones included.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from merge3.evolve.granularity import group_names
from merge3.merging.registry import MergeOperator


@dataclass(frozen=True)
class Gene:
    name: str
    parameter: str
    endpoint: int | None  # index of the endpoint for per-model parameters
    group: str
    low: float
    high: float


class GenomeSpace:
    """The search space of one operator over a fixed list of endpoints."""

    def __init__(
        self,
        operator: MergeOperator,
        endpoints: Sequence[str],
        bounds: Mapping[str, tuple[float, float]] | None = None,
        fixed: Mapping[str, Any] | None = None,
        step: float | None = None,
        granularity: str = "model",
        blocks: int = 4,
    ) -> None:
        self.operator = operator
        self.endpoints = list(endpoints)
        self.fixed = dict(fixed or {})
        self.step = step
        self.granularity = granularity
        self.blocks = blocks
        self.groups = group_names(granularity, blocks)
        bounds = dict(bounds or {})
        genes: list[Gene] = []
        for group in self.groups:
            suffix = "" if granularity == "model" else f"@{group}"
            for p in operator.parameters:
                if p.name in self.fixed or (p.bounds is None and p.name not in bounds):
                    continue
                low, high = bounds.get(p.name, p.bounds)
                if p.per_model:
                    genes += [
                        Gene(f"{p.name}[{e}]{suffix}", p.name, i, group, low, high)
                        for i, e in enumerate(self.endpoints)
                    ]
                else:
                    genes.append(Gene(f"{p.name}{suffix}", p.name, None, group, low, high))
        self.genes = tuple(genes)
        self.searched = sorted({g.parameter for g in genes})

    @classmethod
    def from_config(cls, cfg) -> GenomeSpace:
        """The space a run config describes (``cfg`` is a :class:`merge3.config.RunConfig`)."""
        from merge3.merging import get_operator

        m = cfg.merge
        return cls(
            get_operator(m.operator),
            list(cfg.models.endpoints),
            m.bounds,
            m.fixed,
            m.step,
            m.granularity,
            m.blocks,
        )

    @property
    def names(self) -> list[str]:
        return [g.name for g in self.genes]

    @property
    def lower(self) -> np.ndarray:
        return np.array([g.low for g in self.genes], dtype=float)

    @property
    def upper(self) -> np.ndarray:
        return np.array([g.high for g in self.genes], dtype=float)

    def snap(self, genome: Sequence[float]) -> list[float]:
        """Round each gene to its grid ``low + k·step`` (inside the bounds); identity without step.

        Rounded values are what the recipe holds, so genomes that round alike are one recipe
        and the runner evaluates that recipe once.
        """
        if self.step is None:
            return [float(x) for x in genome]
        snapped = []
        for gene, x in zip(self.genes, genome, strict=True):
            k = round((float(x) - gene.low) / self.step)
            value = min(max(gene.low + k * self.step, gene.low), gene.high)
            snapped.append(round(value, 12))  # 0.1 * 3 → 0.3, not 0.30000000000000004
        return snapped

    def decode(self, genome: Sequence[float]) -> dict[str, Any]:
        """The recipe of a genome: JSON-ready, every parameter given, endpoints by name.

        Searched values of a grouped genome live under ``groups`` (group → parameter → value);
        ``params`` holds the rest (fixed values and defaults), shared by every group.
        """
        if len(genome) != len(self.genes):
            raise ValueError(f"genome has {len(genome)} genes, the space {len(self.genes)}")
        by_group: dict[str, dict[str, Any]] = {g: {} for g in self.groups}
        for gene, x in zip(self.genes, self.snap(genome), strict=True):
            values = by_group[gene.group]
            if gene.endpoint is None:
                values[gene.parameter] = x
            else:
                values.setdefault(gene.parameter, [0.0] * len(self.endpoints))[gene.endpoint] = x
        shared: dict[str, Any] = {}
        for p in self.operator.parameters:
            if p.name not in self.searched:  # a scalar per-model value applies to every endpoint
                shared[p.name] = self.fixed.get(p.name, p.default)
        recipe: dict[str, Any] = {"operator": self.operator.name, "endpoints": self.endpoints}
        if self.granularity == "model":
            params = by_group["all"]
            recipe["params"] = {
                p.name: params.get(p.name, shared.get(p.name)) for p in self.operator.parameters
            }
            return recipe
        recipe["granularity"] = {"mode": self.granularity, "blocks": self.blocks}
        recipe["params"] = shared
        recipe["groups"] = by_group
        return recipe
