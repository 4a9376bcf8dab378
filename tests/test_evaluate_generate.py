"""Generation with the few-shot prefix's key/value cache reused: the same greedy tokens as
without reuse, and the shared prefix really runs once per call while each row runs only its own
tokens (counted at the embeddings)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from merge3.assets import data_dir, smollm2_dir
from merge3.data import Generation, Item
from merge3.data.adapters import gsm8k
from merge3.evaluate import GenerativeEvaluator
from merge3.evaluate.factory import builtin_evaluator
from merge3.models import load_causal_lm, load_tokenizer

SHOTS = "after a comes b. after b comes c. after c comes d. 3 plus 4 is 7. "


def _run_counted(ev: GenerativeEvaluator, model) -> tuple[np.ndarray, list, int]:
    """Correctness, texts, and the tokens of every forward longer than one token per row (the
    prefix and prompt runs; decoding steps run one token per row), seen at the embeddings."""
    shapes: list[tuple[int, ...]] = []
    hook = model.get_input_embeddings().register_forward_hook(
        lambda module, args, output: shapes.append(tuple(args[0].shape))
    )
    try:
        correct = ev(model)
    finally:
        hook.remove()
    return correct, list(ev.last_texts), sum(b * n for b, n in shapes if n > 1)


def _expected_prompt_tokens(ev: GenerativeEvaluator) -> int:
    """Each shared prefix once, then every batch's rows without it (padding included)."""
    prefixes = sum(len(p) for p in ev._prefixes)
    rows = sum(ids.shape[0] * (ids.shape[1] - len(ev._prefix(g))) for _, ids, _, g in ev._batches)
    return prefixes + rows


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    return load_causal_lm(tiny_dir / "base", torch.float32), load_tokenizer(tiny_dir / "base")


def _tiny_items() -> list[Item]:
    pairs = [(1, 2), (3, 4), (9, 9), (0, 5), (2, 2), (4, 1), (6, 0)]
    items = [
        Item(f"g{k}", "add", f"{a} plus {b} is", (), str(a + b), context=SHOTS * (1 + k % 2))
        for k, (a, b) in enumerate(pairs)
    ]
    items.append(Item("plain", "add", "5 plus 3 is", (), "8"))  # no context: not shared
    items.append(Item("alone", "add", "7 plus 1 is", (), "8", context=SHOTS[:20]))  # unshared
    return items


def test_reuse_shares_one_prefix_per_context_and_changes_no_token(tiny):
    model, tok = tiny
    items = _tiny_items()
    gen = Generation(until=(".",), max_new_tokens=6, extract="last_number")
    reused = GenerativeEvaluator(items, tok, gen, batch_size=3, reuse_prefix=True)
    plain = GenerativeEvaluator(items, tok, gen, batch_size=3, reuse_prefix=False)
    assert plain._prefixes == []
    assert len(reused._prefixes) == 2  # SHOTS and SHOTS * 2; "plain" and "alone" run whole
    full = [tok(i.prompt, add_special_tokens=False)["input_ids"] for i in items]
    for prefix, k in zip(reused._prefixes, (0, 1), strict=True):
        group = [full[j] for j in range(7) if j % 2 == k]
        assert all(ids[: len(prefix)] == prefix and len(ids) > len(prefix) for ids in group)
        assert len({ids[len(prefix)] for ids in group}) > 1  # the longest common prefix
    ours, our_texts, our_tokens = _run_counted(reused, model)
    theirs, their_texts, their_tokens = _run_counted(plain, model)
    assert our_texts == their_texts and all(t is not None for t in our_texts)
    np.testing.assert_array_equal(ours, theirs)
    # each group's prefix ran once, then only the rows' own tokens: not once per item
    assert our_tokens == _expected_prompt_tokens(reused)
    assert their_tokens == _expected_prompt_tokens(plain) >= sum(len(ids) for ids in full)
    assert their_tokens - our_tokens > 2 * len(reused._prefixes[1])
    # a second call recomputes the cache (the model may have changed) and returns the same
    again, again_texts, again_tokens = _run_counted(reused, model)
    assert again_texts == our_texts and again_tokens == our_tokens


def test_auto_reuse_needs_a_long_enough_prefix(tiny):
    _, tok = tiny
    items = _tiny_items()
    gen = Generation(until=(".",), max_new_tokens=4)
    n_shots = len(tok(SHOTS, add_special_tokens=False)["input_ids"])
    auto = GenerativeEvaluator(items, tok, gen, min_prefix=n_shots + 2)
    assert [len(p) for p in auto._prefixes] == [len(auto._prefixes[0])]  # only SHOTS * 2
    assert len(auto._prefixes[0]) > n_shots + 2
    assert GenerativeEvaluator(items, tok, gen, min_prefix=10_000)._prefixes == []
    task = gsm8k(data_dir(), num_fewshot=1).tasks["gsm8k"]
    on = builtin_evaluator(task, task.items("all")[:3], tok)  # the factory's default: auto
    off = builtin_evaluator(task, task.items("all")[:3], tok, reuse_prefix=False)
    assert len(on._prefixes) == 1 and off._prefixes == []


def test_gsm8k_few_shot_greedy_tokens_equal_without_reuse():
    """SmolLM2 on 4 GSM8K items, 3-shot (a ~400-token shared prefix), 24 new tokens, batches
    of 3 and 1: every generated text equal with and without the reused prefix."""
    folder = smollm2_dir()
    model, tok = load_causal_lm(folder, torch.float32), load_tokenizer(folder)
    task = gsm8k(data_dir(), num_fewshot=3).tasks["gsm8k"]
    items = task.items("all")[:4]
    gen = replace(task.generation, max_new_tokens=24)
    reused = GenerativeEvaluator(items, tok, gen, batch_size=3)  # auto
    plain = GenerativeEvaluator(items, tok, gen, batch_size=3, reuse_prefix=False)
    assert len(reused._prefixes) == 1 and len(reused._prefixes[0]) > 300
    ours, our_texts, our_tokens = _run_counted(reused, model)
    theirs, their_texts, their_tokens = _run_counted(plain, model)
    assert our_texts == their_texts
    assert sum(len(t) > 20 for t in our_texts) >= 3  # real generations, not empty strings
    np.testing.assert_array_equal(ours, theirs)
    assert their_tokens - our_tokens == 3 * len(reused._prefixes[0])
