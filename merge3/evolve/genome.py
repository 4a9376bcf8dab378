"""Genome ↔ recipe, derived from the operator's registered parameters.

Every numeric parameter with search bounds that the config does not fix becomes genes: one per
endpoint for per-model parameters (``weight[add]``), one for global ones (``lambda``). Decoding a
genome gives the recipe: the operator's name and every parameter's value, fixed ones included.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from merge3.merging.registry import MergeOperator


@dataclass(frozen=True)
class Gene:
    name: str
    parameter: str
    endpoint: int | None  # index of the endpoint for per-model parameters
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
    ) -> None:
        self.operator = operator
        self.step = step
        self.endpoints = list(endpoints)
        self.fixed = dict(fixed or {})
        bounds = dict(bounds or {})
        genes: list[Gene] = []
        for p in operator.parameters:
            if p.name in self.fixed or (p.bounds is None and p.name not in bounds):
                continue
            low, high = bounds.get(p.name, p.bounds)
            if p.per_model:
                genes += [
                    Gene(f"{p.name}[{e}]", p.name, i, low, high) for i, e in enumerate(endpoints)
                ]
            else:
                genes.append(Gene(p.name, p.name, None, low, high))
        self.genes = tuple(genes)

    @classmethod
    def from_config(cls, cfg) -> GenomeSpace:
        """The space a run config describes (``cfg`` is a :class:`merge3.config.RunConfig`)."""
        from merge3.merging import get_operator

        m = cfg.merge
        return cls(get_operator(m.operator), list(cfg.models.endpoints), m.bounds, m.fixed, m.step)

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
        """The recipe of a genome: JSON-ready, every parameter given, endpoints by name."""
        if len(genome) != len(self.genes):
            raise ValueError(f"genome has {len(genome)} genes, the space {len(self.genes)}")
        values: dict[str, Any] = {}
        for gene, x in zip(self.genes, self.snap(genome), strict=True):
            if gene.endpoint is None:
                values[gene.parameter] = float(x)
            else:
                values.setdefault(gene.parameter, [0.0] * len(self.endpoints))[gene.endpoint] = (
                    float(x)
                )
        for p in self.operator.parameters:
            if p.name not in values:  # a scalar per-model value applies to every endpoint
                values[p.name] = self.fixed.get(p.name, p.default)
        return {"operator": self.operator.name, "endpoints": self.endpoints, "params": values}
