"""Typed merge operators and the registry that names them.

An operator is a small pure computation over one tensor at a time (mergekit's convention): it
sees the base tensor and the stacked task vectors τ_t = θ_t − θ₀ of that tensor, and writes the
merged tensor into ``out``. Operators declare their parameters, so the search genome is derived
from the operator instead of being written by hand for each problem.

Work that does not depend on the parameters (a sort for TIES, a random field for DARE, an SVD for
TSV) belongs in :meth:`MergeOperator.prepare`, which runs once per tensor per run; :meth:`merge`
runs once per tensor per candidate and should cost about one pass over the task vectors.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from merge3.errors import ConfigError


@dataclass(frozen=True)
class Parameter:
    """One parameter of an operator.

    ``per_model`` parameters take one value per endpoint (a weight, a density); the others are one
    value for the whole merge. ``bounds`` is the natural search range of a numeric parameter and
    ``None`` for parameters that are never searched (flags, modes).
    """

    name: str
    default: float | bool | str
    per_model: bool = False
    bounds: tuple[float, float] | None = None
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False

    def check(self, value: Any, owner: str) -> Any:
        """Validate one value: a choice among ``choices``, or a finite number in range."""
        where = f"parameter {self.name!r} of {owner!r}"
        if self.choices is not None:
            if value not in self.choices:
                raise ConfigError(
                    f"{where} must be one of {', '.join(self.choices)}, got {value!r}"
                )
            return value
        if isinstance(self.default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{where} must be true or false, got {value!r}")
            return value
        try:
            values = torch.as_tensor(value, dtype=torch.float64).reshape(-1)
        except (TypeError, ValueError, RuntimeError):
            raise ConfigError(f"{where} must be a number, got {value!r}") from None
        if not torch.isfinite(values).all():
            raise ConfigError(f"{where} must be finite, got {_show(value)}")
        low = self.minimum
        if low is not None:
            bad = values <= low if self.exclusive_minimum else values < low
            if bad.any():
                side = ">" if self.exclusive_minimum else ">="
                raise ConfigError(f"{where} must be {side} {low:g}, got {_show(value)}")
        if self.maximum is not None and (values > self.maximum).any():
            raise ConfigError(f"{where} must be <= {self.maximum:g}, got {_show(value)}")
        return value


def _show(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    return repr(value)


def _nbytes(obj: Any) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(_nbytes(v) for v in obj)
    return 0


ParamValues = Mapping[str, Any]
"""Resolved parameters for one tensor: per-model values as 1-D tensors of length T, others as
plain Python scalars."""


class MergeOperator(ABC):
    """Base class of every merge operator."""

    name: ClassVar[str]
    parameters: ClassVar[tuple[Parameter, ...]]
    prepare_in_threads: ClassVar[bool] = False
    """Whether :meth:`prepare` may run for several tensors at once in threads (it is pure per
    tensor and its heavy part is single-threaded: a sort, seeded draws)."""

    def prepare(self, base: torch.Tensor, task_vectors: torch.Tensor, name: str = "") -> Any:
        """Precompute what no parameter can change, once per tensor; ``None`` when nothing.

        ``name`` is the tensor's name, so that seeded precomputation (DARE's random field) does
        not depend on the order tensors are visited in.
        """
        return None

    def table_bytes(self, prepared: Any) -> int:
        """Bytes held by one tensor's precomputed tables (for memory reports)."""
        return _nbytes(prepared)

    @abstractmethod
    def merge(
        self,
        out: torch.Tensor,
        base: torch.Tensor,
        task_vectors: torch.Tensor,
        params: ParamValues,
        prepared: Any = None,
    ) -> None:
        """Write the merged tensor into ``out`` (same shape and dtype as ``base``)."""

    def global_params(
        self, params: ParamValues, prepared: Mapping[str, Any]
    ) -> Mapping[str, Mapping[str, Any]] | None:
        """Per-tensor extra values that need every tensor at once (e.g. a whole-model trim
        threshold); ``None`` for operators that work tensor by tensor."""
        return None

    @classmethod
    def parameter(cls, name: str) -> Parameter:
        for p in cls.parameters:
            if p.name == name:
                return p
        known = ", ".join(p.name for p in cls.parameters)
        raise ConfigError(f"operator {cls.name!r} has no parameter {name!r} (known: {known})")

    @classmethod
    def resolve(cls, values: Mapping[str, Any], n_models: int) -> dict[str, Any]:
        """Fill defaults and check names and lengths; per-model values become float64 tensors."""
        unknown = set(values) - {p.name for p in cls.parameters}
        if unknown:
            known = ", ".join(p.name for p in cls.parameters)
            raise ConfigError(
                f"operator {cls.name!r} has no parameter {sorted(unknown)[0]!r} (known: {known})"
            )
        resolved: dict[str, Any] = {}
        for p in cls.parameters:
            value = values.get(p.name, p.default)
            if isinstance(value, torch.Tensor) and not p.per_model:
                value = value.item()
            if isinstance(value, int) and not isinstance(value, bool) and p.choices is None:
                value = float(value) if not isinstance(p.default, bool) else value
            p.check(value, cls.name)
            if p.per_model:
                if isinstance(value, int | float):
                    value = [float(value)] * n_models
                value = torch.as_tensor(value, dtype=torch.float64).reshape(-1)
                if value.numel() != n_models:
                    raise ConfigError(
                        f"parameter {p.name!r} of {cls.name!r} needs {n_models} values "
                        f"(one per endpoint), got {value.numel()}"
                    )
            resolved[p.name] = value
        return resolved


# Parameters several operators share, declared once (Parameter is frozen, so sharing is safe).
WEIGHT = Parameter("weight", 1.0, per_model=True, bounds=(0.0, 1.0))
LAMBDA = Parameter("lambda", 1.0, bounds=(0.0, 2.0))
DENSITY = Parameter(
    "density",
    1.0,
    per_model=True,
    bounds=(0.05, 1.0),
    minimum=0.0,
    exclusive_minimum=True,
    maximum=1.0,
)

OPERATORS: dict[str, type[MergeOperator]] = {}


def register(cls: type[MergeOperator]) -> type[MergeOperator]:
    """Class decorator: make an operator available by its ``name``."""
    OPERATORS[cls.name] = cls
    return cls


def get_operator(name: str) -> MergeOperator:
    """Instantiate the operator registered as ``name``; unknown names are a :class:`ConfigError`."""
    try:
        return OPERATORS[name]()
    except KeyError:
        known = ", ".join(sorted(OPERATORS))
        raise ConfigError(f"unknown merge operator {name!r} (known: {known})") from None
