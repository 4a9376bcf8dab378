"""The run config: a pydantic schema loaded from YAML.

Every section rejects unknown keys, and every error names the key's path (``search.population``)
and the file, so a typo never silently falls back to a default. ``resolve`` writes every default
out; the resolved config is what a run directory stores and what ``resume`` reads back.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from merge3.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelsConfig(_Section):
    """The base model and the fine-tuned endpoints (local Hugging Face folders)."""

    base: str
    endpoints: dict[str, str] = Field(min_length=1)
    dtype: Literal["float32", "float16", "bfloat16", "float64"] = "float32"
    trust_remote_code: bool = False
    """Let transformers run Python code shipped in the model folders (off unless set here)."""


class TaskConfig(_Section):
    """One task: items for the search (anchors come from there) and, optionally, for test.

    Items come either from local files (``search``/``test``: jsonl, csv or parquet, with an
    optional ``fields`` mapping) or from a benchmark ``spec`` understood by ``merge3 evaluate``
    (``mmlu``, ``gsm8k``, ``mgsm-de``, ``senteval-mr``, ``leaderboard-arc``, an lm-eval task,
    a file), whose ``search_split``/``test_split`` are used, optionally only some ``subjects``.
    """

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    search: str | None = None
    test: str | None = None
    fields: dict[str, Any] = Field(default_factory=dict)
    kind: Literal["multiple_choice", "generate"] = "multiple_choice"
    spec: str | None = None
    subjects: list[str] | None = None
    num_fewshot: int = Field(0, ge=0)
    search_split: str = "search"
    test_split: str | None = "test"

    @field_validator("fields")
    @classmethod
    def _known_fields(cls, value: dict[str, Any]) -> dict[str, Any]:
        from merge3.data.files import FIELDS

        unknown = set(value) - {*FIELDS, "metadata"}
        if unknown:
            known = ", ".join([*FIELDS, "metadata"])
            raise ValueError(f"unknown field name {sorted(unknown)[0]!r} ({known})")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> TaskConfig:
        if (self.search is None) == (self.spec is None):
            raise ValueError("give either `search` (an item file) or `spec` (a benchmark)")
        return self


class BenchmarkConfig(_Section):
    tasks: list[TaskConfig] = Field(min_length=1)
    target_delimiter: str = " "
    data_dir: str | None = None
    """Where bundled real sets live (default: $MERGE3_DATA, else ../shared/data)."""

    @field_validator("tasks")
    @classmethod
    def _unique_names(cls, tasks: list[TaskConfig]) -> list[TaskConfig]:
        names = [t.name for t in tasks]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"task name {sorted(dup)[0]!r} appears twice")
        return tasks


class AnchorsConfig(_Section):
    n_per_task: int = Field(20, ge=1)
    method: Literal["random", "stratified", "irt-kmeans", "correctness-kmeans", "irt-info"] = (
        "random"
    )
    seed: int = 0


class EstimatorConfig(_Section):
    """How anchor correctness becomes estimated accuracy (see merge3/estimate).

    Every estimator but ``mean`` needs IRT item parameters: from ``irt_items`` (a file written
    by ``merge3 irt fit``) or fitted by the run on the full search split of the endpoints, the
    base and ``reference_merges`` random merges (evaluated once, cached in RUN_DIR/irt/).
    """

    name: Literal["mean", "irt", "pirt", "gpirt", "mpirt", "gmpirt"] = "mean"
    irt_items: str | None = None
    irt_model: Literal["1pl", "2pl"] = "2pl"
    dims: int = Field(1, ge=1)
    reference_merges: int = Field(8, ge=0)
    lam: float | None = Field(None, ge=0, le=1)
    """Mix of the g-estimators; None: least squares on the reference merges (0.5 without)."""
    constraint: Literal["simplex", "affine", "nonneg", "free"] = "simplex"
    inference: Literal["map", "posterior"] = "map"
    """How mpirt/gmpirt read λ from the anchors: the MAP point (MERGE³) or the posterior mean
    under a uniform Dirichlet prior (simplex only; lower error at few anchors)."""
    seed: int = 0

    @property
    def needs_irt(self) -> bool:
        return self.name != "mean"


class MergeConfig(_Section):
    """The operator and which of its parameters the genome searches (and in what bounds)."""

    operator: str = "task_arithmetic"
    bounds: dict[str, tuple[float, float]] = Field(default_factory=dict)
    fixed: dict[str, Any] = Field(default_factory=dict)
    step: float | None = Field(None, gt=0)
    """Grid of the searched values (MERGE³ uses 0.1): genes are rounded to lower + k·step."""
    granularity: Literal["model", "groups", "blocks"] = "model"
    """Which tensors share genes: the whole model, attention/MLP/rest, or K layer blocks."""
    blocks: int = Field(4, ge=1)

    @field_validator("bounds")
    @classmethod
    def _ordered(cls, bounds: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        for name, (low, high) in bounds.items():
            if not low < high:
                raise ValueError(f"bounds of {name!r}: lower {low} must be below upper {high}")
        return bounds


class SearchConfig(_Section):
    """The optimiser, and where and how robustly its candidates are evaluated."""

    algorithm: Literal["ga", "de", "cmaes", "nsga2", "nsga3"] = "ga"
    objectives: Literal["mean", "per_task"] | None = None
    population: int = Field(16, ge=2)
    generations: int = Field(10, ge=1)
    seed: int = 0
    executor: Literal["in_process", "ray"] = "in_process"
    """``ray``: a generation's candidates are spread over Ray workers (the ``ray`` extra)."""
    workers: int | None = Field(None, ge=1)
    """Ray workers; None: one per GPU of the cluster on a CUDA device, else 2 CPU workers."""
    address: str | None = None
    """An existing Ray cluster (``auto``, ``ray://host:10001``); None: start a local one."""
    max_retries: int = Field(2, ge=0)
    """Times a candidate whose worker died is retried on another worker before it fails."""
    max_consecutive_failures: int = Field(10, ge=1)
    """K failed candidates in a row (in genome order) stop the run; it stays resumable."""


class FinalConfig(_Section):
    """After the last generation: true accuracy on the test split, and the best merge saved."""

    top_k: int | None = Field(None, ge=1)
    """None: re-evaluate the Pareto front; k: the k best candidates by mean estimated accuracy."""
    export_best: bool = True


class EvaluationConfig(_Section):
    batch_size: int = Field(32, ge=1)
    device: str = "cpu"
    normalize: bool = False
    response_cache: str | None = None
    """A folder that keeps the answers of fixed models (endpoints, base, reference merges)
    across runs, so a second search with the same models and items skips evaluating them."""


class RunConfig(_Section):
    """A whole search: models, benchmark, anchors, estimator, merge genome, search, evaluation."""

    name: str = "merge3-run"
    prepare: Literal["tiny", "demo"] | None = None
    models: ModelsConfig
    benchmark: BenchmarkConfig
    anchors: AnchorsConfig = AnchorsConfig()
    estimator: EstimatorConfig = EstimatorConfig()
    merge: MergeConfig = MergeConfig()
    search: SearchConfig = SearchConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    final: FinalConfig = FinalConfig()

    @property
    def objective_mode(self) -> str:
        """``mean`` (one objective) for single-objective algorithms, else one per task."""
        if self.search.objectives is not None:
            return self.search.objectives
        return "mean" if self.search.algorithm in ("ga", "de", "cmaes") else "per_task"

    @property
    def objective_names(self) -> list[str]:
        if self.objective_mode == "mean":
            return ["mean"]
        return [t.name for t in self.benchmark.tasks]


_ENV = re.compile(r"\$\{(\w+)\}")


def _expand(value: str, base_dir: Path) -> str:
    """Expand ``${VAR}`` (``MERGE3_CACHE`` defaults to the cache) and ``~``; anchor relative
    paths at the config file's folder, so a config works from any working directory."""

    def env(match: re.Match) -> str:
        name = match.group(1)
        if name == "MERGE3_CACHE" and name not in os.environ:
            from merge3.tiny import cache_root

            return str(cache_root())
        if name not in os.environ:
            raise ConfigError(f"environment variable ${{{name}}} is not set")
        return os.environ[name]

    path = Path(os.path.expanduser(_ENV.sub(env, value)))
    return str(path if path.is_absolute() else (base_dir / path).resolve())


def _resolve_paths(cfg: RunConfig, base_dir: Path) -> RunConfig:
    models = cfg.models.model_copy(
        update={
            "base": _expand(cfg.models.base, base_dir),
            "endpoints": {k: _expand(v, base_dir) for k, v in cfg.models.endpoints.items()},
        }
    )

    def maybe(value: str | None) -> str | None:
        return _expand(value, base_dir) if value else None

    def spec(value: str | None) -> str | None:
        # a spec is a name (mmlu) unless it looks like a file path
        looks_like_path = value and ("/" in value or value.endswith((".jsonl", ".csv", ".yaml")))
        return _expand(value, base_dir) if looks_like_path else value

    tasks = [
        t.model_copy(
            update={"search": maybe(t.search), "test": maybe(t.test), "spec": spec(t.spec)}
        )
        for t in cfg.benchmark.tasks
    ]
    bench = cfg.benchmark.model_copy(
        update={"tasks": tasks, "data_dir": maybe(cfg.benchmark.data_dir)}
    )
    estimator = cfg.estimator.model_copy(update={"irt_items": maybe(cfg.estimator.irt_items)})
    evaluation = cfg.evaluation.model_copy(
        update={"response_cache": maybe(cfg.evaluation.response_cache)}
    )
    return cfg.model_copy(
        update={
            "models": models,
            "benchmark": bench,
            "estimator": estimator,
            "evaluation": evaluation,
        }
    )


def _check_against_registry(cfg: RunConfig, source: str) -> None:
    """What pydantic cannot know: the operator's name and parameters, the objective count."""
    from merge3.merging import OPERATORS

    op = OPERATORS.get(cfg.merge.operator)
    if op is None:
        known = ", ".join(sorted(OPERATORS))
        raise ConfigError(
            f"{source}: merge.operator: unknown operator {cfg.merge.operator!r} (known: {known})"
        )
    names = {p.name for p in op.parameters}
    for section in ("bounds", "fixed"):
        for key in getattr(cfg.merge, section):
            if key not in names:
                raise ConfigError(
                    f"{source}: merge.{section}.{key}: {op.name!r} has no parameter {key!r} "
                    f"(known: {', '.join(sorted(names))})"
                )
    single = cfg.search.algorithm in ("ga", "de", "cmaes")
    if single and len(cfg.objective_names) > 1:
        raise ConfigError(
            f"{source}: search.objectives: {cfg.search.algorithm!r} is single-objective; "
            "use objectives: mean or a multi-objective algorithm (nsga2, nsga3)"
        )
    if cfg.search.algorithm == "nsga3" and len(cfg.objective_names) < 2:
        raise ConfigError(f"{source}: search.algorithm: 'nsga3' needs two or more objectives")
    for key in ("workers", "address"):
        if cfg.search.executor != "ray" and getattr(cfg.search, key) is not None:
            raise ConfigError(f"{source}: search.{key}: applies only to executor: ray")


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(part) for part in err["loc"]) or "(top level)"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif err["type"] == "missing":
        msg = "required key is missing"
    return f"{loc}: {msg}"


def parse_config(data: Any, source: str = "config", base_dir: Path | None = None) -> RunConfig:
    """Validate a config mapping; paths are resolved against ``base_dir`` (default: the CWD)."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: the config must be a mapping of sections, got {type(data).__name__}"
        )
    try:
        cfg = RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_first_error(exc)}") from None
    _check_against_registry(cfg, source)
    try:
        return _resolve_paths(cfg, base_dir or Path.cwd())
    except ConfigError as exc:  # an unset ${VAR}: say which file uses it
        raise ConfigError(f"{source}: {exc}") from None


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a YAML run config."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (IsADirectoryError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config ({exc.__class__.__name__})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = f" ({exc.problem})" if getattr(exc, "problem", None) else ""
        raise ConfigError(f"{path}: invalid YAML{where}{problem}") from None
    return parse_config(data, str(path), path.parent.resolve())


def dump_config(cfg: RunConfig) -> str:
    """The resolved config as YAML, every default written out."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
