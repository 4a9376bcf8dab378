"""MERGE³ proper on the tiny setting: IRT fitted by the run, IRT anchors, gmpirt fitness."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from conftest import REPO, SHARED_DATA

from merge3.config import parse_config
from merge3.errors import DataError
from merge3.evolve import calibrate as calibrate_module
from merge3.evolve import resume_search, start_search
from merge3.evolve.tasks import load_tasks
from merge3.runs import load_run

MULTI = REPO / "experiments" / "configs" / "tiny-multi.yaml"


def _config(tmp_path, **estimator):
    data = yaml.safe_load(MULTI.read_text())
    data["estimator"] = {"name": "gmpirt", "dims": 1, "reference_merges": 4, **estimator}
    data["anchors"] = {"n_per_task": 10, "method": "irt-kmeans", "seed": 0}
    data["search"].update(generations=2, population=8)
    data["final"] = {"top_k": 8, "export_best": False}
    path = tmp_path / "irt.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def irt_run(tiny_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("irt")
    return start_search(_config(tmp), tmp / "run").path


def test_the_run_fits_irt_and_caches_what_it_cost(irt_run):
    cost = json.loads((irt_run / "irt" / "cost.json").read_text())
    # 2 endpoints + base + 4 random merges, on every search item of both tasks
    assert cost["reference_models"] == 7
    assert cost["items"] == 100 + 48
    assert cost["evaluate_s"] > 0 and cost["fit_s"] > 0
    bank = json.loads((irt_run / "irt" / "items.json").read_text())
    assert len(bank["items"]) == 148
    anchors = json.loads((irt_run / "anchors.json").read_text())
    assert anchors["method"] == "irt-kmeans"
    assert {t: len(a["items"]) for t, a in anchors["tasks"].items()} == {"add": 10, "color": 10}
    # k-means weights are cluster shares, not uniform
    weights = np.array(anchors["tasks"]["add"]["weights"])
    assert weights.sum() == pytest.approx(1.0) and weights.std() > 0


def test_gmpirt_estimates_track_held_out_accuracy(irt_run):
    df = load_run(irt_run).evaluations().dropna(subset=["test/add"])
    assert len(df) == 8
    for task in ("add", "color"):
        est, true = df[task], df[f"test/{task}"]
        mae = float(np.abs(est - true).mean())
        corr = float(np.corrcoef(est, true)[0, 1])
        print(f"gmpirt on 10 IRT anchors, {task}: MAE {mae:.3f}, corr {corr:.2f}")
        assert mae < 0.15 and corr > 0.5


def test_a_crash_during_reference_evaluation_resumes_without_redoing_rows(
    tiny_dir, tmp_path, monkeypatch, irt_run
):
    real = calibrate_module.CandidateStore.add_reference
    calls = {"n": 0}

    def crash_on_fourth(self, *args):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(self, *args)

    monkeypatch.setattr(calibrate_module.CandidateStore, "add_reference", crash_on_fourth)
    with pytest.raises(KeyboardInterrupt):
        start_search(_config(tmp_path), tmp_path / "run")
    calls["n"] = -100
    resume_search(tmp_path / "run")
    assert calls["n"] == -100 + 4  # the three stored rows were not evaluated again
    ours, theirs = load_run(tmp_path / "run"), load_run(irt_run)
    assert [r.objectives for r in ours.rows] == [r.objectives for r in theirs.rows]
    assert (tmp_path / "run" / "irt" / "items.json").read_text() == (
        irt_run / "irt" / "items.json"
    ).read_text()


def test_benchmark_spec_tasks_with_a_subject_filter():
    cfg = parse_config(
        {
            "models": {"base": "b", "endpoints": {"x": "x"}},
            "benchmark": {
                "data_dir": str(SHARED_DATA),
                "tasks": [
                    {"name": "astro", "spec": "mmlu", "subjects": ["astronomy"]},
                    {"name": "law", "spec": "mmlu", "subjects": ["international law"]},
                ],
            },
            "search": {"algorithm": "nsga2"},
        }
    )
    tasks = load_tasks(cfg)
    astro = tasks["astro"]
    assert astro.kind == "multiple_choice"
    assert all(
        i.task == "astro" and i.metadata["subject"] == "astronomy" for i in astro.items("search")
    )
    # MMLU has 152 astronomy and 121 international-law questions, split into seeded halves
    assert len(astro.items("search")) + len(astro.items("test")) == 152
    assert len(tasks["law"].items("search")) + len(tasks["law"].items("test")) == 121
    assert not {i.id for i in astro.items("search")} & {i.id for i in astro.items("test")}
    bad = cfg.model_copy(deep=True)
    bad.benchmark.tasks[0].__dict__["subjects"] = ["astrology"]
    with pytest.raises(DataError, match="no 'mmlu' items of subjects"):
        load_tasks(bad)


def test_information_anchors_with_posterior_mixing_run_a_search(tiny_dir, tmp_path):
    path = _config(tmp_path, inference="posterior")
    data = yaml.safe_load(path.read_text())
    data["anchors"]["method"] = "irt-info"
    data["search"].update(generations=1, population=4)
    data["final"]["top_k"] = 2
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    run = start_search(path, tmp_path / "run").path
    anchors = json.loads((run / "anchors.json").read_text())
    assert anchors["method"] == "irt-info"
    assert {t: len(a["items"]) for t, a in anchors["tasks"].items()} == {"add": 10, "color": 10}
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["estimator"]["inference"] == "posterior"
    df = load_run(run).evaluations()
    assert len(df) >= 4 and df[["add", "color"]].notna().all().all()
    assert ((df[["add", "color"]] >= 0) & (df[["add", "color"]] <= 1)).all().all()
