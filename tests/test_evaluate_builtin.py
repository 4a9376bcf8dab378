"""Built-in evaluators on the tiny model: every speed-up returns what the plain path returns,
and bad items are reported and excluded instead of stopping the evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from merge3.data import Generation, Item, load_jsonl_items
from merge3.evaluate import GenerativeEvaluator, MultipleChoiceEvaluator
from merge3.evaluate.answers import INVALID, extract, is_correct, normalize
from merge3.models import load_causal_lm, load_tokenizer

SHOTS = "after a comes b. after b comes c. after c comes d. 3 plus 4 is 7. "


@pytest.fixture(scope="module")
def base(tiny_dir):
    return load_causal_lm(tiny_dir / "base", torch.float32), load_tokenizer(tiny_dir / "base")


def _fewshot_items(tiny_dir) -> list[Item]:
    plain = load_jsonl_items(tiny_dir / "data" / "next.search.jsonl", "next")[:12]
    return [
        Item(i.id, i.task, i.question, i.choices, i.answer, context=SHOTS * (1 + k % 2))
        for k, i in enumerate(plain)
    ]


def test_prefix_reuse_gives_the_same_loglikelihoods(base, tiny_dir):
    model, tok = base
    items = _fewshot_items(tiny_dir)
    reused = MultipleChoiceEvaluator(items, tok, batch_size=5, reuse_prefix=True)
    plain = MultipleChoiceEvaluator(items, tok, batch_size=5, reuse_prefix=False)
    # one per distinct context, and the root both extend (the context SHOTS starts SHOTS * 2)
    assert len(reused._prefixes) == 3 and reused._parents == [2, 2, -1]
    assert all(len(p) >= 10 for p in reused._prefixes)
    assert all(p[: len(reused._prefixes[2])] == reused._prefixes[2] for p in reused._prefixes)
    for a, b in zip(reused.loglikelihoods(model), plain.loglikelihoods(model), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)
    np.testing.assert_array_equal(reused(model), plain(model))


def test_prefix_common_to_all_items_runs_once_per_call_and_changes_nothing(base):
    """0-shot MMLU's shape: one header for all, then per-subject text; here two items share a
    context (a group), the others differ after the header, one has no context at all."""
    model, tok = base
    head = "after a comes b. after b comes c. "
    tails = ["after c comes d. ", "after c comes d. ", "3 plus 4 is 7. ", "1 plus 1 is 2. "]
    items = [
        Item(f"q{k}", "t", f"{k} plus 1 is", ("1", "2", "3", "7"), k % 4, context=head + tail)
        for k, tail in enumerate(tails)
    ]
    items.append(Item("bare", "t", head + "2 plus 1 is", ("1", "2", "3", "7"), 2))
    reused = MultipleChoiceEvaluator(items, tok, batch_size=2, min_prefix=4)
    plain = MultipleChoiceEvaluator(items, tok, batch_size=2, reuse_prefix=False)
    (group, root) = reused._prefixes
    assert reused._parents == [1, -1] and group[: len(root)] == root
    assert len(root) >= len(tok(head.strip(), add_special_tokens=False)["input_ids"])
    shapes: list[tuple[int, ...]] = []
    hook = model.get_input_embeddings().register_forward_hook(
        lambda module, args, output: shapes.append(tuple(args[0].shape))
    )
    try:
        ours = reused.loglikelihoods(model)
    finally:
        hook.remove()
    # the root once, the group's own part on top of it, then only the rows' own tokens
    rows = sum(b["input_ids"].numel() for b in reused._batches)
    assert sum(b * n for b, n in shapes) == len(group) + rows
    assert shapes[0] == (1, len(root)) and (1, len(group) - len(root)) in shapes
    assert rows + len(group) < sum(b["input_ids"].numel() for b in plain._batches)
    for a, b in zip(ours, plain.loglikelihoods(model), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)
    np.testing.assert_array_equal(reused(model), plain(model))
    unshared = MultipleChoiceEvaluator(items, tok, batch_size=2, min_prefix=4, min_root=100)
    assert unshared._prefixes == [group] and unshared._parents == [-1]


def test_letter_items_take_one_forward_and_match_per_choice_scoring(base):
    model, tok = base
    digits = ("1", "2", "3", "7")  # one token each after a space in the tiny vocabulary
    assert all(len(tok(" " + c, add_special_tokens=False)["input_ids"]) == 1 for c in digits)
    letters = [Item(f"q{k}", "t", f"{k} plus 1 is", digits, k % 4) for k in range(6)]
    ev = MultipleChoiceEvaluator(letters, tok, batch_size=4)
    assert ev.n_forward_rows == len(letters)  # one row per item, not one per choice
    for item, ll in zip(letters, ev.loglikelihoods(model), strict=True):
        for c, choice in enumerate(item.choices):
            one = MultipleChoiceEvaluator(
                [Item("x", "t", item.question, (choice, "zz zz"), 0)], tok
            ).loglikelihoods(model)[0][0]
            assert ll[c] == pytest.approx(one, abs=1e-4)


def test_bad_items_are_excluded_and_reported_not_fatal(base):
    model, tok = base
    items = [
        Item("ok", "t", "2 plus 2 is", ("4", "5"), 0),
        Item("no-choices", "t", "2 plus 2 is", ("4",), 0),
        Item("bad-answer", "t", "2 plus 2 is", ("4", "5"), 7),
        Item("text-answer", "t", "2 plus 2 is", ("4", "5"), "4"),
        Item("too-long", "t", "after a comes b " * 40, ("c", "d"), 0),
    ]
    ev = MultipleChoiceEvaluator(items, tok, max_length=64)
    out = ev(model)
    assert not np.isnan(out[0]) and np.isnan(out[1:]).all()
    reasons = {e.id: e.reason for e in ev.excluded}
    assert set(reasons) == {"no-choices", "bad-answer", "text-answer", "too-long"}
    assert "not among the 2 choices" in reasons["bad-answer"]
    assert "longer than the model's 64 tokens" in reasons["too-long"]


def test_batched_generation_equals_one_by_one(base):
    model, tok = base
    items = [
        Item(f"g{k}", "add", f"{a} plus {b} is", (), str(a + b))
        for k, (a, b) in enumerate([(1, 2), (3, 4), (9, 9), (0, 5), (2, 2)])
    ]
    gen = Generation(until=(".",), max_new_tokens=6, extract="last_number")
    batched = GenerativeEvaluator(items, tok, gen, batch_size=5)
    correct = batched(model)
    texts = batched.last_texts
    for k, item in enumerate(items):
        alone = GenerativeEvaluator([item], tok, gen, batch_size=1)
        assert alone(model)[0] == correct[k]
        assert alone.last_texts[0] == texts[k]
    assert any(texts) and all(t is not None for t in texts)
    assert all("." not in t for t in texts)


def test_generation_excludes_items_without_answer_or_room(base):
    model, tok = base
    items = [Item("ok", "t", "1 plus 1 is", (), "2"), Item("none", "t", "1 plus 1 is", (), "")]
    ev = GenerativeEvaluator(items, tok, Generation(max_new_tokens=4), max_length=64)
    long = GenerativeEvaluator(
        [Item("long", "t", "a b " * 40, (), "1")], tok, Generation(max_new_tokens=4), max_length=64
    )
    out = ev(model)
    assert not np.isnan(out[0]) and np.isnan(out[1])
    assert [e.id for e in ev.excluded] == ["none"] and long.excluded[0].id == "long"


@pytest.mark.parametrize(
    ("text", "mode", "answer"),
    [
        ("so 3 + 4 = 7.\n#### 7\n\nQuestion:", "gsm8k", "7"),
        ("#### 1,234 dollars", "gsm8k", "1,234"),
        ("she has 12 apples", "gsm8k", INVALID),
        ("3 then 4 and finally $1,000.", "last_number", "$1,000."),
        ("no digits here", "last_number", INVALID),
        ("-5 is the answer", "last_number", "-5"),
    ],
)
def test_answer_extraction_follows_lm_eval_filters(text, mode, answer):
    assert extract(text, mode) == answer


def test_exact_match_normalisation():
    assert normalize("$1,000.") == "1000"
    assert is_correct("x #### 1,000", "1000", "gsm8k")
    assert is_correct("it costs $18.", "18", "last_number")
    assert not is_correct("#### 17", "18", "gsm8k")
