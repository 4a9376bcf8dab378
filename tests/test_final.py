"""After the search: held-out accuracy beside the estimate, the best merge exported, resumable."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from conftest import TINY_CONFIG
from typer.testing import CliRunner

from merge3.cli import app
from merge3.data import load_jsonl_items
from merge3.evaluate import MultipleChoiceEvaluator
from merge3.evolve import final as final_module
from merge3.evolve import resume_search, start_search
from merge3.models import load_causal_lm, load_tokenizer
from merge3.runs import load_run


def _config(tmp_path, **final):
    data = yaml.safe_load(TINY_CONFIG.read_text())
    data["search"].update(generations=2)
    data["final"] = final
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _test_accuracy(model_dir, tiny_dir) -> dict[str, float]:
    """Independent check: load the exported folder from disk and evaluate the test split."""
    model = load_causal_lm(model_dir, torch.float32)
    tok = load_tokenizer(model_dir)
    out = {}
    for task in ("add", "next", "color"):
        items = load_jsonl_items(tiny_dir / "data" / f"{task}.test.jsonl", task)
        out[task] = float(np.mean(MultipleChoiceEvaluator(items, tok, batch_size=64)(model)))
    return out


@pytest.fixture(scope="module")
def top8(tiny_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("top8")
    return start_search(_config(tmp, top_k=8), tmp / "run").path


def test_best_merge_is_exported_and_its_test_accuracy_is_true(top8, tiny_dir):
    run = load_run(top8)
    assert len(run.test_accuracy) == 8
    best = top8 / "best"
    assert {"config.json", "model.safetensors", "merge.yaml", "README.md", "tokenizer.json"} <= {
        p.name for p in best.iterdir()
    }
    kit = yaml.safe_load((best / "merge.yaml").read_text())
    first = max(run.rows, key=lambda r: (r.objectives["mean"], -r.generation, -r.index))
    assert kit["merge_method"] == "task_arithmetic"
    assert [m["parameters"]["weight"] for m in kit["models"]] == first.recipe["params"]["weight"]
    assert kit["parameters"]["lambda"] == first.recipe["params"]["lambda"]
    stored = run.test_accuracy[(first.generation, first.index)]
    assert _test_accuracy(best, tiny_dir) == pytest.approx(stored)
    assert "test_accuracy" in (best / "README.md").read_text()


def test_estimates_track_true_test_accuracy(top8):
    """The `mean` estimator on 20 anchors per task against the 24–100 test items per task."""
    df = load_run(top8).evaluations().dropna(subset=["test/add"])
    assert len(df) == 8
    errors, correlations = [], []
    for task in ("add", "next", "color"):
        est, true = df[f"estimate/{task}"], df[f"test/{task}"]
        errors.append(float(np.abs(est - true).mean()))
        correlations.append(float(np.corrcoef(est, true)[0, 1]))
    print(f"tiny run, 8 best candidates: MAE per task {errors}, correlation {correlations}")
    assert max(errors) < 0.2
    assert np.mean(correlations) > 0.3


def test_export_verb_by_rank_and_its_errors(top8, tmp_path, tiny_dir):
    runner = CliRunner()
    out = tmp_path / "rank3"
    result = runner.invoke(app, ["export", str(top8), "--rank", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out)
    distinct = []  # best first by mean estimate, earliest first among ties, each recipe once
    for r in sorted(
        load_run(top8).rows, key=lambda r: (-r.objectives["mean"], r.generation, r.index)
    ):
        if all(r.recipe != d.recipe for d in distinct):
            distinct.append(r)
    third = distinct[2]
    kit = yaml.safe_load((out / "merge.yaml").read_text())
    assert [m["parameters"]["weight"] for m in kit["models"]] == third.recipe["params"]["weight"]
    again = runner.invoke(app, ["export", str(top8), "--out", str(out)])
    assert again.exit_code == 2 and "exists and is not empty" in again.stderr
    too_far = runner.invoke(
        app, ["export", str(top8), "--rank", "999", "--out", str(tmp_path / "x")]
    )
    assert too_far.exit_code == 2 and "--rank 999" in too_far.stderr
    assert not (tmp_path / "x").exists()


def test_crash_during_final_evaluation_resumes(tiny_dir, tmp_path, monkeypatch):
    real = final_module.export_merge

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(final_module, "export_merge", crash)
    with pytest.raises(KeyboardInterrupt):
        start_search(_config(tmp_path), tmp_path / "run")
    run = load_run(tmp_path / "run")
    assert run.test_accuracy and not (tmp_path / "run" / "best").exists()
    monkeypatch.setattr(final_module, "export_merge", real)
    resume_search(tmp_path / "run")
    assert (tmp_path / "run" / "best" / "model.safetensors").is_file()
    assert load_run(tmp_path / "run").test_accuracy == run.test_accuracy
