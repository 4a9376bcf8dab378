"""Per-layer-group genes: which tensors share a gene.

``model``: one value per parameter for the whole model. ``groups``: separate values for the
attention tensors, the MLP tensors and the rest. ``blocks``: K contiguous blocks of layers, plus
the rest (embeddings, final norm, head), like mergekit-evolve's layer granularity.

Groups are defined by substrings of tensor names, the way mergekit's parameter ``filter`` works
(first match wins), so a grouped recipe exports to a mergekit YAML exactly.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

REST = "rest"
GROUP_PATTERNS = {
    "attn": ("self_attn", "attention"),
    "mlp": ("mlp", "feed_forward", "intermediate"),
}
_LAYER = re.compile(r"(?:^|\.)layers?\.(\d+)\.")


def group_names(mode: str, blocks: int) -> list[str]:
    if mode == "model":
        return ["all"]
    if mode == "groups":
        return [*GROUP_PATTERNS, REST]
    return [*(f"block{b}" for b in range(blocks)), REST]


def filters(mode: str, blocks: int, names: Iterable[str]) -> dict[str, list[str]]:
    """Name substrings of every group but ``rest`` (which takes whatever matches none)."""
    if mode == "groups":
        return {g: list(p) for g, p in GROUP_PATTERNS.items()}
    if mode == "blocks":
        token, n_layers = layer_naming(names)
        out: dict[str, list[str]] = {f"block{b}": [] for b in range(blocks)}
        for layer in range(n_layers):
            out[f"block{layer * blocks // n_layers}"].append(f"{token}.{layer}.")
        return out
    return {}


def assign(names: Iterable[str], mode: str, blocks: int) -> dict[str, str]:
    """The group of every tensor name."""
    names = list(names)
    if mode == "model":
        return {name: "all" for name in names}
    patterns = filters(mode, blocks, names)
    out = {}
    for name in names:
        out[name] = next((g for g, subs in patterns.items() if any(s in name for s in subs)), REST)
    return out


def layer_naming(names: Iterable[str]) -> tuple[str, int]:
    """How layers are named (``layers`` in Llama, ``layer`` in BERT) and how many there are."""
    found = [
        (m.group(0).strip(".").split(".")[-2], int(m.group(1)))
        for n in names
        if (m := _LAYER.search(n))
    ]
    if not found:
        return "layers", 0
    return found[0][0], max(i for _, i in found) + 1
