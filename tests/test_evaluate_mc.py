"""Multiple-choice log-likelihood: batching changes nothing, and the tiny endpoints specialise."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from merge3.data import Item, load_jsonl_items
from merge3.errors import DataError
from merge3.evaluate import MultipleChoiceEvaluator
from merge3.models import load_causal_lm, load_tokenizer


@pytest.fixture(scope="module")
def base(tiny_dir):
    return load_causal_lm(tiny_dir / "base", torch.float32), load_tokenizer(tiny_dir / "base")


def _direct_loglik(model, tok, context: str, continuation: str) -> float:
    """Unbatched reference: one sequence, no padding, log P(continuation | context)."""
    ctx = tok(context, add_special_tokens=False)["input_ids"]
    whole = tok(context + continuation, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([whole])).logits[0].double(), -1)
    return float(sum(logp[p - 1, whole[p]] for p in range(len(ctx), len(whole))))


def test_batched_loglikelihoods_equal_unbatched(base, tiny_dir):
    model, tok = base
    items = load_jsonl_items(tiny_dir / "data" / "add.search.jsonl", "add")[:10]
    items.append(
        Item("long", "add", "after a comes b and then after b comes", ("c", "z z z z", "d"))
    )
    batched = MultipleChoiceEvaluator(items, tok, batch_size=7).loglikelihoods(model)
    for item, lls in zip(items, batched, strict=True):
        for choice, value in zip(item.choices, lls, strict=True):
            assert value == pytest.approx(
                _direct_loglik(model, tok, item.question, " " + choice), abs=1e-4
            )


def test_correctness_is_argmax_and_acc_norm_divides_by_bytes(base):
    model, tok = base
    item = Item("x", "t", "0 plus 2 is", ("2", "15", "7"), answer=0)
    ev = MultipleChoiceEvaluator([item], tok)
    ll = ev.loglikelihoods(model)[0]
    assert ev(model)[0] == float(np.argmax(ll) == 0)
    normed = MultipleChoiceEvaluator([item], tok, normalize=True)
    expected = np.argmax(ll / np.array([2.0, 3.0, 2.0]))  # bytes of " 2", " 15", " 7"
    assert normed(model)[0] == float(expected == 0)


def test_each_tiny_endpoint_is_best_on_its_own_task(tiny_dir):
    tok = load_tokenizer(tiny_dir / "base")
    tasks = ("add", "next", "color")
    evaluators = {
        t: MultipleChoiceEvaluator(load_jsonl_items(tiny_dir / "data" / f"{t}.test.jsonl", t), tok)
        for t in tasks
    }
    acc = {}
    for name in ("base", *(f"ft-{t}" for t in tasks)):
        model = load_causal_lm(tiny_dir / name, torch.float32)
        acc[name] = {t: ev(model).mean() for t, ev in evaluators.items()}
    for t in tasks:
        assert acc[f"ft-{t}"][t] >= 0.8, acc
        assert acc[f"ft-{t}"][t] > acc["base"][t] + 0.4, acc


def test_item_file_errors_name_file_and_line(tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text('{"question": "q", "choices": ["a", "b"], "answer": 1}\n{"question": "q"}\n')
    with pytest.raises(DataError, match=r"items.jsonl:2: missing field 'choices'"):
        load_jsonl_items(path, "t")
    path.write_text('{"question": "q", "choices": ["a", "b"], "answer": "C"}\n')
    with pytest.raises(DataError, match=r"items.jsonl:1: answer 'C' is outside the 2 choices"):
        load_jsonl_items(path, "t")
    path.write_text('{"id": 1, "question": "q", "choices": ["a", "b"], "answer": "b"}\n' * 2)
    with pytest.raises(DataError, match=r"items.jsonl:2: duplicate item id '1'"):
        load_jsonl_items(path, "t")
    path.write_text('{"q": "x", "opts": ["a", "b"], "gold": "B"}\n')
    (item,) = load_jsonl_items(path, "t", {"question": "q", "choices": "opts", "answer": "gold"})
    assert (item.question, item.choices, item.answer, item.id) == ("x", ("a", "b"), 1, "0")
