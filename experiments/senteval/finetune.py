"""The SentEval endpoints: all-MiniLM-L6-v2 fully fine-tuned on one task each, with its own head.

Each endpoint is the whole encoder trained on the task's ``train`` split (the loader's fixed
split, :mod:`merge3.data.senteval`) together with a linear head on the mean-pooled last hidden
state. The encoder is what gets merged; each task keeps its own head. Training is a capped
number of AdamW steps (a fraction of an epoch) so that six endpoints fit in minutes on two CPU
cores; MiniLM's sentence embeddings are already good, so a short full fine-tune moves each
task well above a frozen-encoder head while keeping the task vectors small and mergeable.

An endpoint is cached under ``cache_root()/senteval/endpoints/TASK-KEY`` where KEY hashes the
base weights, the task's training items, the recipe and the seed: changing any of them trains
a new endpoint, asking again for the same one reads it back. The folder is a Hugging Face
``BertModel`` folder (+ tokenizer) with ``head.safetensors`` and ``meta.json`` beside it,
published atomically.

    OMP_NUM_THREADS=2 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \\
        python experiments/senteval/finetune.py          # builds (or finds) all six
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from merge3.cachedirs import publish_folder
from merge3.data.items import Item
from merge3.evaluate.classify import load_heads, save_heads
from merge3.tiny import cache_root

VERSION = "senteval-endpoint-v1"


@dataclass(frozen=True)
class Recipe:
    """How an endpoint is trained (every field enters the cache key)."""

    steps: int = 120
    batch_size: int = 32
    lr: float = 5e-5
    head_lr: float = 2e-3
    warmup: float = 0.1
    weight_decay: float = 0.0  # 0: rows of unseen tokens keep τ = 0 (sparser task vectors)
    max_length: int = 64


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the real tokens' states: MiniLM's own pooling (and ClassificationEvaluator's)."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1)


def finetune(
    encoder: torch.nn.Module,
    tokenizer,
    items: Sequence[Item],
    n_classes: int,
    recipe: Recipe,
    seed: int,
) -> tuple[torch.nn.Linear, list[float]]:
    """Train ``encoder`` (in place) and a new linear head on ``items``; returns the head and
    the loss of every step. Batches are drawn from seeded permutations (epochs)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    head = torch.nn.Linear(encoder.config.hidden_size, n_classes)
    opt = torch.optim.AdamW(
        [
            {"params": list(encoder.parameters()), "lr": recipe.lr},
            {"params": list(head.parameters()), "lr": recipe.head_lr},
        ],
        weight_decay=recipe.weight_decay,
    )
    warm = max(1, int(recipe.warmup * recipe.steps))

    def schedule(step: int) -> float:  # linear warm-up, then linear decay to zero
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (recipe.steps - step) / max(1, recipe.steps - warm))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    texts = [i.question for i in items]
    labels = torch.tensor([int(i.answer) for i in items])
    order: list[int] = []
    losses = []
    encoder.train()
    for _ in range(recipe.steps):
        if len(order) < recipe.batch_size:
            order += rng.permutation(len(items)).tolist()
        batch, order = order[: recipe.batch_size], order[recipe.batch_size :]
        enc = tokenizer(
            [texts[k] for k in batch],
            truncation=True,
            max_length=recipe.max_length,
            padding=True,
            return_tensors="pt",
        )
        hidden = encoder(**enc).last_hidden_state
        loss = torch.nn.functional.cross_entropy(
            head(mean_pool(hidden, enc["attention_mask"])), labels[batch]
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(encoder.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    encoder.eval()
    return head.eval(), losses


def _file_digest(folder: Path) -> str:
    h = hashlib.sha256()
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    for f in files:
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()


def cache_key(base_digest: str, task: str, items: Sequence[Item], recipe: Recipe, seed: int) -> str:
    """Hash of everything an endpoint depends on (base weights, task data, recipe, seed)."""
    data = hashlib.sha256("\n".join(f"{i.id}\t{i.answer}" for i in items).encode()).hexdigest()
    blob = json.dumps(
        {
            "version": VERSION,
            "base": base_digest,
            "task": task,
            "data": data,
            "recipe": asdict(recipe),
            "seed": seed,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def endpoint_dir(
    base_dir: Path,
    task: str,
    items: Sequence[Item],
    n_classes: int,
    recipe: Recipe = Recipe(),
    seed: int = 0,
    cache: Path | None = None,
    base_digest: str | None = None,
) -> Path:
    """The cached endpoint of ``task`` (trained now if absent): an HF folder + ``head``."""
    from transformers import AutoModel, AutoTokenizer

    cache = Path(cache) if cache is not None else cache_root() / "senteval" / "endpoints"
    base_digest = base_digest or _file_digest(Path(base_dir))
    target = cache / f"{task}-{cache_key(base_digest, task, items, recipe, seed)}"
    if (target / "DONE").is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    encoder = AutoModel.from_pretrained(base_dir, dtype=torch.float32)
    t0 = time.perf_counter()
    head, losses = finetune(encoder, tokenizer, items, n_classes, recipe, seed)
    train_s = time.perf_counter() - t0
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=cache))
    try:
        out = work / "model"
        encoder.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
        save_heads({task: head}, out / "head.safetensors")
        k = max(1, len(losses) // 10)
        meta = {
            "task": task,
            "recipe": asdict(recipe),
            "seed": seed,
            "train_items": len(items),
            "train_s": train_s,
            "loss_first": float(np.mean(losses[:k])),
            "loss_last": float(np.mean(losses[-k:])),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        }
        (out / "meta.json").write_text(json.dumps(meta, indent=2))
        (out / "DONE").write_text(VERSION + "\n")
        publish_folder(out, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def load_head(folder: Path, task: str) -> torch.nn.Linear:
    return load_heads(Path(folder) / "head.safetensors")[task]


def build_all(recipe: Recipe = Recipe(), seed: int = 0, verbose: bool = True) -> dict[str, Path]:
    """All six endpoints (each trained on its task's ``train`` split), cached."""
    from merge3.assets import data_dir, minilm_dir
    from merge3.data.senteval import LABELS, senteval

    base = minilm_dir()
    digest = _file_digest(base)
    dirs = {}
    for task in LABELS:
        bench = senteval(data_dir(), task)
        train = next(iter(bench.tasks.values())).items("train")
        t0 = time.perf_counter()
        dirs[task] = endpoint_dir(
            base, task, train, len(LABELS[task]), recipe, seed, base_digest=digest
        )
        if verbose:
            meta = json.loads((dirs[task] / "meta.json").read_text())
            print(
                f"{task}: {dirs[task].name} train {meta['train_s']:.0f}s "
                f"loss {meta['loss_first']:.3f} → {meta['loss_last']:.3f} "
                f"(this call {time.perf_counter() - t0:.1f}s)",
                flush=True,
            )
    return dirs


if __name__ == "__main__":
    build_all()
