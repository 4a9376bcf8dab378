"""Per-layer-group genes: grouping of tensors, merges, and an exact mergekit-YAML round trip."""

from __future__ import annotations

import pytest
import torch
import yaml
from conftest import TINY_CONFIG
from safetensors.torch import load_file

from merge3.config import parse_config
from merge3.evolve import start_search
from merge3.evolve.fitness import Merger
from merge3.evolve.genome import GenomeSpace
from merge3.evolve.granularity import assign, filters, layer_naming
from merge3.mergekit_yaml import merge_from_yaml

LLAMA = ["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"] + [
    f"model.layers.{i}.{k}"
    for i in range(12)
    for k in ("self_attn.q_proj.weight", "mlp.up_proj.weight", "input_layernorm.weight")
]


def test_groups_and_blocks_partition_the_tensors():
    groups = assign(LLAMA, "groups", 4)
    assert groups["model.layers.7.self_attn.q_proj.weight"] == "attn"
    assert groups["model.layers.7.mlp.up_proj.weight"] == "mlp"
    assert groups["model.layers.7.input_layernorm.weight"] == "rest"
    assert groups["lm_head.weight"] == "rest"
    blocks = assign(LLAMA, "blocks", 4)
    assert [blocks[f"model.layers.{i}.mlp.up_proj.weight"] for i in (0, 2, 3, 5, 6, 11)] == [
        "block0",
        "block0",
        "block1",
        "block1",
        "block2",
        "block3",
    ]
    assert blocks["model.embed_tokens.weight"] == "rest"
    # "layers.1." must not catch layer 11: filters are exact per layer
    assert "layers.1." in filters("blocks", 4, LLAMA)["block0"]
    assert blocks["model.layers.11.self_attn.q_proj.weight"] == "block3"
    bert = [
        "bert.encoder.layer.0.attention.self.query.weight",
        "bert.encoder.layer.5.output.dense.weight",
    ]
    assert layer_naming(bert) == ("layer", 6)


def test_grouped_genome_names_and_recipe():
    cfg = parse_config(
        {
            "models": {"base": "b", "endpoints": {"x": "x", "y": "y"}},
            "benchmark": {"tasks": [{"name": "t", "search": "t.jsonl"}]},
            "merge": {"granularity": "groups", "fixed": {"lambda": 1.0}},
        }
    )
    space = GenomeSpace.from_config(cfg)
    assert space.names == [
        "weight[x]@attn",
        "weight[y]@attn",
        "weight[x]@mlp",
        "weight[y]@mlp",
        "weight[x]@rest",
        "weight[y]@rest",
    ]
    recipe = space.decode([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    assert recipe["groups"] == {
        "attn": {"weight": [0.1, 0.2]},
        "mlp": {"weight": [0.3, 0.4]},
        "rest": {"weight": [0.5, 0.6]},
    }
    assert recipe["params"] == {"lambda": 1.0, "normalize": False}


@pytest.fixture(scope="module")
def merger(tiny_dir):
    cfg = parse_config(yaml.safe_load(TINY_CONFIG.read_text()), base_dir=TINY_CONFIG.parent)
    return Merger(cfg)


def _weights(merger) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in merger.model.named_parameters()}


def test_equal_groups_merge_like_one_group(merger):
    flat = {"operator": "task_arithmetic", "endpoints": ["add", "next", "color"]}
    flat["params"] = {"weight": [0.3, 0.5, 0.7], "lambda": 1.1, "normalize": False}
    merger.merge(flat)
    expected = _weights(merger)
    grouped = dict(flat, params={"lambda": 1.1, "normalize": False})
    grouped["granularity"] = {"mode": "blocks", "blocks": 2}
    grouped["groups"] = {g: {"weight": [0.3, 0.5, 0.7]} for g in ("block0", "block1", "rest")}
    merger.merge(grouped)
    for name, value in _weights(merger).items():
        torch.testing.assert_close(value, expected[name], rtol=0, atol=0)
    # and different block values really touch only their layers
    grouped["groups"]["block1"] = {"weight": [0.0, 0.0, 0.0]}
    merger.merge(grouped)
    after = _weights(merger)
    for name, value in after.items():
        if "layers.1." in name:
            torch.testing.assert_close(value, merger.endpoints.base[name], rtol=0, atol=1e-6)
        else:
            torch.testing.assert_close(value, expected[name], rtol=0, atol=0)


@pytest.mark.parametrize("granularity", ["groups", "blocks"])
def test_grouped_search_exports_a_yaml_that_rebuilds_the_merge(tiny_dir, tmp_path, granularity):
    data = yaml.safe_load(TINY_CONFIG.read_text())
    data["merge"].update(granularity=granularity, blocks=2)
    data["search"].update(generations=1, population=4)
    data["final"] = {"top_k": 1}
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    run_dir = start_search(config, tmp_path / "run").path
    best = run_dir / "best"
    kit = yaml.safe_load((best / "merge.yaml").read_text())
    weight = kit["models"][0]["parameters"]["weight"]
    assert isinstance(weight, list) and "filter" in weight[0] and set(weight[-1]) == {"value"}
    rebuilt = merge_from_yaml(best / "merge.yaml", tmp_path / "rebuilt")
    ours, theirs = load_file(best / "model.safetensors"), load_file(rebuilt / "model.safetensors")
    assert ours.keys() == theirs.keys()
    for name in ours:
        torch.testing.assert_close(theirs[name], ours[name], rtol=1e-6, atol=1e-6)
