"""Response matrices: CSV/parquet IO, tasks from ids or a sidecar, and clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from merge3.errors import DataError
from merge3.estimate.responses import ResponseMatrix, read_responses


def _matrix() -> ResponseMatrix:
    values = np.array([[1, 0, 1, np.nan], [0, 0, 1, 1], [1, 0, 0.5, 1]], float)
    return ResponseMatrix(
        ("a", "b", "c"), ("t1/x", "t1/y", "t2/x", "t2/z"), ("t1", "t1", "t2", "t2"), values
    )


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_roundtrip_keeps_values_tasks_and_missing(tmp_path, suffix):
    rm = _matrix()
    rm.save(tmp_path / f"r{suffix}")
    back = read_responses(tmp_path / f"r{suffix}")
    assert back.models == rm.models and back.items == rm.items and back.tasks == rm.tasks
    np.testing.assert_array_equal(np.isnan(back.values), np.isnan(rm.values))
    np.testing.assert_allclose(np.nan_to_num(back.values), np.nan_to_num(rm.values))
    acc = back.true_accuracy()
    assert acc["t1"][0] == 0.5 and acc["t2"][0] == 1.0  # NaN skipped


def test_sidecar_items_file_gives_task_and_subject(tmp_path):
    (tmp_path / "r.csv").write_text("model,q1,q2,q3\nm1,1,0,1\nm2,0,1,1\n")
    (tmp_path / "items.json").write_text(
        json.dumps(
            [
                {"item": "q1", "task": "mmlu", "subject": "law"},
                {"item": "q2", "task": "mmlu", "subject": "math"},
                {"item": "q3", "task": "arc"},
            ]
        )
    )
    rm = read_responses(tmp_path / "r.csv", tmp_path / "items.json")
    assert rm.tasks == ("mmlu", "mmlu", "arc")
    assert rm.subjects == ("law", "math", None)
    assert rm.items_by_task() == {"mmlu": ["q1", "q2"], "arc": ["q3"]}


def test_uninformative_columns_are_listed_not_dropped(tmp_path):
    rm = ResponseMatrix(
        ("a", "b"), ("t/1", "t/2", "t/3"), ("t",) * 3, np.array([[1, 0, 1.0], [1, 1, 0.0]])
    )
    assert rm.uninformative() == ["t/1"]
    assert rm.values.shape == (2, 3)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model,q1\nm1,1\n", "has no TASK/ prefix"),
        ("name,t/q1\nm1,1\n", "first column must be 'model'"),
        ("model,t/q1,t/q2\nm1,1,yes\n", "non-numeric"),
        ("model,t/q1\nm1,2\n", "outside [0, 1]"),
        ("model,t/q1,t/q2\nm1,1,0\nm2,,\n", "model 'm2' has no responses"),
        ("model,t/q1,t/q1\nm1,1,0\n", "duplicate item"),
    ],
)
def test_bad_matrices_raise_one_clear_error(tmp_path, text, message):
    (tmp_path / "r.csv").write_text(text)
    with pytest.raises(DataError, match=message.replace("[", r"\[").replace("]", r"\]")):
        read_responses(tmp_path / "r.csv")


def test_missing_file_and_non_binary_for_binary_model(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_responses(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="is not 0/1"):
        _matrix().validate(binary=True)


def test_columns_names_the_missing_item():
    with pytest.raises(DataError, match="'t9/q' is not a column"):
        _matrix().columns(["t1/x", "t9/q"])
