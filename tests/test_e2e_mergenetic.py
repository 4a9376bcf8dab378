"""benchmarks/e2e_mergenetic.py: what it hands mergenetic and how it summarises the timings.

mergenetic itself lives in its own venv and never runs in CI; these tests check the pieces that
make the comparison fair: the same genomes (merge3's first generation, λ = 1) in mergenetic's
gene order, merge3's item parameters in tinyBenchmarks' layout giving the same logits, model
folders transformers 4.x reads, and the ratio of paired medians.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from merge3.data.items import Item
from merge3.estimate.itembank import ItemBank
from merge3.evolve.genome import GenomeSpace
from merge3.merging import get_operator

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


e2e = _load("e2e_mergenetic")


def ties_space() -> GenomeSpace:
    return GenomeSpace(
        get_operator("ties"),
        ["stem", "humanities", "social_sciences"],
        bounds={"weight": (0.0, 1.0), "density": (0.2, 1.0)},
    )


def test_first_generation_is_seeded_in_bounds_with_lambda_one():
    space = ties_space()
    a = e2e.first_generation(space, 8, seed=0, n_obj=3)
    b = e2e.first_generation(space, 8, seed=0, n_obj=3)
    c = e2e.first_generation(space, 8, seed=1, n_obj=3)
    assert a.shape == (8, len(space.genes))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    lam = [k for k, g in enumerate(space.genes) if g.parameter == "lambda"]
    assert lam, "the TIES genome searches λ"
    assert np.all(a[:, lam] == 1.0)
    others = [k for k in range(len(space.genes)) if k not in lam]
    assert np.all(a[:, others] >= space.lower[others])
    assert np.all(a[:, others] <= space.upper[others])
    assert len({tuple(row) for row in a}) == 8


def test_mergenetic_genome_is_weights_then_densities_of_the_same_recipe():
    space = ties_space()
    genome = e2e.first_generation(space, 4, seed=3, n_obj=3)[2]
    theirs = e2e.as_mergenetic(space, genome)
    recipe = space.decode(genome)["params"]
    assert theirs == pytest.approx(list(recipe["weight"]) + list(recipe["density"]))
    assert recipe["lambda"] == 1.0


def test_item_parameters_give_the_same_logits_in_tinybenchmarks_layout():
    rng = np.random.default_rng(0)
    for dims in (1, 2):
        n = 7
        bank = ItemBank(
            "2pl",
            tuple(f"i{k}" for k in range(n)),
            ("t",) * n,
            rng.normal(size=(n, dims)),
            rng.normal(size=n),
        )
        tb = e2e.tiny_benchmarks(bank)["lb"]
        a, b = tb["irt_parameters"]["A"], tb["irt_parameters"]["B"]
        assert a.shape == b.shape == (1, dims, n)
        assert tb["scenarios_position"][e2e.BENCH] == list(range(n))
        theta = rng.normal(size=(1, dims, 1))
        # tinyBenchmarks' logit Σ_d (A_d θ_d − B_d) against merge3's αᵀθ − β
        theirs = (a * theta - b).sum(axis=1)[0]
        ours = bank.alpha @ theta[0, :, 0] - bank.beta
        np.testing.assert_allclose(theirs, ours, rtol=1e-12, atol=1e-12)


def test_prompt_uses_parenthesised_options_and_leaves_answer_to_mergenetic():
    item = Item(
        "q1",
        "stem",
        "What is 2 + 2?\nA. 3\nB. 4\nC. 5\nD. 22\nAnswer:",
        ("A", "B", "C", "D"),
        1,
        context="The following are multiple choice questions about math.\n\n",
    )
    text = e2e.mergenetic_prompt(item)
    assert text.startswith("The following are")
    assert "(A) 3\n(B) 4\n(C) 5\n(D) 22" in text
    assert not text.rstrip().endswith("Answer:")
    assert "A. 3" not in text


def test_transformers4_view_patches_configs_and_links_weights(tmp_path):
    src = tmp_path / "t5"
    src.mkdir()
    (src / "config.json").write_text(
        json.dumps(
            {"model_type": "llama", "dtype": "bfloat16", "rope_parameters": {"rope_theta": 1e5}}
        )
    )
    (src / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "TokenizersBackend"}))
    (src / "model.safetensors").write_bytes(b"weights")
    dst = e2e.transformers4_copy(src, tmp_path / "t4")
    cfg = json.loads((dst / "config.json").read_text())
    assert cfg["rope_theta"] == 1e5 and cfg["torch_dtype"] == "bfloat16"
    tok = json.loads((dst / "tokenizer_config.json").read_text())
    assert tok["tokenizer_class"] == "GPT2Tokenizer"
    assert "token_type_ids" not in tok["model_input_names"]
    assert (dst / "model.safetensors").is_symlink()
    assert (dst / "model.safetensors").read_bytes() == b"weights"
    # the source is untouched and a second call (a rerun) replaces the view in place
    assert json.loads((src / "config.json").read_text()).get("rope_theta") is None
    e2e.transformers4_copy(src, dst)
    assert json.loads((dst / "config.json").read_text())["rope_theta"] == 1e5


def _row(i: int, ours: float, theirs: float | None) -> dict:
    row = {
        "candidate": i,
        "merge3": {
            "wall_s": ours,
            "merge_s": 0.1 * ours,
            "evaluate_s": 0.9 * ours,
            "estimate_s": 0.001,
            "anchor_correct": {"t": [1.0, 0.0]},
        },
    }
    if theirs is not None:
        row["mergenetic"] = {
            "wall_s": theirs,
            "merge_s": 10.0,
            "load_s": 1.0,
            "evaluate_estimate_s": theirs - 11.0,
            "anchor_correct": {"t": [1.0, 1.0]},
        }
        row["weights_vs_mergenetic"] = {"max_abs": 0.01 * i, "rel_fro": 1e-3}
    return row


def test_summary_is_the_ratio_of_paired_medians():
    rows = [_row(0, 6.0, 900.0), _row(1, 2.0, 800.0), _row(2, 3.0, 1000.0), _row(3, 1.0, None)]
    args = SimpleNamespace(eval_batch_size=5, smoke_max_new_tokens=None)
    r = e2e.summarize(rows, 10.0, 7.0, {"ready": True}, args)
    assert r["paired_candidates"] == 3 and r["candidates"] == 4
    assert r["ratio"] == pytest.approx(900.0 / 3.0)  # paired: merge3 median of 6, 2, 3
    assert r["per_candidate_s"]["merge3"]["median_all"] == pytest.approx(2.5)
    assert r["lower_bound_ratio"] == pytest.approx(11.0 / 3.0)
    assert r["anchor_agreement"] == pytest.approx(0.5)
    assert r["merged_weights_max_abs_diff"] == pytest.approx(0.02)
    main, floor = r["summary"]
    assert main["met"] is True and floor["met"] is False
    assert main["ratio"] == pytest.approx(300.0)
    assert "SMOKE" not in main["note"]
    smoke = e2e.summarize(
        rows, 10.0, 7.0, {}, SimpleNamespace(eval_batch_size=5, smoke_max_new_tokens=4)
    )
    assert smoke["smoke"] and all("SMOKE" in s["note"] for s in smoke["summary"])


def test_weight_gap_compares_the_shared_tensors_and_refuses_a_disjoint_folder(tmp_path):
    import torch
    from safetensors.torch import save_file

    model = torch.nn.Linear(3, 2)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    (tmp_path / "same").mkdir()
    (tmp_path / "same" / "config.json").write_text("{}")  # a model folder, as mergekit writes
    save_file({"weight": state["weight"]}, str(tmp_path / "same" / "model.safetensors"))
    gap = e2e.weight_gap(tmp_path / "same", model)
    assert gap == {"max_abs": 0.0, "rel_fro": 0.0, "tensors": 1}  # bias absent: skipped
    (tmp_path / "moved").mkdir()
    (tmp_path / "moved" / "config.json").write_text("{}")  # a model folder, as mergekit writes
    moved = state["weight"].clone()
    moved[0, 0] += 0.5
    save_file({"weight": moved, "bias": state["bias"]}, str(tmp_path / "moved" / "x.safetensors"))
    gap = e2e.weight_gap(tmp_path / "moved", model)
    assert gap["tensors"] == 2 and gap["max_abs"] == pytest.approx(0.5)
    assert gap["rel_fro"] > 0
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text("{}")  # a model folder, as mergekit writes
    save_file({"unrelated": moved}, str(tmp_path / "other" / "model.safetensors"))
    with pytest.raises(RuntimeError, match="no tensor in common"):
        e2e.weight_gap(tmp_path / "other", model)
