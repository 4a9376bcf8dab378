"""mergekit merge YAML in, a merged Hugging Face folder out (``merge3 merge CONFIG --out DIR``).

Reads the part of mergekit's format that merge3's operators cover: ``models`` (each with its
``parameters``), ``base_model``, ``merge_method``, global ``parameters``, ``dtype``,
``out_dtype`` and ``tokenizer_source: base``; parameter values may be scalars, per-layer gradient
lists (interpolated over the layers like mergekit) or ``[{filter, value}]`` lists. Methods:
``linear``, ``task_arithmetic``, ``ties``, ``dare_linear``, ``dare_ties``, ``tsv`` (global
``alpha``, per-model ``weight``; merge3's extension) and ``tsv_compress``. Anything else (slices,
modules, other methods, tokenizer merging, LoRA references) fails with one line naming it.

The merge itself runs on merge3's resident endpoints, exactly like one search candidate.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from merge3.errors import ConfigError, ModelError
from merge3.merging import get_operator
from merge3.merging.registry import MergeOperator
from merge3.models.io import DTYPES

METHODS = ("linear", "task_arithmetic", "ties", "dare_linear", "dare_ties", "tsv", "tsv_compress")
_TOP_KEYS = {
    "models",
    "base_model",
    "merge_method",
    "parameters",
    "dtype",
    "out_dtype",
    "tokenizer_source",
    "name",
}
_UNSUPPORTED_TOP = {
    "slices": "slices (layer stacking)",
    "modules": "modules",
    "tokenizer": "tokenizer merging (`tokenizer:`)",
    "chat_template": "chat_template",
}
_IGNORED_PARAMS = {"int8_mask"}  # a mergekit memory option with no effect on the result
_OPERATOR_OPTIONS = {"seed", "fraction"}  # constructor options of merge3's operators
_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
    "generation_config.json",
)


@dataclass
class MergeSpec:
    """A parsed mergekit merge YAML."""

    method: str
    base: Path
    endpoints: list[Path]
    global_params: dict[str, Any] = field(default_factory=dict)
    model_params: list[dict[str, Any]] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    dtype: str = "float32"
    out_dtype: str | None = None
    source: str = ""

    def operator(self) -> MergeOperator:
        op = get_operator(self.method)
        for key, value in self.options.items():
            setattr(op, key, value)
        return op


def _path(ref: Any, where: str, config: Path) -> Path:
    if not isinstance(ref, str):
        raise ConfigError(f"{config}: {where} must be a model folder path, got {ref!r}")
    if "+" in ref:
        raise ConfigError(f"{config}: {where}: LoRA references ('model+lora') are not supported")
    path = Path(ref).expanduser()
    if not path.is_dir() and not path.is_absolute():  # as mergekit: from the working folder,
        path = config.parent / path  # then (merge3) from the config's folder
    if not path.is_dir():
        raise ModelError(
            f"{config}: {where} {ref!r} is not a local model folder (merge3 merges local "
            "Hugging Face folders; download hub models first)"
        )
    return path


def parse(config_path: str | Path) -> MergeSpec:
    """Read and check a mergekit merge YAML; errors name the file and the key."""
    config = Path(config_path)
    try:
        source = config.read_text()
        raw = yaml.safe_load(source)
    except FileNotFoundError:
        raise ConfigError(f"{config}: merge config not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{config}: not valid YAML ({exc})".replace("\n", " ")) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{config}: a merge config is a mapping with `merge_method` and `models`")
    for key, what in _UNSUPPORTED_TOP.items():
        if raw.get(key):
            raise ConfigError(f"{config}: mergekit feature {what} is not supported by merge3")
    unknown = set(raw) - _TOP_KEYS - set(_UNSUPPORTED_TOP)
    if unknown:
        raise ConfigError(f"{config}: unknown key {sorted(unknown)[0]!r}")
    method = raw.get("merge_method")
    if method not in METHODS:
        raise ConfigError(
            f"{config}: merge_method {method!r} is not supported by merge3 "
            f"(supported: {', '.join(METHODS)})"
        )
    tok = raw.get("tokenizer_source")
    if tok not in (None, "base"):
        raise ConfigError(
            f"{config}: tokenizer_source {tok!r} is not supported (merge3 copies the base's)"
        )
    models = raw.get("models")
    if not isinstance(models, list) or not models:
        raise ConfigError(f"{config}: `models` must be a non-empty list")
    base = raw.get("base_model")
    base_path = _path(base, "base_model", config) if base is not None else None
    if base_path is None and method != "linear":
        raise ConfigError(f"{config}: merge_method {method!r} needs a `base_model`")
    endpoints: list[Path] = []
    model_params: list[dict[str, Any]] = []
    for i, entry in enumerate(models):
        if isinstance(entry, str):
            entry = {"model": entry}
        if not isinstance(entry, dict) or "model" not in entry:
            raise ConfigError(f"{config}: models[{i}] needs a `model` key")
        path = _path(entry["model"], f"models[{i}].model", config)
        params = entry.get("parameters") or {}
        if not isinstance(params, dict):
            raise ConfigError(f"{config}: models[{i}].parameters must be a mapping")
        if method != "linear" and base_path is not None and path.resolve() == base_path.resolve():
            continue  # mergekit: the base model is not one of the merged task vectors
        endpoints.append(path)
        model_params.append(params)
    if not endpoints:
        raise ConfigError(f"{config}: no model to merge besides the base")
    if base_path is None:  # linear without a base: merge around the first model
        base_path = endpoints[0]
    for key in ("dtype", "out_dtype"):
        if raw.get(key) is not None and raw[key] not in DTYPES:
            raise ConfigError(
                f"{config}: {key} {raw[key]!r} is not a dtype (known: {', '.join(DTYPES)})"
            )
    global_params = dict(raw.get("parameters") or {})
    options = {k: global_params.pop(k) for k in list(global_params) if k in _OPERATOR_OPTIONS}
    spec = MergeSpec(
        method=method,
        base=base_path,
        endpoints=endpoints,
        global_params=global_params,
        model_params=model_params,
        options=options,
        dtype=str(raw.get("dtype") or "float32"),
        out_dtype=raw.get("out_dtype"),
        source=source,
    )
    _check_names(spec, config)
    return spec


def _check_names(spec: MergeSpec, config: Path) -> None:
    op_cls = type(get_operator(spec.method))
    known = {p.name for p in op_cls.parameters} | _IGNORED_PARAMS
    per_model = {p.name for p in op_cls.parameters if p.per_model}
    for key in spec.global_params:
        if key not in known:
            raise ConfigError(
                f"{config}: parameter {key!r} is not supported for merge_method {spec.method!r}"
            )
    for i, params in enumerate(spec.model_params):
        for key in params:
            if key not in per_model and key not in _IGNORED_PARAMS:
                raise ConfigError(
                    f"{config}: models[{i}].parameters.{key} is not a per-model parameter of "
                    f"{spec.method!r} (per-model: {', '.join(sorted(per_model))})"
                )


def evaluate_setting(setting: Any, tensor: str, t: float) -> Any:
    """mergekit's value of a setting for one tensor: filters first, then gradient lists."""
    if isinstance(setting, dict) and "value" in setting:
        setting = [setting]
    if isinstance(setting, list) and setting and all(isinstance(s, dict) for s in setting):
        for cond in setting:
            flt = cond.get("filter")
            if flt is None or flt == "*" or flt in tensor:
                return evaluate_setting(cond.get("value"), tensor, t)
        return None
    if isinstance(setting, list):
        if not setting:
            return None
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in setting)
        if not numeric:
            return setting[int(t * (len(setting) - 1))]
        scaled = t * (len(setting) - 1)
        i0 = int(scaled)
        i1 = min(len(setting) - 1, i0 + 1)
        frac = scaled - i0
        return (1 - frac) * setting[i0] + frac * setting[i1]
    return setting


def layer_position(name: str, n_layers: int) -> float:
    """mergekit's gradient position t: layer i of L at i/(L−1), other tensors at 0."""
    match = _LAYER.search(name)
    if match is None or n_layers <= 1:
        return 0.0
    return int(match.group(1)) / (n_layers - 1)


def _operator_value(method: str, key: str, value: Any) -> Any:
    if key == "rescale" and method.startswith("dare") and isinstance(value, bool):
        return "l1" if value else "none"  # mergekit's rescale: true is L1 norm matching
    return value


def tensor_values(spec: MergeSpec, tensor: str, t: float) -> dict[str, Any]:
    """The operator's parameter values for one tensor (per-model values as lists)."""
    op_cls = type(get_operator(spec.method))
    values: dict[str, Any] = {}
    for p in op_cls.parameters:
        if p.per_model:
            per = []
            for params in spec.model_params:
                v = evaluate_setting(params.get(p.name), tensor, t)
                if v is None:
                    v = evaluate_setting(spec.global_params.get(p.name), tensor, t)
                per.append(p.default if v is None else v)
            values[p.name] = per
        else:
            v = evaluate_setting(spec.global_params.get(p.name), tensor, t)
            if v is not None:
                values[p.name] = _operator_value(spec.method, p.name, v)
    return values


def merge_spec(spec: MergeSpec, device: str = "cpu"):
    """Run the merge of ``spec`` into a live model and return ``(endpoints, operator)``."""
    from merge3.models.endpoints import Endpoints
    from merge3.models.io import parse_dtype

    dtype = parse_dtype(spec.dtype)
    endpoints = Endpoints.load(
        spec.base, {str(p): p for p in spec.endpoints}, dtype=dtype, device=device
    )
    op = spec.operator()
    n = endpoints.n_models
    n_layers = int(getattr(endpoints.model.config, "num_hidden_layers", 0) or 0)
    per_tensor = {}
    for name in endpoints.params:
        values = tensor_values(spec, name, layer_position(name, n_layers))
        per_tensor[name] = op.resolve(values, n)
    default = op.resolve(tensor_values(spec, "", 0.0), n)
    endpoints.apply(op, default, per_tensor=per_tensor)
    return endpoints, op


def merge_from_yaml(config_path: str | Path, out_dir: str | Path) -> Path:
    """Merge as a mergekit YAML says and write an HF folder (safetensors shards, config, the
    base's tokenizer, a model card with the recipe). Returns the output folder."""
    spec = parse(config_path)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: output path exists and is not a folder")
    endpoints, _ = merge_spec(spec)
    model = endpoints.model
    if spec.out_dtype:
        from merge3.models.io import parse_dtype

        model = model.to(parse_dtype(spec.out_dtype))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True, max_shard_size="5GB")
    for name in _TOKENIZER_FILES:
        src = spec.base / name
        if src.is_file() and not (name == "generation_config.json" and (out / name).exists()):
            shutil.copyfile(src, out / name)
    (out / "mergekit_config.yml").write_text(spec.source)
    (out / "README.md").write_text(model_card(spec, out))
    return out


def model_card(spec: MergeSpec, out: Path) -> str:
    models = "\n".join(f"- `{p}`" for p in spec.endpoints)
    return (
        "---\nlibrary_name: transformers\ntags:\n- merge\n- merge3\n---\n"
        f"# {out.name}\n\n"
        f"Merged with [merge3](https://github.com/) using `{spec.method}`"
        f" on base `{spec.base}`.\n\n## Models merged\n\n{models}\n\n"
        f"## Recipe\n\n```yaml\n{spec.source.rstrip()}\n```\n"
    )


def spec_values(spec: MergeSpec) -> Mapping[str, Any]:
    """Global parameter values (for reports)."""
    return tensor_values(spec, "", 0.0)
