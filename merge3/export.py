"""Export a candidate: a Hugging Face folder, the recipe as a mergekit YAML, and a model card.

The folder is written into a temporary sibling and renamed into place, so an interrupted export
never leaves a half-written model where a finished one is expected.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from merge3.errors import RunDirError


def mergekit_config(
    recipe: Mapping[str, Any],
    base: str,
    endpoints: Mapping[str, str],
    dtype: str,
    tensor_names: Sequence[str] = (),
) -> dict:
    """The recipe in mergekit's merge-YAML vocabulary (per-model and global ``parameters``).

    A grouped recipe becomes ``[{filter, value}, ..., {value}]`` lists, mergekit's per-tensor
    filters (substring matches, first wins), so the YAML rebuilds exactly the same merge.
    ``merge3 merge`` reads this file back; mergekit reads it too for the operators it shares
    with merge3 (``linear``, ``task_arithmetic``, ``ties``, ``dare_*``).
    """
    from merge3.evolve.granularity import REST, filters
    from merge3.merging import get_operator

    operator = get_operator(recipe["operator"])
    per_model = {p.name for p in operator.parameters if p.per_model}
    names = list(recipe["endpoints"])
    groups = recipe.get("groups")
    patterns = {}
    if groups:
        mode = recipe["granularity"]
        patterns = filters(mode["mode"], mode["blocks"], tensor_names)

    def setting(key: str, i: int | None) -> Any:
        def pick(values: Mapping[str, Any]) -> Any:
            value = values[key]
            return value[i] if i is not None and isinstance(value, list) else value

        if not groups or key not in groups[REST]:
            return pick(recipe["params"])
        entries = [
            {"filter": pattern, "value": pick(groups[group])}
            for group, subs in patterns.items()
            for pattern in subs
        ]
        return [*entries, {"value": pick(groups[REST])}]

    keys = list(recipe["params"]) + (list(groups[REST]) if groups else [])
    models = [
        {
            "model": endpoints[name],
            "parameters": {k: setting(k, i) for k in sorted(set(keys) & per_model)},
        }
        for i, name in enumerate(names)
    ]
    shared = {k: setting(k, None) for k in dict.fromkeys(keys) if k not in per_model}
    return {
        "merge_method": recipe["operator"],
        "base_model": base,
        "models": models,
        "parameters": shared,
        "dtype": dtype,
    }


def model_card(recipe: Mapping[str, Any], config_yaml: str, scores: Mapping[str, Any]) -> str:
    lines = [
        "---",
        "tags: [merge, merge3]",
        "---",
        "# Merged with merge3",
        "",
        f"Operator: `{recipe['operator']}` over endpoints {', '.join(recipe['endpoints'])}.",
        "",
        "## Scores",
        "",
        "```json",
        json.dumps(dict(scores), indent=2),
        "```",
        "",
        "## Recipe (mergekit YAML: `merge.yaml`; `merge3 merge merge.yaml --out DIR` rebuilds it)",
        "",
        "```json",
        json.dumps(dict(recipe), indent=2),
        "```",
        "",
        "## Search config",
        "",
        "```yaml",
        config_yaml.rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)


def export_merge(
    merger,
    recipe: Mapping[str, Any],
    out_dir: str | Path,
    scores: Mapping[str, Any],
    config_yaml: str,
) -> Path:
    """Merge ``recipe`` into the live model and save it with its YAML and card at ``out_dir``."""
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RunDirError(f"{out}: exists and is not empty; choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        merger.merge(recipe)
        merger.model.save_pretrained(tmp, safe_serialization=True)
        merger.tokenizer.save_pretrained(tmp)
        cfg = merger.cfg
        kit = mergekit_config(
            recipe,
            cfg.models.base,
            cfg.models.endpoints,
            cfg.models.dtype,
            list(merger.endpoints.params),
        )
        (tmp / "merge.yaml").write_text(yaml.safe_dump(kit, sort_keys=False))
        (tmp / "README.md").write_text(model_card(recipe, config_yaml, scores))
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
