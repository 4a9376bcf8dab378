"""The run-inspection notebook executes top to bottom on a real run of the tiny setting."""

from __future__ import annotations

import nbformat
import pytest
from conftest import REPO
from nbclient import NotebookClient

from merge3.evolve import start_search
from merge3.runs import load_run

NOTEBOOK = REPO / "experiments" / "notebooks" / "inspect_run.ipynb"


def test_inspect_run_notebook_executes(tiny_dir, tmp_path, monkeypatch):
    run_dir = start_search(
        REPO / "experiments" / "configs" / "tiny-multi.yaml", tmp_path / "run"
    ).path
    monkeypatch.setenv("MERGE3_RUN_DIR", str(run_dir))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert f"{load_run(run_dir).n_candidates} candidates; objectives: ['add', 'color']" in text
    assert any("image/png" in o.get("data", {}) for o in outputs), "the plots did not render"


def test_notebook_api_on_a_run(tiny_dir, tmp_path):
    run_dir = start_search(
        REPO / "experiments" / "configs" / "tiny-multi.yaml", tmp_path / "run"
    ).path
    run = load_run(run_dir)
    evaluations = run.evaluations()
    assert len(evaluations) == run.n_candidates == 48
    assert {"weight[add]", "weight[color]", "lambda", "add", "color", "merge_s"} <= set(
        evaluations.columns
    )
    front = run.front()
    assert 1 <= len(front) < len(evaluations)
    # every front row is undominated among all evaluations
    for _, f in front.iterrows():
        better = (evaluations["add"] >= f["add"]) & (evaluations["color"] >= f["color"])
        strictly = (evaluations["add"] > f["add"]) | (evaluations["color"] > f["color"])
        assert not (better & strictly).any()
    hv = run.hypervolume()
    assert list(hv.index) == [0, 1, 2, 3] and hv.is_monotonic_increasing
    # the hypervolume of the last generation is that of the front (reference point 0)
    pts = sorted(zip(front["add"], front["color"], strict=True), reverse=True)
    area, prev_y = 0.0, 0.0
    for x, y in pts:  # sweep: x decreasing, y increasing along a 2-D front
        area += x * (y - prev_y)
        prev_y = y
    assert hv.iloc[-1] == pytest.approx(area)
    assert run.plot_front().get_xlabel().startswith("estimated accuracy (add)")
    assert len(run.plot_progress().get_lines()) == 3  # best add, best color, hypervolume
