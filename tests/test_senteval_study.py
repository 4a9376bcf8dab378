"""The SentEval study's own code: fine-tuning, its cache, the merge bench, MAE/cost helpers.

A tiny random BERT with a word-level vocabulary stands in for MiniLM, so nothing here needs
the real model or the network.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments" / "senteval"))

import estimator_study  # noqa: E402
import finetune  # noqa: E402
import population  # noqa: E402
from study import Bench, response_matrix  # noqa: E402

from merge3.data.items import Item  # noqa: E402
from merge3.estimate.responses import ResponseMatrix  # noqa: E402
from merge3.merging import get_operator  # noqa: E402

GOOD = ["good", "great", "fine", "nice"]
BAD = ["bad", "awful", "poor", "sad"]
FILL = ["the", "movie", "was", "a", "plot", "very", "it"]


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    """A random 2-layer BERT + word-level tokenizer saved as an HF folder."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *GOOD, *BAD, *FILL]
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)})
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def sentiment_items(n: int, seed: int, prefix: str = "s") -> list[Item]:
    rng = np.random.default_rng(seed)
    items = []
    for k in range(n):
        label = int(rng.integers(2))
        words = list(rng.choice(FILL, 4)) + [str(rng.choice(GOOD if label else BAD))]
        rng.shuffle(words)
        items.append(Item(f"{prefix}-{k}", "toy", " ".join(words), ("neg", "pos"), label))
    return items


RECIPE = finetune.Recipe(steps=40, batch_size=16, lr=3e-3, head_lr=3e-2, max_length=16)


def test_finetune_lowers_loss_and_beats_chance(tiny_base):
    from transformers import AutoModel, AutoTokenizer

    items = sentiment_items(64, 0)
    tok = AutoTokenizer.from_pretrained(tiny_base)
    enc_model = AutoModel.from_pretrained(tiny_base)
    head, losses = finetune.finetune(enc_model, tok, items, 2, RECIPE, seed=0)
    assert len(losses) == RECIPE.steps
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.2
    enc = tok([i.question for i in items], padding=True, return_tensors="pt")
    with torch.no_grad():
        pooled = finetune.mean_pool(enc_model(**enc).last_hidden_state, enc["attention_mask"])
        pred = head(pooled).argmax(-1).numpy()
    assert np.mean(pred == np.array([i.answer for i in items])) >= 0.85


def test_cache_key_and_no_retrain(tiny_base, tmp_path, monkeypatch):
    items = sentiment_items(32, 1)
    digest = finetune._file_digest(tiny_base)
    key = finetune.cache_key(digest, "toy", items, RECIPE, 0)
    assert key != finetune.cache_key(digest, "toy", items, RECIPE, 1)
    other = finetune.Recipe(steps=41, batch_size=16, lr=3e-3, head_lr=3e-2, max_length=16)
    assert key != finetune.cache_key(digest, "toy", items, other, 0)
    assert key != finetune.cache_key(digest, "toy2", items, RECIPE, 0)
    assert key != finetune.cache_key(digest, "toy", items[:-1], RECIPE, 0)
    assert key != finetune.cache_key("other-base", "toy", items, RECIPE, 0)
    small = finetune.Recipe(steps=2, batch_size=8, max_length=16)
    first = finetune.endpoint_dir(tiny_base, "toy", items, 2, small, 0, cache=tmp_path)
    assert (first / "DONE").is_file() and (first / "head.safetensors").is_file()

    def boom(*a, **k):
        raise AssertionError("retrained a cached endpoint")

    monkeypatch.setattr(finetune, "finetune", boom)
    again = finetune.endpoint_dir(tiny_base, "toy", items, 2, small, 0, cache=tmp_path)
    assert again == first
    with pytest.raises(AssertionError, match="retrained"):
        finetune.endpoint_dir(tiny_base, "toy", items, 2, small, 1, cache=tmp_path)


def test_bench_merges_in_place(tiny_base, tmp_path):
    """λ = 0 is the base; an endpoint loaded from the bench scores as its own folder does."""
    from transformers import AutoModel

    small = finetune.Recipe(steps=3, batch_size=8, lr=1e-3, max_length=16)
    dirs = {
        t: finetune.endpoint_dir(tiny_base, t, sentiment_items(24, s), 2, small, s, tmp_path)
        for s, t in enumerate(("a", "b"))
    }
    bench = Bench(tiny_base, dirs, eval_dtype=torch.float32, batch_size=8)
    items = {t: sentiment_items(20, 5, prefix=t) for t in dirs}
    ev = bench.evaluator(items)
    bench.merge("task_arithmetic", {"weight": 1.0, "lambda": 0.0})
    merged = bench.correct(ev)
    bench.load_endpoint(None)
    assert all(np.array_equal(merged[t], bench.correct(ev)[t]) for t in dirs)
    bench.load_endpoint("b")
    own = ev(AutoModel.from_pretrained(dirs["b"]).eval())
    assert np.array_equal(bench.correct(ev)["b"], own["b"])
    rm = response_matrix({"m": bench.correct(ev)}, items)
    assert rm.values.shape == (1, 40) and set(rm.tasks) == {"a", "b"}


def test_random_recipes_are_valid():
    rng = np.random.default_rng(0)
    ops = set()
    for _ in range(40):
        op, params = population.random_recipe(rng, 6)
        get_operator(op).resolve(params, 6)  # raises on a bad name or value
        ops.add(op)
    assert ops == set(population.OPERATORS)


def test_model_split_is_disjoint_and_complete():
    models = [f"pop-{k:03d}" for k in range(101)]
    for seed in range(3):
        a, b = estimator_study.split_models(models, seed)
        assert not set(a) & set(b) and sorted(a + b) == models
        assert len(a) == 51 and len(b) == 50
    assert estimator_study.split_models(models, 0) != estimator_study.split_models(models, 1)


def test_mae_true_accuracy_and_cost_on_known_values():
    values = np.array([[1, 0, 1, 1, 0], [0, 0, 1, 0, np.nan]], float)
    rm = ResponseMatrix(("m1", "m2"), ("x1", "x2", "y1", "y2", "y3"), tuple("xxyyy"), values)
    truth = estimator_study.true_accuracy(rm)
    assert np.allclose(truth["x"], [0.5, 0.0]) and np.allclose(truth["y"], [2 / 3, 0.5])
    est = {"x": np.array([0.6, 0.2]), "y": np.array([2 / 3, 0.2])}
    # x: (0.1 + 0.2)/2 = 0.15; y: (0 + 0.3)/2 = 0.15
    assert estimator_study.mae(est, truth) == pytest.approx(0.15)
    rows = estimator_study.cost_rows(9330, [5, 50], 6)
    assert rows[0] == (5, 30, pytest.approx(311.0)) and rows[1][1] == 300
    assert rows[1][2] == pytest.approx(31.1)
