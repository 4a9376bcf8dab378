"""Resident endpoints: the base and the task vectors τ_t = θ_t − θ₀, kept in memory.

A candidate merge is materialised by writing θ₀ + Δ(params) straight into the parameters of one
live model (no disk round trip, no second model), which is the per-candidate hot path of a
search. Per-tensor work that no parameter can change is done once by ``prepare``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from torch import nn

from merge3.errors import ModelError
from merge3.merging.registry import MergeOperator
from merge3.models.io import TensorReader, check_model_dir

LOG = logging.getLogger(__name__)


_VOCAB_SUFFIXES = ("embed_tokens.weight", "lm_head.weight", "wte.weight", "embed_out.weight")


def is_vocab_tensor(name: str) -> bool:
    """Embedding-like tensors whose first axis is the vocabulary (may differ between models)."""
    return name.endswith(_VOCAB_SUFFIXES)


def _input_embedding_name(model: nn.Module) -> str | None:
    try:
        emb = model.get_input_embeddings()
    except (AttributeError, NotImplementedError):
        return None
    for name, p in model.named_parameters():
        if emb is not None and p is emb.weight:
            return name
    return None


class Endpoints:
    """Base weights, stacked task vectors, and a live model to write merges into.

    Memory: the live model, a clone of the base (to restore and to merge from) and T task
    vectors, i.e. (T + 2) × the model in its dtype (task vectors may be held in another dtype),
    plus each operator's precomputed tables once :meth:`prepare` ran; :meth:`table_bytes` reports
    them. Table sizes, per tensor of n entries and T tasks: ``ties`` a sorted |τ| table
    (T·n in the task-vector dtype); ``dare_*`` a uniform field (T·n float16) plus, for tensors of
    ≥ 15 360 entries, a (T, 15 361) float64 table of kept L1 norms; ``tsv``/``tsv_compress`` the
    dense blocks D_t (T·n, matrices only); ``linear``/``task_arithmetic`` nothing. Operators
    whose precomputation is single-threaded per tensor (``prepare_in_threads``: the sort, the
    seeded draws) prepare as many tensors at once as torch has threads.
    """

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
        missing = [n for n in self.params if n not in self.task_vectors]
        if missing:
            raise ModelError(f"no task vectors for tensor {missing[0]!r}")
        self._prepared: dict[str, dict[str, Any]] = {}
        self._prepared_by: dict[str, MergeOperator] = {}
        self.prepare_seconds: dict[str, float] = {}

    @classmethod
    def load(
        cls,
        base_dir: str | Path,
        endpoint_dirs: Mapping[str, str | Path] | Sequence[str | Path],
        dtype: torch.dtype = torch.float32,
        task_vector_dtype: torch.dtype | None = None,
        device: str = "cpu",
    ) -> Endpoints:
        """Load the base as a live causal LM and the endpoints' task vectors from HF folders."""
        from merge3.models.io import load_causal_lm

        if not isinstance(endpoint_dirs, Mapping):
            endpoint_dirs = {str(d): d for d in endpoint_dirs}
        for folder in endpoint_dirs.values():
            check_same_architecture(base_dir, folder)
        model = load_causal_lm(base_dir, dtype=dtype, device=device)
        return cls.from_folders(model, endpoint_dirs, task_vector_dtype)

    @classmethod
    def from_folders(
        cls,
        model: nn.Module,
        endpoint_dirs: Mapping[str, str | Path],
        task_vector_dtype: torch.dtype | None = None,
    ) -> Endpoints:
        """Read each endpoint tensor by tensor and keep only its difference from ``model``.

        Task vectors are held in ``task_vector_dtype`` (default: the model's dtype). Embeddings
        with a different vocabulary size are cropped (or zero-padded) to the base's rows with a
        warning; any other shape mismatch, a missing tensor or a NaN/Inf is a :class:`ModelError`
        naming the tensor and the endpoint.
        """
        params = dict(model.named_parameters())
        tied_input = _input_embedding_name(model)
        n = len(endpoint_dirs)
        if n == 0:
            raise ModelError("no endpoints given: a merge needs at least one fine-tuned model")
        stacked = {
            name: torch.empty((n, *p.shape), dtype=task_vector_dtype or p.dtype, device=p.device)
            for name, p in params.items()
        }
        base_cfg = model.config.to_dict() if hasattr(model, "config") else {}
        for t, (ep_name, folder) in enumerate(endpoint_dirs.items()):
            _check_config(base_cfg, "the base", folder)
            with TensorReader(folder) as reader:
                for name, p in params.items():
                    key = name
                    if key not in reader and tied_input is not None and is_vocab_tensor(name):
                        key = tied_input  # a tied endpoint stores only the input embedding
                    if key not in reader:
                        raise ModelError(f"{folder}: endpoint {ep_name!r} lacks tensor {name!r}")
                    theta = _fit_shape(reader.get(key), p, name, ep_name)
                    if not torch.isfinite(theta).all():
                        raise ModelError(
                            f"tensor {name!r} of endpoint {ep_name!r} ({folder}) holds NaN or Inf"
                        )
                    theta = theta.to(
                        device=p.device, dtype=torch.promote_types(theta.dtype, p.dtype)
                    )
                    stacked[name][t].copy_(theta - p.detach())
        return cls(model, stacked, list(endpoint_dirs))

    @property
    def n_models(self) -> int:
        return len(self.names)

    @property
    def task_vector_dtype(self) -> torch.dtype:
        return next(iter(self.task_vectors.values())).dtype

    def model_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.params.values())

    def task_vector_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.task_vectors.values())

    def table_bytes(self, operator: MergeOperator | None = None) -> int:
        """Bytes of precomputed tables (of one operator, or of all prepared so far)."""
        names = [operator.name] if operator is not None else list(self._prepared)
        total = 0
        for op_name in names:
            op = self._prepared_by.get(op_name)
            if op is not None:
                total += sum(op.table_bytes(x) for x in self._prepared[op_name].values())
        return total

    def prepare(self, operator: MergeOperator) -> None:
        """Run the operator's genome-independent precomputation once per tensor."""
        done = self._prepared_by.get(operator.name)
        if done is not None and _same_operator(done, operator):
            return  # a fresh instance with the same options reuses the tables
        start = time.perf_counter()

        def one(name: str) -> Any:
            with torch.no_grad():  # grad mode is per thread
                return operator.prepare(self.base[name], self.task_vectors[name], name=name)

        workers = min(torch.get_num_threads(), len(self.params))
        if operator.prepare_in_threads and workers > 1:
            # Largest tensors first, so the pool ends balanced; the sort (TIES) and the seeded
            # draws (DARE) run on one core each, and release the GIL.
            order = sorted(self.params, key=lambda n: -self.task_vectors[n].numel())
            with ThreadPoolExecutor(workers) as pool:
                done_by_name = dict(zip(order, pool.map(one, order), strict=True))
            tables = {name: done_by_name[name] for name in self.params}
        else:
            tables = {name: one(name) for name in self.params}
        self._prepared[operator.name] = tables
        self._prepared_by[operator.name] = operator
        self.prepare_seconds[operator.name] = time.perf_counter() - start

    def release(self, operator: MergeOperator | str) -> None:
        """Free an operator's tables."""
        name = operator if isinstance(operator, str) else operator.name
        self._prepared.pop(name, None)
        self._prepared_by.pop(name, None)

    @torch.no_grad()
    def apply(
        self,
        operator: MergeOperator,
        params: Mapping[str, Any],
        per_tensor: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        """Write the merge given by ``operator`` and resolved ``params`` into the live model.

        ``per_tensor`` optionally overrides resolved parameters for some tensors (mergekit's
        per-layer gradients and filters).
        """
        self.prepare(operator)
        prepared = self._prepared[operator.name]
        extra = operator.global_params(params, prepared) or {}
        for name, p in self.params.items():
            values = params
            if name in extra or (per_tensor and name in per_tensor):
                values = {**params, **((per_tensor or {}).get(name, {})), **extra.get(name, {})}
            operator.merge(p.data, self.base[name], self.task_vectors[name], values, prepared[name])

    @torch.no_grad()
    def restore_base(self) -> None:
        for name, p in self.params.items():
            p.data.copy_(self.base[name])

    @torch.no_grad()
    def load_endpoint(self, index: int) -> None:
        """Write endpoint ``index`` itself (θ₀ + τ_j) into the live model."""
        for name, p in self.params.items():
            p.data.copy_(self.base[name]).add_(self.task_vectors[name][index])


def _same_operator(a: MergeOperator, b: MergeOperator) -> bool:
    return a is b or (type(a) is type(b) and vars(a) == vars(b))


def _fit_shape(theta: torch.Tensor, p: torch.Tensor, name: str, ep_name: str) -> torch.Tensor:
    """Crop or pad a vocabulary axis to the base's rows (with a warning); reject other shapes."""
    if theta.shape == p.shape:
        return theta
    if is_vocab_tensor(name) and theta.dim() == p.dim() == 2 and theta.shape[1] == p.shape[1]:
        rows = p.shape[0]
        LOG.warning(
            "tensor %r: endpoint %r has %d vocabulary rows, the base %d; %s to the base's rows",
            name,
            ep_name,
            theta.shape[0],
            rows,
            "cropping" if theta.shape[0] > rows else "padding with the base's rows",
        )
        if theta.shape[0] > rows:
            return theta[:rows]
        return torch.cat([theta.to(p.dtype), p.detach()[theta.shape[0] :].to(theta.device)])
    raise ModelError(
        f"tensor {name!r}: endpoint {ep_name!r} has shape {tuple(theta.shape)}, "
        f"the base {tuple(p.shape)} (different architectures?)"
    )


def check_same_architecture(base_dir: str | Path, endpoint_dir: str | Path) -> None:
    """Endpoints must share the base's architecture (model type and layer count)."""
    _check_config(_read_config(base_dir), f"the base {base_dir}", endpoint_dir)


def _check_config(base_cfg: Mapping[str, Any], base: str, endpoint_dir: str | Path) -> None:
    ep_cfg = _read_config(endpoint_dir)
    for key in ("model_type", "num_hidden_layers", "hidden_size"):
        if key in base_cfg and key in ep_cfg and base_cfg[key] != ep_cfg[key]:
            raise ModelError(
                f"{endpoint_dir}: {key} is {ep_cfg[key]!r} but {base} has "
                f"{base_cfg[key]!r}: endpoints must be fine-tunes of the base"
            )


def _read_config(folder: str | Path) -> dict[str, Any]:
    path = check_model_dir(folder) / "config.json"
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: malformed config.json ({exc})") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path}: malformed config.json (not a JSON object)")
    return data
