"""`merge3 merge CONFIG.yaml --out DIR`: mergekit YAML in, HF folder out, same as mergekit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from merge3.errors import ConfigError, ModelError
from merge3.mergekit_yaml import evaluate_setting, layer_position, merge_from_yaml, parse
from merge3.models.io import TensorReader
from merge3.models.synthetic import perturbed_copy, tiny_llama


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("yaml")
    tiny_llama(root / "base", seed=7)
    for i in range(3):
        perturbed_copy(root / "base", root / f"ep{i}", seed=30 + i, scale=0.05)
    return root


def write(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def ties_config(root: Path) -> dict:
    return {
        "merge_method": "ties",
        "base_model": str(root / "base"),
        "dtype": "float32",
        "parameters": {"normalize": True, "lambda": 0.9},
        "models": [
            {"model": str(root / "base")},
            {"model": str(root / "ep0"), "parameters": {"weight": [0.2, 0.8], "density": 0.5}},
            {"model": str(root / "ep1"), "parameters": {"weight": 0.5, "density": 0.3}},
            {
                "model": str(root / "ep2"),
                "parameters": {
                    "weight": [{"filter": "mlp", "value": 0.1}, {"value": 0.7}],
                    "density": 0.8,
                },
            },
        ],
    }


def read(folder: Path) -> dict[str, torch.Tensor]:
    with TensorReader(folder) as reader:
        return {k: reader.get(k) for k in reader.keys()}


def test_yaml_merge_matches_mergekit_with_gradients_and_filters(root, tmp_path):
    pytest.importorskip("mergekit")
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    cfg = ties_config(root)
    out = merge_from_yaml(write(tmp_path / "m.yaml", cfg), tmp_path / "ours")
    run_merge(
        MergeConfiguration.model_validate(cfg),
        str(tmp_path / "theirs"),
        MergeOptions(copy_tokenizer=False, quiet=True, write_model_card=False),
    )
    ours, theirs = read(out), read(tmp_path / "theirs")
    assert set(ours) == set(theirs)
    for name in theirs:
        torch.testing.assert_close(ours[name], theirs[name], atol=2e-6, rtol=1e-5, msg=name)
    assert (out / "config.json").is_file()
    card = (out / "README.md").read_text()
    assert "ties" in card and "merge_method: ties" in card
    assert (out / "mergekit_config.yml").read_text() == (tmp_path / "m.yaml").read_text()


def test_tsv_and_out_dtype(root, tmp_path):
    cfg = {
        "merge_method": "tsv",
        "base_model": str(root / "base"),
        "out_dtype": "bfloat16",
        "parameters": {"alpha": 1.0},
        "models": [{"model": str(root / f"ep{i}")} for i in range(3)],
    }
    out = merge_from_yaml(write(tmp_path / "t.yaml", cfg), tmp_path / "tsv")
    merged = read(out)
    assert merged["model.norm.weight"].dtype == torch.bfloat16
    base, eps = read(root / "base"), [read(root / f"ep{i}") for i in range(3)]
    mean = sum(e["model.norm.weight"] for e in eps) / 3  # 1-D tensors: mean of task vectors
    torch.testing.assert_close(merged["model.norm.weight"].float(), mean, atol=1e-2, rtol=1e-2)
    assert not torch.equal(
        merged["model.layers.0.mlp.up_proj.weight"].float(),
        base["model.layers.0.mlp.up_proj.weight"],
    )


def test_gradient_and_filter_semantics():
    assert layer_position("model.layers.3.mlp.up_proj.weight", 5) == 0.75
    assert layer_position("model.embed_tokens.weight", 5) == 0.0
    assert evaluate_setting([0.0, 1.0, 0.0], "x", 0.25) == 0.5
    assert evaluate_setting([{"filter": "attn", "value": 2}, {"value": 3}], "self_attn.q", 0) == 2
    assert evaluate_setting([{"filter": "attn", "value": 2}, {"value": 3}], "mlp.up", 0) == 3


@pytest.mark.parametrize(
    "change, error, needle",
    [
        ({"merge_method": "slerp"}, ConfigError, "slerp"),
        ({"slices": [{"sources": []}]}, ConfigError, "slices"),
        ({"tokenizer_source": "union"}, ConfigError, "tokenizer_source"),
        ({"base_model": None}, ConfigError, "base_model"),
        ({"base_model": "/no/such/model"}, ModelError, "/no/such/model"),
        ({"parameters": {"epsilon": 0.1}}, ConfigError, "epsilon"),
        ({"frobnicate": 1}, ConfigError, "frobnicate"),
    ],
)
def test_unsupported_or_bad_configs_fail_with_one_clear_line(root, tmp_path, change, error, needle):
    cfg = {**ties_config(root), **change}
    with pytest.raises(error, match=needle) as info:
        parse(write(tmp_path / "bad.yaml", cfg))
    assert "\n" not in str(info.value)


def test_bad_values_are_reported(root, tmp_path):
    cfg = ties_config(root)
    cfg["models"][1]["parameters"]["density"] = 1.5
    with pytest.raises(ConfigError, match="density"):
        merge_from_yaml(write(tmp_path / "d.yaml", cfg), tmp_path / "o")
    (tmp_path / "broken.yaml").write_text("merge_method: [ties\n")
    with pytest.raises(ConfigError, match="YAML"):
        parse(tmp_path / "broken.yaml")
