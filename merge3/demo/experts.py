"""The demo's endpoints: LoRA fine-tunes of one base on disjoint MMLU subject groups.

Each expert is the base fine-tuned with LoRA on its group's ``finetune`` items (never on an item
the search or the final evaluation scores: :mod:`merge3.demo.groups`), then merged back into
full weights (``merge_and_unload``), so it is a plain Hugging Face folder with the base's tensor
names and shapes: exactly what a merge of endpoints needs.

The training prompt is what the evaluator scores: lm-eval's 0-shot MMLU prompt (the ``mmlu``
adapter's functions) followed by the answer letter, tokenised as
:class:`~merge3.evaluate.multiple_choice.MultipleChoiceEvaluator` tokenises it (context and
continuation split off one tokenisation of the whole), with the loss on the answer letter only:
by default a softmax over the four letter tokens (" A".." D") at the answer position, which is
exactly what the evaluator's argmax compares (``loss="token"``: over the whole vocabulary, as
plain SFT; measured worse: ``experiments/RESULTS.md``, "Demo experts"). Only that position
goes through the LM head (and only the letters' rows of it), the costliest matrix of a small
model.

What keeps it cheap on a CPU: LoRA on the top ``layers`` blocks only (autograd then stops there:
the lower blocks run forward only), items longer than ``max_length`` tokens left out of training
(the long professional-law passages), and batches of similar length (padding is compute).

Each expert is cached under ``cache_root()/experts/`` in a folder keyed by a hash of the base's
weights, the training items, the group, the recipe and the seed; it is written into a temporary
folder and renamed into place, so a second call (or a killed first one) never trains twice or
leaves half a model behind.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from merge3.cachedirs import publish_folder
from merge3.data.items import Item
from merge3.demo.groups import DEMO_GROUPS, split_groups
from merge3.errors import DataError
from merge3.models.io import load_causal_lm, load_tokenizer, safetensors_files
from merge3.tiny import cache_root

VERSION = "demo-expert-v1"


@dataclass(frozen=True)
class LoraRecipe:
    """Hyper-parameters of one expert's LoRA fine-tune (all of them enter the cache key).

    The defaults train each SmolLM2-135M expert in 1-1.5 min on 2 CPU cores (≈ 4 min for
    the three) and lift its own group's letter accuracy by 7-10 points over the base
    (``experiments/RESULTS.md``, "Demo experts")."""

    rank: int = 16
    alpha: float = 32.0
    targets: tuple[str, ...] = (
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    )
    layers: int | None = 8  # LoRA on the top ``layers`` decoder blocks (None: all)
    lr: float = 1e-3
    steps: int = 40
    batch_size: int = 8
    max_length: int = 256
    warmup: int = 5
    weight_decay: float = 0.0
    loss: str = "choices"  # softmax over the choices' tokens; "token": over the vocabulary


def build_experts(
    base_dir: str | Path,
    jsonl: str | Path,
    cache: str | Path | None = None,
    groups: Sequence[str] = DEMO_GROUPS,
    recipe: LoraRecipe | None = None,
    seed: int = 0,
    progress: bool = True,
    split_seed: int = 0,
) -> dict[str, Path]:
    """``{group: folder}`` of one expert per group, trained only where not cached."""
    recipe = recipe or LoraRecipe()
    base_dir = Path(base_dir)
    root = (Path(cache) if cache is not None else cache_root()) / "experts"
    root.mkdir(parents=True, exist_ok=True)
    parts = split_groups(jsonl, seed=split_seed, groups=tuple(groups))
    base_hash = _weights_hash(base_dir)
    out = {}
    for group in groups:
        items = parts[group]["finetune"]
        key = _key(base_hash, items, group, recipe, seed)
        target = root / f"{group}-{key[:16]}"
        if not (target / "DONE").is_file():
            model, tokenizer = train_expert(
                base_dir, items, recipe, seed, desc=f"expert {group}", progress=progress
            )
            _save_atomic(model, tokenizer, target, {"group": group, "key": key, **asdict(recipe)})
        out[group] = target
    return out


def train_expert(
    base_dir: str | Path,
    items: Sequence[Item],
    recipe: LoraRecipe,
    seed: int,
    desc: str = "expert",
    progress: bool = True,
):
    """(merged model, tokenizer): the base LoRA-tuned on ``items``' answer letters."""
    from peft import LoraConfig, get_peft_model
    from tqdm.auto import tqdm

    tokenizer = load_tokenizer(base_dir)
    model = load_causal_lm(base_dir, torch.float32)
    model.config.use_cache = False
    if recipe.loss not in ("choices", "token"):
        raise DataError(f"unknown expert loss {recipe.loss!r} (known: choices, token)")
    examples = encode(tokenizer, items, recipe.max_length)
    if not examples:
        raise DataError(f"{desc}: no training item fits in {recipe.max_length} tokens")
    n_layers = model.config.num_hidden_layers
    layers = None
    if recipe.layers is not None and recipe.layers < n_layers:
        layers = list(range(n_layers - recipe.layers, n_layers))
    torch.manual_seed(seed)
    config = LoraConfig(
        r=recipe.rank,
        lora_alpha=recipe.alpha,
        lora_dropout=0.0,
        target_modules=list(recipe.targets),
        layers_to_transform=layers,
        bias="none",
    )
    peft_model = get_peft_model(model, config)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)

    def schedule(step: int) -> float:  # linear warm-up, then linear decay to 10 %
        if step < recipe.warmup:
            return (step + 1) / recipe.warmup
        rest = max(1, recipe.steps - recipe.warmup)
        return 1.0 - 0.9 * (step - recipe.warmup) / rest

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    batches = _batches(examples, recipe.batch_size, recipe.steps, seed)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    peft_model.train()
    bar = tqdm(batches, desc=desc, unit="step", disable=not progress)
    for batch in bar:
        batch_ex = [examples[j] for j in batch]
        loss = letter_loss(peft_model.get_base_model(), batch_ex, pad, recipe.loss == "choices")
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    merged = peft_model.merge_and_unload()
    merged.config.use_cache = True
    return merged.eval(), tokenizer


@dataclass(frozen=True)
class Example:
    """One training item: its tokens (prompt + answer), how many answer tokens end it, and,
    when every choice is one token after the prompt (MMLU's " A".." D" for real tokenizers),
    those choice tokens and the index of the right one."""

    tokens: list[int]
    n_answer: int
    choice_ids: tuple[int, ...] | None
    answer: int


def encode(tokenizer, items: Sequence[Item], max_length: int) -> list[Example]:
    """Items as the evaluator tokenises them (context and continuation split off one
    tokenisation of the whole); items longer than ``max_length`` are left out."""
    out = []
    for item in items:
        context = item.prompt.rstrip()
        ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
        conts = []
        for choice in item.choices:
            continuation = item.prompt[len(context) :] + " " + choice
            whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
            conts.append(whole[len(ctx) :] if whole[: len(ctx)] == ctx else [])
        answer = int(item.answer)
        whole = ctx + conts[answer]
        if len(whole) > max_length or not conts[answer]:
            continue
        single = all(len(c) == 1 for c in conts)
        choice_ids = tuple(c[0] for c in conts) if single else None
        out.append(Example(whole, len(conts[answer]), choice_ids, answer))
    return out


def letter_loss(
    model, batch: Sequence[Example], pad: int, over_choices: bool = True
) -> torch.Tensor:
    """Mean cross-entropy of the answer given the prompt, right-padded batch.

    ``over_choices`` (and every choice one token): a softmax over the choices' tokens only,
    exactly what the evaluator's argmax compares, so no step is spent on moving probability
    onto letters in general; else over the vocabulary, on each answer token. Only the scored
    positions go through the LM head (and only the choices' rows of it)."""
    width = max(len(e.tokens) for e in batch)
    ids = torch.full((len(batch), width), pad, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    rows, pos, targets = [], [], []
    choices = over_choices and all(e.choice_ids is not None for e in batch)
    for b, e in enumerate(batch):
        ids[b, : len(e.tokens)] = torch.tensor(e.tokens)
        mask[b, : len(e.tokens)] = 1
        if choices:
            rows.append(b)
            pos.append(len(e.tokens) - 2)
            targets.append(e.answer)
            continue
        for k in range(len(e.tokens) - e.n_answer, len(e.tokens)):
            rows.append(b)
            pos.append(k - 1)
            targets.append(e.tokens[k])
    hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state[rows, pos]
    head = model.get_output_embeddings()
    if choices:
        cand = torch.tensor([e.choice_ids for e in batch])  # (batch, n_choices)
        logits = torch.einsum("bh,bch->bc", hidden, head.weight[cand])
        if head.bias is not None:
            logits = logits + head.bias[cand]
    else:
        logits = head(hidden)
    return torch.nn.functional.cross_entropy(logits.float(), torch.tensor(targets))


def _batches(examples: Sequence, size: int, steps: int, seed: int) -> list[list[int]]:
    """``steps`` batches of indices: seeded epochs; within each run of 16 batches, items are
    grouped by length (less padding) and the batches shuffled."""
    rng = np.random.default_rng(seed)
    size = min(size, len(examples))
    stream: list[int] = []
    while len(stream) < steps * size:
        stream += rng.permutation(len(examples)).tolist()
    out = []
    chunk = 16 * size
    for lo in range(0, steps * size, chunk):
        part = sorted(
            stream[lo : min(lo + chunk, steps * size)], key=lambda j: len(examples[j].tokens)
        )
        group = [part[k : k + size] for k in range(0, len(part), size)]
        out += [group[k] for k in rng.permutation(len(group))]
    return out


def _weights_hash(base_dir: Path) -> str:
    """sha256 of the base's config and weights (≈1 s for 135M parameters)."""
    h = hashlib.sha256((base_dir / "config.json").read_bytes())
    for file in safetensors_files(base_dir):
        with open(file, "rb") as fh:
            h.update(hashlib.file_digest(fh, "sha256").digest())
    return h.hexdigest()


def _key(base: str, items: Sequence[Item], group: str, recipe: LoraRecipe, seed: int) -> str:
    data = hashlib.sha256()
    for item in items:
        data.update(json.dumps([item.id, item.prompt, item.choices, item.answer]).encode())
    blob = [VERSION, base, data.hexdigest(), group, asdict(recipe), seed]
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


def _save_atomic(model, tokenizer, target: Path, meta: dict) -> None:
    """Save into a temporary folder beside ``target`` and rename it into place."""
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        out = work / "model"
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
        (out / "expert.json").write_text(json.dumps(meta, indent=1) + "\n")
        (out / "DONE").write_text(VERSION + "\n")
        if target.exists() and not (target / "DONE").is_file():
            shutil.rmtree(target)  # a stale folder without DONE: replace it
        publish_folder(out, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
