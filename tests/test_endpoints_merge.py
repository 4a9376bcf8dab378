"""Resident endpoints: loading, dtypes, vocab cropping, tied embeddings, errors, in-place apply."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from merge3.errors import ModelError
from merge3.merging import get_operator
from merge3.merging.ties import global_thresholds
from merge3.models.endpoints import Endpoints
from merge3.models.synthetic import perturbed_copy, tiny_llama


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("endpoints")
    tiny_llama(root / "base", seed=1)
    for i in range(3):
        perturbed_copy(root / "base", root / f"ep{i}", seed=20 + i, scale=0.03)
    return root


def eps(root: Path, n: int = 3) -> dict[str, Path]:
    return {f"ep{i}": root / f"ep{i}" for i in range(n)}


def test_task_vectors_are_differences_and_apply_is_in_place(root):
    e = Endpoints.load(root / "base", eps(root))
    ep0 = load_file(str(root / "ep0" / "model.safetensors"))
    for name in e.params:
        torch.testing.assert_close(e.base[name] + e.task_vectors[name][0], ep0[name])
    pointers = {n: p.data_ptr() for n, p in e.params.items()}
    op = get_operator("task_arithmetic")
    e.apply(op, op.resolve({"weight": [1.0, 0.0, 0.0]}, 3))
    for name, p in e.params.items():
        assert p.data_ptr() == pointers[name]  # written in place, no second model
        torch.testing.assert_close(p.detach(), ep0[name])
    e.restore_base()
    for name, p in e.params.items():
        torch.testing.assert_close(p.detach(), e.base[name])


def test_task_vector_dtype_and_table_sizes(root):
    e = Endpoints.load(root / "base", eps(root), task_vector_dtype=torch.bfloat16)
    assert e.task_vector_dtype == torch.bfloat16
    op = get_operator("ties")
    e.apply(op, op.resolve({"density": 0.5}, 3))
    assert all(torch.isfinite(p).all() for p in e.params.values())
    # sorted |τ| in the task-vector dtype, plus one float64 L1 norm per tensor and task
    assert e.table_bytes(op) == e.task_vector_bytes() + 8 * 3 * len(e.params)
    dare = get_operator("dare_ties")
    e.prepare(dare)
    n = sum(p.numel() for p in e.params.values())
    assert e.table_bytes(dare) >= 3 * n * 2  # int16 field
    e.release(dare)
    assert e.table_bytes(dare) == 0


def test_vocab_mismatch_is_cropped_with_a_warning(root, tmp_path, caplog):
    big = perturbed_copy(root / "base", tmp_path / "big", seed=5, scale=0.03, vocab_rows=100)
    with caplog.at_level(logging.WARNING):
        e = Endpoints.load(root / "base", {"big": big, "ep0": root / "ep0"})
    assert "cropping" in caplog.text and "embed_tokens" in caplog.text
    emb = e.params["model.embed_tokens.weight"]
    assert e.task_vectors["model.embed_tokens.weight"].shape[1] == emb.shape[0] == 96
    small = perturbed_copy(root / "base", tmp_path / "small", seed=6, scale=0.03, vocab_rows=90)
    e2 = Endpoints.load(root / "base", {"small": small})
    assert e2.task_vectors["model.embed_tokens.weight"][0, 90:].abs().max() == 0  # padded


def test_tied_endpoint_supplies_lm_head_from_embeddings(root, tmp_path):
    tied = tmp_path / "tied"
    shutil.copytree(root / "ep0", tied)
    tensors = load_file(str(tied / "model.safetensors"))
    del tensors["lm_head.weight"]
    save_file(tensors, str(tied / "model.safetensors"), metadata={"format": "pt"})
    e = Endpoints.load(root / "base", {"tied": tied})
    torch.testing.assert_close(
        e.base["lm_head.weight"] + e.task_vectors["lm_head.weight"][0],
        tensors["model.embed_tokens.weight"],
    )


def test_tied_base_merges_the_shared_tensor_once(tmp_path):
    base = tiny_llama(tmp_path / "tbase", seed=2, tie=True)
    ep = perturbed_copy(base, tmp_path / "tep", seed=3)
    e = Endpoints.load(base, {"tep": ep})
    assert "lm_head.weight" not in e.params
    op = get_operator("ties")
    e.apply(op, op.resolve({"density": 1.0}, 1))
    assert e.model.lm_head.weight.data_ptr() == e.model.model.embed_tokens.weight.data_ptr()


def test_shape_mismatch_names_tensor_and_endpoint(root, tmp_path):
    other = tiny_llama(tmp_path / "wide", seed=3)
    cfg = json.loads((other / "config.json").read_text())
    bad = tmp_path / "bad"
    bad.mkdir()
    tensors = load_file(str(other / "model.safetensors"))
    tensors["model.layers.0.mlp.up_proj.weight"] = torch.zeros(65, 32)
    save_file(tensors, str(bad / "model.safetensors"), metadata={"format": "pt"})
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match=r"up_proj.*'bad'.*\(65, 32\)"):
        Endpoints.load(root / "base", {"bad": bad})


def test_mismatched_architecture_missing_base_and_nan(root, tmp_path):
    deep = tiny_llama(tmp_path / "deep", seed=4, layers=3)
    with pytest.raises(ModelError, match="num_hidden_layers"):
        Endpoints.load(root / "base", {"deep": deep})
    with pytest.raises(ModelError, match="not found"):
        Endpoints.load(tmp_path / "nowhere", eps(root))
    nan = tmp_path / "nan"
    shutil.copytree(root / "ep1", nan)
    tensors = load_file(str(nan / "model.safetensors"))
    tensors["model.norm.weight"][3] = float("nan")
    save_file(tensors, str(nan / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelError, match=r"model.norm.weight.*'nan'.*NaN"):
        Endpoints.load(root / "base", {"nan": nan})


def test_global_trim_keeps_the_top_fraction_of_the_whole_model(root):
    e = Endpoints.load(root / "base", eps(root))
    op = get_operator("ties")
    e.apply(op, op.resolve({"density": 0.3, "trim": "global", "weight": [1.0, 0.0, 0.0]}, 3))
    flat = torch.cat([e.task_vectors[n][0].reshape(-1) for n in e.params]).abs()
    k = int(0.3 * flat.numel())
    threshold = flat.topk(k).values[-1]
    tables = [e._prepared["ties"][n]["sorted"] for n in e.params]
    got = global_thresholds(tables, torch.tensor([0.3, 1.0, 1.0], dtype=torch.float64))
    assert got[0] == threshold and got[1] == 0
    kept = torch.cat([(p.detach() - e.base[n]).reshape(-1) != 0 for n, p in e.params.items()])
    assert kept.sum() == (flat >= threshold).sum()


def test_tables_are_built_once_per_operator_configuration(root):
    e = Endpoints.load(root / "base", eps(root))
    e.prepare(get_operator("ties"))
    first = e._prepared["ties"]
    e.apply(get_operator("ties"), get_operator("ties").resolve({"density": 0.5}, 3))
    assert e._prepared["ties"] is first  # a new instance, same options: no re-preparation
    from merge3.merging.dare import DareTies

    e.prepare(DareTies(seed=1))
    keys1 = e._prepared["dare_ties"]["model.norm.weight"]["keys"]
    e.prepare(DareTies(seed=2))  # another seed is another random field
    assert not torch.equal(keys1, e._prepared["dare_ties"]["model.norm.weight"]["keys"])
