"""evaluation.response_cache: answers of fixed models are kept across runs, keyed so that any
change that could change an answer (weights, recipe, items, dtype) misses the cache."""

from __future__ import annotations

import os

import numpy as np
import pytest
import yaml
from conftest import REPO

from merge3.config import parse_config
from merge3.data.items import Item
from merge3.data.tasks import Task
from merge3.evolve import calibrate as calibrate_module
from merge3.evolve import start_search
from merge3.evolve.response_cache import ResponseCache
from merge3.runs import load_run

MULTI = REPO / "experiments" / "configs" / "tiny-multi.yaml"


def _cfg(tmp_path, cache, **evaluation):
    data = yaml.safe_load(MULTI.read_text())
    data["estimator"] = {"name": "gmpirt", "dims": 1, "reference_merges": 2}
    data["anchors"] = {"n_per_task": 8, "method": "irt-info", "seed": 0}
    data["search"].update(generations=1, population=4)
    data["final"] = {"top_k": 1, "export_best": False}
    data["evaluation"] = {"batch_size": 64, "response_cache": str(cache), **evaluation}
    return parse_config(data, "test", tmp_path)


def _task(items):
    return Task("t", "multiple_choice", {"search": items})


ITEMS = [Item(f"q{i}", "t", f"question {i}", ("a", "b"), i % 2) for i in range(4)]


def test_keys_follow_everything_that_changes_an_answer(tiny_dir, tmp_path):
    cache = ResponseCache(tmp_path / "c", _cfg(tmp_path, tmp_path / "c"))
    recipe = {"operator": "task_arithmetic", "params": {"weight": [0.5, 0.5], "lambda": 1.0}}
    key = cache.key(recipe, [(_task(ITEMS), ITEMS)])
    assert key == cache.key(dict(recipe), [(_task(ITEMS), list(ITEMS))])  # deterministic
    other_recipe = {**recipe, "params": {"weight": [0.5, 0.6], "lambda": 1.0}}
    assert cache.key(other_recipe, [(_task(ITEMS), ITEMS)]) != key
    assert cache.key(None, [(_task(ITEMS), ITEMS)]) != cache.key(0, [(_task(ITEMS), ITEMS)])
    edited = [*ITEMS[:3], Item("q3", "t", "question 3?", ("a", "b"), 1)]
    assert cache.key(recipe, [(_task(edited), edited)]) != key
    bf16 = ResponseCache(
        tmp_path / "c",
        _cfg(tmp_path, tmp_path / "c").model_copy(
            update={
                "models": _cfg(tmp_path, tmp_path / "c").models.model_copy(
                    update={"dtype": "bfloat16"}
                )
            }
        ),
    )
    assert bf16.key(recipe, [(_task(ITEMS), ITEMS)]) != key


def test_a_rewritten_endpoint_is_a_new_key(tiny_dir, tmp_path):
    cfg = _cfg(tmp_path, tmp_path / "c")
    before = ResponseCache(tmp_path / "c", cfg).key(0, [(_task(ITEMS), ITEMS)])
    weights = next((tiny_dir / "ft-add").glob("*.safetensors"))
    stat = weights.stat()
    try:
        os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
        after = ResponseCache(tmp_path / "c", cfg).key(0, [(_task(ITEMS), ITEMS)])
    finally:
        os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert after != before


def test_entries_round_trip_and_damaged_ones_are_ignored(tiny_dir, tmp_path):
    cache = ResponseCache(tmp_path / "c", _cfg(tmp_path, tmp_path / "c"))
    assert cache.get("k" * 64) is None
    cache.put("k" * 64, np.array([1.0, 0.0, np.nan]), 1.5)
    correct, seconds = cache.get("k" * 64)
    np.testing.assert_array_equal(correct, [1.0, 0.0, np.nan])
    assert seconds == 1.5
    (tmp_path / "c" / ("k" * 64 + ".npz")).write_bytes(b"not a zip")
    assert cache.get("k" * 64) is None
    assert [p.name for p in (tmp_path / "c").iterdir()] == ["k" * 64 + ".npz"]  # no temp files


def test_a_second_run_reads_its_references_from_the_cache(tiny_dir, tmp_path, monkeypatch):
    cfg = _cfg(tmp_path, tmp_path / "cache")
    first = load_run(start_search(cfg, tmp_path / "a").path)
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2 + 1 + 2  # endpoints, base, merges

    def no_evaluation(*args, **kwargs):
        raise AssertionError("a cached reference model was evaluated again")

    monkeypatch.setattr(calibrate_module, "load_reference", no_evaluation)
    second = load_run(start_search(cfg, tmp_path / "b").path)
    a, b = first.dir.store(), second.dir.store()
    try:
        assert a.references() == b.references()  # same answers, same recorded seconds
    finally:
        a.close()
        b.close()
    assert [r.objectives for r in first.rows] == [r.objectives for r in second.rows]


def test_without_the_option_nothing_is_cached(tiny_dir, tmp_path):
    data = yaml.safe_load(MULTI.read_text())
    cfg = parse_config(data, "test", tmp_path)
    assert cfg.evaluation.response_cache is None


@pytest.mark.parametrize("value", ["cache", "./cache"])
def test_the_cache_path_is_relative_to_the_config(tmp_path, value):
    data = yaml.safe_load(MULTI.read_text())
    data["evaluation"] = {"response_cache": value}
    cfg = parse_config(data, "test", tmp_path)
    assert cfg.evaluation.response_cache == str((tmp_path / "cache").resolve())
