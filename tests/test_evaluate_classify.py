"""Classification heads on a shared encoder: padding changes nothing, heads learn, round-trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from merge3.data import Item, load_benchmark, sample_items
from merge3.evaluate import ClassificationEvaluator, fit_head
from merge3.evaluate.classify import load_heads, save_heads
from merge3.models import load_tokenizer


@pytest.fixture(scope="module")
def encoder_and_tok(tiny_dir):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=320,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    return BertModel(config).eval(), load_tokenizer(tiny_dir / "base")


def _items(task: str, n: int) -> list[Item]:
    words = (("red", "pink", "brown"), ("blue", "green", "black"))
    rng = np.random.default_rng(1)
    out = []
    for k in range(n):
        label = k % 2
        text = " ".join(rng.choice(words[label], size=int(rng.integers(2, 9))))
        out.append(Item(f"{task}-{k}", task, text, ("warm", "cold"), label))
    return out


def test_features_do_not_depend_on_batching(encoder_and_tok):
    encoder, tok = encoder_and_tok
    items = _items("colors", 9)
    batched = ClassificationEvaluator({"colors": items}, tok, batch_size=4).features(encoder)
    for k, item in enumerate(items):
        alone = ClassificationEvaluator({"colors": [item]}, tok).features(encoder)["colors"][0]
        torch.testing.assert_close(batched["colors"][k], alone, atol=1e-5, rtol=1e-4)


def test_one_head_per_task_on_a_shared_encoder(encoder_and_tok, tmp_path):
    encoder, tok = encoder_and_tok
    tasks = {"a": _items("a", 40), "b": _items("b", 30)}
    flipped = [Item(i.id, "b", i.question, i.choices, 1 - i.answer) for i in tasks["b"]]
    tasks["b"] = flipped + [Item("b-bad", "b", "red", ("warm", "cold"), 5)]
    ev = ClassificationEvaluator(tasks, tok, batch_size=16)
    feats = ev.features(encoder)
    heads = {
        "a": fit_head(feats["a"], [i.answer for i in tasks["a"]], 2),
        "b": fit_head(feats["b"][:-1], [i.answer for i in tasks["b"][:-1]], 2),
    }
    out = ev.__class__(tasks, tok, heads, batch_size=7)(encoder)
    assert out["a"].mean() == 1.0 and np.nanmean(out["b"]) == 1.0  # separable by colour words
    assert np.isnan(out["b"][-1]) and [e.id for e in ev.excluded] == ["b-bad"]
    save_heads(heads, tmp_path / "heads.safetensors")
    again = load_heads(tmp_path / "heads.safetensors")
    back = ClassificationEvaluator(tasks, tok, again)(encoder)
    for t in tasks:
        np.testing.assert_array_equal(back[t], out[t])


def test_senteval_items_run_through_the_encoder(encoder_and_tok):
    encoder, tok = encoder_and_tok
    task = load_benchmark("senteval-trec").tasks["senteval-trec"]
    items = sample_items(task.items("search"), 24, seed=0)
    ev = ClassificationEvaluator({task.name: items}, tok, max_length=64, pooling="cls")
    feats = ev.features(encoder)[task.name]
    head = fit_head(feats, [i.answer for i in items], len(items[0].choices))
    correct = ClassificationEvaluator(
        {task.name: items}, tok, {task.name: head}, max_length=64, pooling="cls"
    )(encoder)[task.name]
    assert correct.shape == (24,) and set(np.unique(correct)) <= {0.0, 1.0}
