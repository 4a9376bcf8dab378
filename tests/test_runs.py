"""Run directory: the candidate store, atomic files, and checkpoints that survive damage."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from merge3.errors import RunDirError
from merge3.runs import CandidateRow, CandidateStore, RunDir, atomic_write_text


def _row(generation: int, index: int) -> CandidateRow:
    return CandidateRow(
        generation=generation,
        index=index,
        genome=[0.1 * index, 1 / 3, 2.0**-40],
        recipe={"operator": "task_arithmetic", "params": {"weight": [0.1, 0.2], "lambda": 1.0}},
        objectives={"t1": 0.55, "t2": index / 7},
        anchor_correct={"t1": [1.0, 0.0, 1.0], "t2": [0.0]},
        estimates={"t1": 0.55, "t2": index / 7},
        timings={"merge_s": 0.01, "evaluate_s": 0.2},
    )


def test_store_round_trip_is_exact(tmp_path: Path):
    store = CandidateStore(tmp_path / "run.sqlite")
    rows = [_row(g, i) for g in range(2) for i in range(3)]
    for row in rows:
        store.add(row)
    store.close()
    # a second connection (another process after a crash) sees every committed row, bit-exact
    again = CandidateStore(tmp_path / "run.sqlite")
    assert len(again) == 6
    assert list(again) == rows
    assert again.get(1, 2) == rows[5]
    assert again.get(5, 0) is None
    mode = again._db.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_store_refuses_a_duplicate_candidate(tmp_path: Path):
    import sqlite3

    store = CandidateStore(tmp_path / "run.sqlite")
    store.add(_row(0, 0))
    with pytest.raises(sqlite3.IntegrityError):
        store.add(_row(0, 0))


def test_store_rejects_a_foreign_file(tmp_path: Path):
    path = tmp_path / "run.sqlite"
    path.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(RunDirError, match="run.sqlite: not a merge3 run database"):
        CandidateStore(path)


def test_checkpoints_newest_intact_one_wins(tmp_path: Path):
    run = RunDir(tmp_path / "run")
    run.create("name: x\n")
    run.save_checkpoint(1, {"generation": 1, "payload": list(range(10))})
    run.save_checkpoint(2, {"generation": 2})
    assert run.latest_checkpoint() == (2, {"generation": 2})

    # a half-written checkpoint (a temp file left by a kill during the write) is never read
    (run.checkpoint_dir / ".gen-0003.pkl.abc123.tmp").write_bytes(b"MERGE3CK\x01\x00")
    assert run.latest_checkpoint()[0] == 2

    # a truncated one that did get its final name is detected by the checksum and skipped
    good = (run.checkpoint_dir / "gen-0002.pkl").read_bytes()
    (run.checkpoint_dir / "gen-0003.pkl").write_bytes(good[: len(good) - 3])
    with pytest.warns(UserWarning, match="gen-0003.pkl: skipped"):
        assert run.latest_checkpoint() == (2, {"generation": 2})

    # a flipped byte in the payload is caught the same way
    damaged = bytearray(good)
    damaged[-1] ^= 0xFF
    (run.checkpoint_dir / "gen-0004.pkl").write_bytes(bytes(damaged))
    with pytest.warns(UserWarning, match="checksum mismatch"):
        assert run.latest_checkpoint()[0] == 2


def test_atomic_write_leaves_old_file_on_failure(tmp_path: Path, monkeypatch):
    target = tmp_path / "front.csv"
    atomic_write_text(target, "old\n")

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_text(target, "new\n")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["front.csv"]  # no temp file left


def test_create_refuses_existing_runs_and_foreign_folders(tmp_path: Path):
    run = RunDir(tmp_path / "run")
    run.create("a: 1\n")
    with pytest.raises(RunDirError, match="already holds a run"):
        run.create("a: 2\n")
    assert run.config_path.read_text() == "a: 1\n"
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="not empty"):
        RunDir(other).create("a: 1\n")
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]


def test_require_names_the_problem(tmp_path: Path):
    with pytest.raises(RunDirError, match="run directory not found"):
        RunDir(tmp_path / "nope").require()
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunDirError, match="no config.yaml"):
        RunDir(tmp_path / "empty").require()


class _Evil:
    """Unpickling this creates ``marker``: proof that a foreign pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_checkpoints_are_read_only_from_the_runs_own_folder(tmp_path: Path):
    from merge3.runs import _checkpoint_bytes

    run = RunDir(tmp_path / "run")
    run.create("name: x\n")
    run.save_checkpoint(1, {"generation": 1})
    marker = tmp_path / "PWNED"
    # a well-formed checkpoint (magic, version, checksum all right) that runs code if unpickled
    evil = tmp_path / "elsewhere" / "gen-0009.pkl"
    evil.parent.mkdir()
    evil.write_bytes(_checkpoint_bytes({"algorithm": _Evil(marker)}))

    with pytest.raises(RunDirError, match="refused, checkpoints are read only from"):
        run.read_checkpoint(evil)
    (run.checkpoint_dir / "gen-0009.pkl").symlink_to(evil)  # a link that points outside
    with pytest.raises(RunDirError, match="no symlinks"):
        run.read_checkpoint(run.checkpoint_dir / "gen-0009.pkl")
    with pytest.warns(UserWarning, match="gen-0009.pkl: skipped .*refused"):
        assert run.latest_checkpoint() == (1, {"generation": 1})

    # a whole checkpoints/ folder that is a link to somewhere else is refused as well
    (run.checkpoint_dir / "gen-0009.pkl").unlink()
    (run.checkpoint_dir / "gen-0001.pkl").rename(evil.parent / "gen-0001.pkl")
    run.checkpoint_dir.rmdir()
    run.checkpoint_dir.symlink_to(evil.parent)
    with pytest.warns(UserWarning, match="refused"):
        assert run.latest_checkpoint() is None
    assert not marker.exists()


def test_a_checkpoint_of_another_format_version_is_skipped(tmp_path: Path):
    from merge3.runs import CHECKPOINT_MAGIC

    run = RunDir(tmp_path / "run")
    run.create("name: x\n")
    run.save_checkpoint(1, {"generation": 1})
    data = (run.checkpoint_dir / "gen-0001.pkl").read_bytes()
    n = len(CHECKPOINT_MAGIC)
    future = data[:n] + (99).to_bytes(4, "little") + data[n + 4 :]
    (run.checkpoint_dir / "gen-0002.pkl").write_bytes(future)
    with pytest.warns(UserWarning, match="checkpoint format 99, expected 1"):
        assert run.latest_checkpoint() == (1, {"generation": 1})


def test_a_config_edited_since_the_run_started_is_refused(tmp_path: Path):
    import yaml

    config = {"search": {"population": 8, "generations": 3}, "evaluation": {"device": "cpu"}}
    run = RunDir(tmp_path / "run")
    run.create(yaml.safe_dump(config))
    assert run.require() is run

    # where and how long it runs may change on a resume ...
    edited = {"search": {"population": 8, "generations": 5}, "evaluation": {"device": "cuda"}}
    run.config_path.write_text(yaml.safe_dump(edited))
    run.require()
    # ... what it searches may not
    edited["search"]["population"] = 4
    run.config_path.write_text(yaml.safe_dump(edited))
    with pytest.raises(RunDirError, match=r"search.population changed since the run .*\(8 → 4\)"):
        run.require()
    edited["search"]["population"] = 8
    edited["merge"] = {"operator": "ties"}
    run.config_path.write_text(yaml.safe_dump(edited))
    with pytest.raises(RunDirError, match=r"merge.operator changed .*\('\(absent\)' → 'ties'\)"):
        run.require()


def test_a_kill_while_a_run_is_created_leaves_no_half_made_run(tmp_path: Path, monkeypatch):
    from merge3 import runs

    real = runs.atomic_write_text
    calls = []

    def die_on_the_config(path, text):
        calls.append(path.name)
        if path.name == "config.yaml":
            raise KeyboardInterrupt  # stands for a kill between the two files
        real(path, text)

    monkeypatch.setattr(runs, "atomic_write_text", die_on_the_config)
    run = RunDir(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        run.create("name: x\n")
    assert calls == [".config.frozen.json", "config.yaml"]
    assert list(tmp_path.iterdir()) == []  # neither the run nor its scaffold
    monkeypatch.undo()
    run.create("name: x\n")  # a new search can start there
    assert run.require().config_path.read_text() == "name: x\n"
    (tmp_path / "empty").mkdir()
    RunDir(tmp_path / "empty").create("name: y\n")  # an empty folder is filled in one step
    assert (tmp_path / "empty" / "checkpoints").is_dir()


def test_a_failed_insert_is_rolled_back_and_the_store_stays_usable(tmp_path: Path, monkeypatch):
    from merge3 import runs

    store = CandidateStore(tmp_path / "run.sqlite")
    store.add(_row(0, 0))

    def fail(moment):
        raise KeyboardInterrupt

    monkeypatch.setattr(runs, "pause_point", fail)
    with pytest.raises(KeyboardInterrupt):
        store.add(_row(0, 1))
    monkeypatch.undo()
    assert [r.index for r in store] == [0]
    store.add(_row(0, 1))
    with pytest.raises(Exception, match="UNIQUE"):
        store.add(_row(0, 1))
    store.add(_row(0, 2))  # no transaction was left open by the failure
    assert len(CandidateStore(tmp_path / "run.sqlite")) == 3
