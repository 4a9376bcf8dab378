"""The bundled tiny setting: a real (if small) MERGE³ problem that builds in seconds on a CPU.

Three synthetic fact-recall tasks (``add``: "3 plus 4 is" → 7, ``next``: "after c comes" → d,
``color``: "the color of kima is" → red). A tiny Llama with a byte-level BPE tokenizer trained
offline is randomly initialised as the base; each endpoint is a short real fine-tune of it on one
task's facts. The multiple-choice items that a search evaluates are questions about those facts
with seeded distractors, split into ``search`` and ``test`` halves.

Everything is written into a cache folder outside the repository, atomically (a temporary folder
renamed into place), so a killed build never leaves a half-built cache behind.
"""

from __future__ import annotations

import json
import os
import shutil
import string
import tempfile
from pathlib import Path

import numpy as np
import torch

from merge3.cachedirs import publish_folder

VERSION = "tiny-v1"
TASKS = ("add", "next", "color")
_COLORS = ("red", "blue", "green", "yellow", "black", "white", "pink", "brown")
_SYLLABLES = ("ka", "mo", "li", "ru", "te", "zo", "pa", "ni")


def cache_root() -> Path:
    """``$MERGE3_CACHE``, else ``~/.cache/merge3``: outside any checkout."""
    return Path(os.environ.get("MERGE3_CACHE", Path.home() / ".cache" / "merge3")).expanduser()


def tiny_dir() -> Path:
    return cache_root() / VERSION


def _facts(task: str) -> list[tuple[str, str, list[str]]]:
    """(prompt, answer, answer pool) triples of one task, in a fixed order."""
    if task == "add":
        pool = [str(i) for i in range(19)]
        return [(f"{a} plus {b} is", str(a + b), pool) for a in range(10) for b in range(10)]
    if task == "next":
        letters = string.ascii_lowercase
        return [
            (f"after {c} comes", letters[i + 1], list(letters)) for i, c in enumerate(letters[:-1])
        ]
    if task == "color":
        rng = np.random.default_rng(7)
        names = [a + b for a in _SYLLABLES for b in _SYLLABLES if a != b][:48]
        return [(f"the color of {n} is", str(rng.choice(_COLORS)), list(_COLORS)) for n in names]
    raise ValueError(task)


def _items(task: str, seed: int) -> list[dict]:
    """Two multiple-choice items per fact, each with 3 seeded distractors."""
    rng = np.random.default_rng(seed)
    items = []
    for f, (prompt, answer, pool) in enumerate(_facts(task)):
        for rep in range(2):
            wrong = rng.choice([c for c in pool if c != answer], size=3, replace=False).tolist()
            choices = [answer, *wrong]
            order = rng.permutation(4)
            choices = [choices[i] for i in order]
            items.append(
                {
                    "id": f"{task}-{f:03d}-{rep}",
                    "question": prompt,
                    "choices": choices,
                    "answer": int(np.where(order == 0)[0][0]),
                }
            )
    return items


def _write_items(data_dir: Path, seed: int) -> None:
    for task in TASKS:
        items = _items(task, seed)
        rng = np.random.default_rng(seed + 1)
        perm = rng.permutation(len(items))
        half = len(items) // 2
        for split, idx in (("search", perm[:half]), ("test", perm[half:])):
            with open(data_dir / f"{task}.{split}.jsonl", "w") as fh:
                for i in sorted(idx):
                    fh.write(json.dumps(items[i]) + "\n")


def _train_tokenizer(out: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [f"{p} {a}" for t in TASKS for p, a, pool in _facts(t)]
    corpus += [" ".join(pool) for t in TASKS for _, _, pool in _facts(t)[:1]]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        show_progress=False,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    fast.save_pretrained(out)
    return fast


def _base_model(vocab_size: int, seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=96,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=False,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    return LlamaForCausalLM(config)


def _fine_tune(model, tokenizer, task: str, seed: int, steps: int = 150) -> None:
    """Full fine-tune on the task's fact sentences (causal LM loss on the answer token)."""
    torch.manual_seed(seed)
    texts = [(p, f" {a}") for p, a, _ in _facts(task)]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    model.train()
    for _ in range(steps):
        batch = [texts[i] for i in rng.choice(len(texts), size=min(32, len(texts)), replace=False)]
        ids, labels = [], []
        for prompt, answer in batch:
            p = tokenizer(prompt)["input_ids"]
            a = tokenizer(prompt + answer)["input_ids"][len(p) :]
            ids.append(p + a)
            labels.append([-100] * len(p) + a)
        width = max(map(len, ids))
        pad = tokenizer.pad_token_id
        input_ids = torch.tensor([x + [pad] * (width - len(x)) for x in ids])
        mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])
        label_t = torch.tensor([y + [-100] * (width - len(y)) for y in labels])
        loss = model(input_ids=input_ids, attention_mask=mask, labels=label_t).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def build_tiny(root: Path | None = None, seed: int = 0, force: bool = False) -> Path:
    """Build (or find) the tiny setting; returns its folder. Idempotent and atomic."""
    target = Path(root) if root is not None else tiny_dir()
    if target.is_dir() and (target / "DONE").is_file() and not force:
        return target
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        (work / "data").mkdir()
        _write_items(work / "data", seed)
        tokenizer = _train_tokenizer(work / "base")
        base = _base_model(len(tokenizer), seed)
        base.save_pretrained(work / "base")
        base_state = {k: v.clone() for k, v in base.state_dict().items()}
        for i, task in enumerate(TASKS):
            base.load_state_dict(base_state)
            _fine_tune(base, tokenizer, task, seed + 100 + i)
            base.save_pretrained(work / f"ft-{task}")
            tokenizer.save_pretrained(work / f"ft-{task}")
        (work / "DONE").write_text(VERSION + "\n")
        if force and target.exists():
            shutil.rmtree(target)
        publish_folder(work, target)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return target
