"""Resident endpoints: the base and the task vectors τ_t = θ_t − θ₀, kept in memory.

A candidate merge is materialised by writing θ₀ + Δ(params) straight into the parameters of one
live model (no disk round trip, no second model), which is the per-candidate hot path of a
search. Per-tensor work that no parameter can change is done once by ``prepare``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from merge3.errors import ModelError
from merge3.merging.registry import MergeOperator
from merge3.models.io import TensorReader


class Endpoints:
    """Base weights, stacked task vectors, and a live model to write merges into."""

    def __init__(
        self,
        model: nn.Module,
        task_vectors: Mapping[str, torch.Tensor],
        names: Sequence[str],
    ) -> None:
        self.model = model
        self.names = list(names)
        # named_parameters() lists a tied tensor once, so tied embeddings are merged once.
        self.params: dict[str, nn.Parameter] = dict(model.named_parameters())
        self.base = {n: p.detach().clone() for n, p in self.params.items()}
        self.task_vectors = dict(task_vectors)
        self._prepared: dict[str, dict[str, Any]] = {}

    @classmethod
    def from_folders(cls, model: nn.Module, endpoint_dirs: Mapping[str, str | Path]) -> Endpoints:
        """Read each endpoint tensor by tensor and keep only its difference from ``model``."""
        params = dict(model.named_parameters())
        n = len(endpoint_dirs)
        stacked = {
            name: torch.empty((n, *p.shape), dtype=p.dtype, device=p.device)
            for name, p in params.items()
        }
        for t, (ep_name, folder) in enumerate(endpoint_dirs.items()):
            with TensorReader(folder) as reader:
                for name, p in params.items():
                    if name not in reader:
                        raise ModelError(f"{folder}: endpoint {ep_name!r} lacks tensor {name!r}")
                    theta = reader.get(name)
                    if theta.shape != p.shape:
                        raise ModelError(
                            f"tensor {name!r}: endpoint {ep_name!r} has shape "
                            f"{tuple(theta.shape)}, the base {tuple(p.shape)}"
                        )
                    stacked[name][t].copy_(theta.to(p.dtype)).sub_(p.detach())
        return cls(model, stacked, list(endpoint_dirs))

    @property
    def n_models(self) -> int:
        return len(self.names)

    def prepare(self, operator: MergeOperator) -> None:
        """Run the operator's genome-independent precomputation once per tensor."""
        if operator.name in self._prepared:
            return
        self._prepared[operator.name] = {
            name: operator.prepare(self.base[name], self.task_vectors[name]) for name in self.params
        }

    @torch.no_grad()
    def apply(self, operator: MergeOperator, params: Mapping[str, Any]) -> None:
        """Write the merge given by ``operator`` and resolved ``params`` into the live model."""
        self.prepare(operator)
        prepared = self._prepared[operator.name]
        for name, p in self.params.items():
            operator.merge(p.data, self.base[name], self.task_vectors[name], params, prepared[name])

    @torch.no_grad()
    def restore_base(self) -> None:
        for name, p in self.params.items():
            p.data.copy_(self.base[name])
