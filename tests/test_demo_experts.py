"""LoRA experts on the tiny setting: training helps, the folder is a plain endpoint of the
base, the cache skips training, and a seed fixes the weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from merge3.demo import experts
from merge3.demo.experts import (
    Example,
    LoraRecipe,
    build_experts,
    encode,
    letter_loss,
    train_expert,
)
from merge3.demo.groups import split_groups
from merge3.errors import DataError
from merge3.evaluate.multiple_choice import MultipleChoiceEvaluator
from merge3.models import Endpoints, TensorReader, load_causal_lm, load_tokenizer

# One subject per demo group (and one of "other", which gets no expert).
SUBJECTS = {
    "abstract algebra": "{a} plus {b} is",
    "philosophy": "{a} times {b} is",
    "sociology": "{a} minus {b} is",
    "marketing": "{a} and {b} is",
}
RECIPE = LoraRecipe(rank=8, alpha=16, layers=None, lr=1e-2, steps=60, batch_size=8, warmup=2)


@pytest.fixture(scope="module")
def tiny_mmlu(tmp_path_factory) -> Path:
    """An MMLU-format jsonl of small arithmetic facts, with seeded choices and answers."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("mmlu") / "mmlu.jsonl"
    rows = []
    for topic, template in SUBJECTS.items():
        for a in range(8):
            for b in range(5):
                right = str(a + b)
                wrong = rng.choice([str(x) for x in range(20) if str(x) != right], 3, False)
                choices = [right, *wrong.tolist()]
                order = rng.permutation(4)
                row = {"question": template.format(a=a, b=b), "topic": topic}
                row |= {f"answer_{x}": choices[i] for x, i in zip("abcd", order, strict=True)}
                row["correct_answer"] = "ABCD"[int(np.where(order == 0)[0][0])]
                rows.append(row)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def built(tiny_dir, tiny_mmlu, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    return cache, build_experts(tiny_dir / "base", tiny_mmlu, cache, recipe=RECIPE, progress=False)


def test_training_lowers_the_letter_loss_and_raises_accuracy(tiny_dir, tiny_mmlu, built):
    base_dir = tiny_dir / "base"
    tok = load_tokenizer(base_dir)
    items = split_groups(tiny_mmlu)["stem"]["finetune"]
    examples = encode(tok, items, RECIPE.max_length)
    # The tiny byte-level tokenizer splits " A" in two: the loss then covers both tokens.
    assert len(examples) == len(items) == 16
    assert all(e.n_answer == 2 and e.choice_ids is None for e in examples)
    evaluator = MultipleChoiceEvaluator(items, tok)
    scores = {}
    for name, path in (("base", base_dir), ("expert", built[1]["stem"])):
        model = load_causal_lm(path, torch.float32)
        with torch.no_grad():
            loss = letter_loss(model, examples, tok.pad_token_id).item()
        scores[name] = (loss, float(np.mean(evaluator(model))))
    assert scores["expert"][0] < scores["base"][0] - 0.5  # measured: 5.79 -> 4.27
    assert scores["expert"][1] >= scores["base"][1] + 0.2  # measured: 0.19 -> 0.50


def test_expert_is_a_plain_endpoint_of_the_base(tiny_dir, built):
    _, dirs = built
    assert set(dirs) == {"stem", "humanities", "social_sciences"}
    with TensorReader(tiny_dir / "base") as base:
        shapes = {k: tuple(base.get(k).shape) for k in base.keys()}
        for path in dirs.values():
            with TensorReader(path) as expert:
                assert {k: tuple(expert.get(k).shape) for k in expert.keys()} == shapes
                changed = {k for k in shapes if not torch.equal(base.get(k), expert.get(k))}
            assert changed and all("proj" in k for k in changed)  # only the LoRA targets moved
            assert load_causal_lm(path, torch.float32) is not None
            assert load_tokenizer(path) is not None
            assert json.loads((path / "expert.json").read_text())["rank"] == RECIPE.rank
    assert len(set(dirs.values())) == 3
    endpoints = Endpoints.load(tiny_dir / "base", dirs)  # what a search loads
    assert endpoints.n_models == 3
    for i in range(3):  # every expert moved away from the base
        assert any(bool(tv[i].any()) for tv in endpoints.task_vectors.values())


def test_second_call_reuses_the_cache(tiny_dir, tiny_mmlu, built, monkeypatch):
    cache, dirs = built
    monkeypatch.setattr(experts, "train_expert", lambda *a, **k: pytest.fail("trained again"))
    assert build_experts(tiny_dir / "base", tiny_mmlu, cache, recipe=RECIPE) == dirs
    assert not [p for p in (cache / "experts").iterdir() if p.name.startswith(".")]


def test_same_seed_same_weights(tiny_dir, tiny_mmlu):
    items = split_groups(tiny_mmlu)["humanities"]["finetune"]
    recipe = LoraRecipe(rank=4, layers=1, lr=1e-2, steps=4, batch_size=4, warmup=1)
    runs = [train_expert(tiny_dir / "base", items, recipe, s, progress=False)[0] for s in (3, 3, 4)]
    a, b, c = (r.state_dict() for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_the_cache_key_follows_the_recipe_and_the_data(tiny_dir, tiny_mmlu):
    items = split_groups(tiny_mmlu)["stem"]["finetune"]
    base = experts._weights_hash(tiny_dir / "base")
    key = experts._key(base, items, "stem", RECIPE, 0)
    assert key == experts._key(base, list(items), "stem", RECIPE, 0)
    assert key != experts._key(base, items[1:], "stem", RECIPE, 0)
    assert key != experts._key(base, items, "stem", LoraRecipe(), 0)
    assert key != experts._key(base, items, "stem", RECIPE, 1)
    assert key != experts._key(base[::-1], items, "stem", RECIPE, 0)


def test_choice_loss_is_a_softmax_over_the_choice_tokens(tiny_dir):
    """With one-token choices (SmolLM2's " A".." D") the loss compares only those tokens."""
    model = load_causal_lm(tiny_dir / "base", torch.float32)
    batch = [
        Example([5, 9, 12, 40], 1, (40, 41, 42, 43), 0),
        Example([7, 8, 42], 1, (40, 41, 42, 43), 2),
    ]
    with torch.no_grad():
        got = letter_loss(model, batch, pad=0)
        full = letter_loss(model, batch, pad=0, over_choices=False)
        logits = [model(torch.tensor([e.tokens[:-1]])).logits[0, -1] for e in batch]
    pairs = list(zip(logits, batch, strict=True))
    want = sum(-torch.log_softmax(lg[list(e.choice_ids)], -1)[e.answer] for lg, e in pairs) / 2
    assert got.item() == pytest.approx(want.item(), abs=1e-5)
    vocab = sum(-torch.log_softmax(lg, -1)[e.tokens[-1]] for lg, e in pairs) / 2
    assert full.item() == pytest.approx(vocab.item(), abs=1e-5)


def test_bad_recipes_are_clear_errors(tiny_dir, tiny_mmlu):
    items = split_groups(tiny_mmlu)["stem"]["finetune"]
    with pytest.raises(DataError, match="no training item fits"):
        train_expert(tiny_dir / "base", items, LoraRecipe(max_length=5), 0, progress=False)
    with pytest.raises(DataError, match="unknown expert loss"):
        train_expert(tiny_dir / "base", items, LoraRecipe(loss="nll"), 0, progress=False)
