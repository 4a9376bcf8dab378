"""A run directory: the resolved config, a SQLite store of every evaluation, checkpoints, front.

Layout (see DESIGN.md)::

    RUN_DIR/config.yaml            resolved config, every default written out
    RUN_DIR/anchors.json           the anchors the run evaluates on
    RUN_DIR/run.sqlite             one row per evaluated candidate (WAL, committed at once)
    RUN_DIR/checkpoints/gen-0007.pkl   optimiser state after generation 7
    RUN_DIR/front.csv              the current Pareto front

Every file that is replaced is written to a temporary file and renamed into place, so a reader
(or a resume after SIGKILL) only ever sees a complete file. Checkpoints also carry a format
version and a SHA-256 of their payload: a truncated or corrupt one is skipped in favour of the
previous one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dill
import numpy as np

from merge3.errors import RunDirError

CHECKPOINT_MAGIC = b"MERGE3CK"
CHECKPOINT_FORMAT = 1
FROZEN_CONFIG = ".config.frozen.json"
"""The resolved config as the run started (JSON), to catch a config.yaml edited since."""
RESUMABLE_KEYS = (
    "name",
    "search.generations",
    "search.executor",
    "search.workers",
    "search.address",
    "search.max_retries",
    "search.max_consecutive_failures",
    "evaluation.device",
    "evaluation.batch_size",
    "final",
)
"""Settings a resume may change: where and how long it runs, not what it searches."""

_PAUSE_ENV = "MERGE3_TEST_PAUSE_AT"
_pauses: dict[str, int] = {}


def pause_point(moment: str) -> None:
    """Test hook of the kill harness (tests/test_kill_harness.py); a no-op unless
    ``$MERGE3_TEST_PAUSE_AT`` is ``MOMENT:N``. Then the N-th time the process reaches ``moment``
    (``db-write``: a row inserted, its transaction not yet committed; ``checkpoint-write`` and
    ``file-write``: half of the temporary file written) it creates ``$MERGE3_TEST_PAUSE_FILE``
    and sleeps, so that the harness can SIGKILL it exactly there."""
    spec = os.environ.get(_PAUSE_ENV)
    if not spec:
        return
    name, _, nth = spec.partition(":")
    if name != moment:
        return
    _pauses[moment] = _pauses.get(moment, 0) + 1
    if _pauses[moment] == int(nth or 1):
        flag = Path(os.environ["MERGE3_TEST_PAUSE_FILE"])
        flag.with_suffix(".tmp").write_text(f"{moment}:{_pauses[moment]}\n")
        flag.with_suffix(".tmp").rename(flag)  # appears complete
        time.sleep(3600)


def atomic_write_bytes(path: Path, data: bytes, moment: str = "file-write") -> None:
    """Write ``data`` to ``path`` so that ``path`` is either the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide run files from collaborators
        with os.fdopen(fd, "wb") as fh:
            half = len(data) // 2
            fh.write(data[:half])
            fh.flush()
            pause_point(moment)  # a kill here leaves a half-written temporary file
            fh.write(data[half:])
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@dataclass(frozen=True)
class CandidateRow:
    """One evaluated candidate, as stored."""

    generation: int
    index: int
    genome: list[float]
    recipe: dict
    objectives: dict[str, float]
    anchor_correct: dict[str, list[float]]
    estimates: dict[str, float]
    timings: dict[str, float]
    error: str | None = None
    """Why the candidate failed (merge, NaN weights, out of memory, evaluator); its objectives
    are then the worst fitness and it is never on the front."""

    @property
    def failed(self) -> bool:
        return self.error is not None


_COLUMNS = "generation, idx, genome, recipe, objectives, anchor_correct, estimates, timings, error"


class CandidateStore:
    """SQLite table of evaluated candidates, keyed by (generation, index in generation)."""

    _SCHEMA = """
    CREATE TABLE IF NOT EXISTS candidates (
        generation INTEGER NOT NULL,
        idx INTEGER NOT NULL,
        genome TEXT NOT NULL,
        recipe TEXT NOT NULL,
        objectives TEXT NOT NULL,
        anchor_correct TEXT NOT NULL,
        estimates TEXT NOT NULL,
        timings TEXT NOT NULL,
        created REAL NOT NULL DEFAULT (julianday('now')),
        error TEXT,
        PRIMARY KEY (generation, idx)
    );
    CREATE INDEX IF NOT EXISTS candidates_by_recipe ON candidates (recipe);
    CREATE TABLE IF NOT EXISTS reference (
        name TEXT PRIMARY KEY,
        correct TEXT NOT NULL,
        seconds REAL NOT NULL
    );
    CREATE TABLE IF NOT EXISTS final (
        generation INTEGER NOT NULL,
        idx INTEGER NOT NULL,
        test_accuracy TEXT NOT NULL,
        timings TEXT NOT NULL,
        PRIMARY KEY (generation, idx)
    )"""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._db = sqlite3.connect(str(path), isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(self._SCHEMA)
            self._migrate()
        except sqlite3.DatabaseError as exc:
            if getattr(self, "_db", None) is not None:
                self._db.close()  # leaves no -wal/-shm file behind
            raise RunDirError(f"{path}: not a merge3 run database ({exc})") from None

    def _migrate(self) -> None:
        """Bring a database written by an older merge3 up to this schema (columns only added)."""
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(candidates)")}
        if "error" not in columns:  # before failed candidates were recorded
            self._db.execute("ALTER TABLE candidates ADD COLUMN error TEXT")

    def forget_failure(self, generation: int, index: int) -> None:
        """Delete a failed candidate's row so that it is evaluated again (a resume retries the
        failures of a generation the optimiser has not been told yet)."""
        self._db.execute(
            "DELETE FROM candidates WHERE generation = ? AND idx = ? AND error IS NOT NULL",
            (generation, index),
        )

    def add(self, row: CandidateRow) -> None:
        """Insert one candidate and commit it at once, in a transaction of its own."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._insert(row)
            pause_point("db-write")  # a kill here: the row is not committed, so not stored
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def _insert(self, row: CandidateRow) -> None:
        self._db.execute(
            f"INSERT INTO candidates ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                row.generation,
                row.index,
                json.dumps(row.genome),
                json.dumps(row.recipe),
                json.dumps(row.objectives),
                json.dumps(row.anchor_correct),
                json.dumps(row.estimates),
                json.dumps(row.timings),
                row.error,
            ),
        )

    def get(self, generation: int, index: int) -> CandidateRow | None:
        cur = self._db.execute(
            f"SELECT {_COLUMNS} FROM candidates WHERE generation = ? AND idx = ?",
            (generation, index),
        )
        found = cur.fetchone()
        return self._row(found) if found else None

    def add_reference(self, name: str, correct: list[float], seconds: float) -> None:
        """Full search-split correctness of one reference model (for fitting IRT)."""
        self._db.execute(
            "INSERT INTO reference (name, correct, seconds) VALUES (?, ?, ?)",
            (name, json.dumps(correct), seconds),
        )

    def references(self) -> dict[str, tuple[list[float], float]]:
        cur = self._db.execute("SELECT name, correct, seconds FROM reference")
        return {n: (json.loads(c), s) for n, c, s in cur.fetchall()}

    def add_final(self, generation: int, index: int, accuracy: dict, timings: dict) -> None:
        """Store a candidate's true accuracy on the held-out test split (committed at once)."""
        self._db.execute(
            "INSERT INTO final (generation, idx, test_accuracy, timings) VALUES (?, ?, ?, ?)",
            (generation, index, json.dumps(accuracy), json.dumps(timings)),
        )

    def finals(self) -> dict[tuple[int, int], dict[str, float]]:
        """Test accuracy per task of every candidate evaluated after the search."""
        cur = self._db.execute("SELECT generation, idx, test_accuracy FROM final")
        return {(g, i): json.loads(acc) for g, i, acc in cur.fetchall()}

    def find_recipe(self, recipe: dict) -> CandidateRow | None:
        """The first stored candidate with exactly this recipe (genomes on a grid repeat);
        failed ones are not reused, so that a transient failure is tried again."""
        cur = self._db.execute(
            f"SELECT {_COLUMNS} FROM candidates WHERE recipe = ? AND error IS NULL "
            "ORDER BY generation, idx LIMIT 1",
            (json.dumps(recipe),),
        )
        found = cur.fetchone()
        return self._row(found) if found else None

    def __iter__(self) -> Iterator[CandidateRow]:
        cur = self._db.execute(f"SELECT {_COLUMNS} FROM candidates ORDER BY generation, idx")
        return (self._row(r) for r in cur.fetchall())

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM candidates").fetchone()[0]

    @staticmethod
    def _row(r: tuple) -> CandidateRow:
        return CandidateRow(r[0], r[1], *(json.loads(x) for x in r[2:8]), error=r[8])

    def close(self) -> None:
        self._db.close()


def _checkpoint_bytes(state: Any) -> bytes:
    # dill, as pymoo's checkpoint docs advise: pymoo's operators hold decorated local functions
    # that the standard pickle cannot serialise.
    payload = dill.dumps(state, protocol=dill.HIGHEST_PROTOCOL)
    header = CHECKPOINT_MAGIC + CHECKPOINT_FORMAT.to_bytes(4, "little")
    return header + hashlib.sha256(payload).digest() + payload


def _read_checkpoint(path: Path) -> Any:
    """Unpickle a checkpoint of this run after checking magic, format and checksum."""
    data = path.read_bytes()
    head = len(CHECKPOINT_MAGIC)
    if len(data) < head + 36 or data[:head] != CHECKPOINT_MAGIC:
        raise ValueError("not a merge3 checkpoint")
    version = int.from_bytes(data[head : head + 4], "little")
    if version != CHECKPOINT_FORMAT:
        raise ValueError(f"checkpoint format {version}, expected {CHECKPOINT_FORMAT}")
    digest, payload = data[head + 4 : head + 36], data[head + 36 :]
    if hashlib.sha256(payload).digest() != digest:
        raise ValueError("checksum mismatch (truncated or corrupt)")
    return dill.loads(payload)  # only files of this run's own directory are read


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}``; lists and scalars are leaves."""
    if not isinstance(data, dict):
        return {prefix: data} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in data.items():
        child = f"{prefix}.{key}" if prefix else str(key)
        out.update(_flatten(value, child) if value != {} else {child: {}})
    return out


def _short_repr(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class RunDir:
    """Paths and file formats of one run directory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def anchors_path(self) -> Path:
        return self.path / "anchors.json"

    @property
    def db_path(self) -> Path:
        return self.path / "run.sqlite"

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def front_path(self) -> Path:
        return self.path / "front.csv"

    @property
    def irt_dir(self) -> Path:
        return self.path / "irt"

    def exists(self) -> bool:
        return self.config_path.is_file()

    def require(self) -> RunDir:
        """Fail clearly when ``path`` is not a run directory (or its config was edited)."""
        if not self.path.is_dir():
            raise RunDirError(f"{self.path}: run directory not found")
        if not self.config_path.is_file():
            raise RunDirError(f"{self.path}: not a merge3 run directory (no config.yaml)")
        self.check_config_unchanged()
        return self

    def check_new(self) -> None:
        """Refuse a folder that holds a run or anything else: a new run never overwrites."""
        if self.exists():
            raise RunDirError(
                f"{self.path}: already holds a run; "
                f"use `merge3 resume {self.path}` or another --run-dir"
            )
        if self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
            raise RunDirError(f"{self.path}: exists and is not empty; choose another --run-dir")

    def create(self, config_yaml: str) -> None:
        """Start a new run in an empty or absent folder.

        The folder is assembled beside its final place and renamed there, so a kill during
        creation leaves no half-made run that neither ``search`` nor ``resume`` would accept.
        """
        import yaml

        self.check_new()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(
            tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        )
        try:
            tmp.chmod(0o755)
            (tmp / self.checkpoint_dir.name).mkdir()
            frozen = json.dumps(yaml.safe_load(config_yaml), indent=1, sort_keys=True)
            atomic_write_text(tmp / FROZEN_CONFIG, frozen)
            atomic_write_text(tmp / self.config_path.name, config_yaml)
            os.replace(tmp, self.path)  # over an absent or empty folder, in one step
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def check_config_unchanged(self) -> None:
        """Refuse a config.yaml whose search settings were edited since the run started."""
        import yaml

        frozen_path = self.path / FROZEN_CONFIG
        if not frozen_path.is_file():
            return  # a run from before the frozen copy existed
        try:
            frozen = json.loads(frozen_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise RunDirError(f"{frozen_path}: damaged (not JSON)") from None
        try:
            now = yaml.safe_load(self.config_path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError):
            return  # load_config names the problem
        old, new = _flatten(frozen), _flatten(now)
        for key in sorted(old.keys() | new.keys()):
            resumable = any(key == k or key.startswith(k + ".") for k in RESUMABLE_KEYS)
            if not resumable and old.get(key, "(absent)") != new.get(key, "(absent)"):
                before, after = (_short_repr(d.get(key, "(absent)")) for d in (old, new))
                raise RunDirError(
                    f"{self.config_path}: {key} changed since the run started ({before} → "
                    f"{after}); a resume continues the run as configured: undo the edit or "
                    "start a new run elsewhere"
                )

    def store(self) -> CandidateStore:
        return CandidateStore(self.db_path)

    def remove_leftovers(self) -> list[Path]:
        """Delete what interrupted writes left: temporary files of atomic writes (``.NAME.*.tmp``)
        and half-exported model folders (``.best-*``). Nothing else is read from them; a run
        that continues calls this once it has taken the directory over."""
        found = [
            *self.path.glob(".*.tmp"),
            *self.checkpoint_dir.glob(".*.tmp"),
            *(p for p in self.path.glob(".best-*") if p.is_dir() and not p.is_symlink()),
        ]
        for path in found:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        return found

    def save_checkpoint(self, generation: int, state: Any) -> Path:
        path = self.checkpoint_dir / f"gen-{generation:04d}.pkl"
        atomic_write_bytes(path, _checkpoint_bytes(state), moment="checkpoint-write")
        return path

    def checkpoints(self) -> list[Path]:
        """Checkpoint files, newest generation first (temporary files never match)."""
        return sorted(self.checkpoint_dir.glob("gen-[0-9][0-9][0-9][0-9].pkl"), reverse=True)

    def read_checkpoint(self, path: str | Path) -> Any:
        """Unpickle one checkpoint, only if it is a plain file of this run's ``checkpoints/``
        (no symlink, nothing from elsewhere) and passes the magic, format and checksum checks."""
        path = Path(path)
        folder = self.checkpoint_dir
        own = (
            not folder.is_symlink()
            and not path.is_symlink()
            and path.is_file()
            and folder.resolve().parent == self.path.resolve()
            and path.resolve().parent == folder.resolve()
        )
        if not own:
            raise RunDirError(
                f"{path}: refused, checkpoints are read only from {folder} (no symlinks)"
            )
        return _read_checkpoint(path)

    def latest_checkpoint(self) -> tuple[int, Any] | None:
        """The newest checkpoint that reads back intact, with its generation; else ``None``."""
        for path in self.checkpoints():
            try:
                return int(path.stem.split("-")[1]), self.read_checkpoint(path)
            except Exception as exc:  # a damaged checkpoint must never stop a resume
                warnings.warn(f"{path}: skipped ({exc})", stacklevel=2)
        return None


class Run:
    """A run directory opened for reading: config, every candidate, the front (for notebooks)."""

    def __init__(self, run_dir: RunDir) -> None:
        from merge3.config import load_config

        self.dir = run_dir
        self.config = load_config(run_dir.config_path)
        self.objectives = self.config.objective_names
        self.rows: list[CandidateRow] = []
        self.test_accuracy: dict[tuple[int, int], dict[str, float]] = {}
        if run_dir.db_path.is_file():
            store = run_dir.store()
            self.rows = list(store)
            self.test_accuracy = store.finals()
            store.close()

    @property
    def n_candidates(self) -> int:
        return len(self.rows)

    def gene_names(self) -> list[str]:
        from merge3.evolve.genome import GenomeSpace

        return GenomeSpace.from_config(self.config).names

    def front_rows(self) -> list[CandidateRow]:
        from merge3.analysis import front_of

        return front_of(self.rows, self.objectives)

    def failed_rows(self) -> list[CandidateRow]:
        """Candidates whose merge or evaluation raised (never on the front)."""
        return [r for r in self.rows if r.failed]

    def evaluations(self):
        """Every evaluated candidate as a DataFrame: genes, objectives, estimates, timings, and
        an ``error`` column when some candidate failed (its objectives are the worst, 0)."""
        import pandas as pd

        genes = self.gene_names()
        records = []
        for r in self.rows:
            rec: dict[str, Any] = {"generation": r.generation, "index": r.index}
            rec.update(dict(zip(genes, r.genome, strict=True)))
            rec.update(r.objectives)
            rec.update(
                {f"estimate/{k}": v for k, v in r.estimates.items() if k not in r.objectives}
            )
            rec.update(r.timings)
            test = self.test_accuracy.get((r.generation, r.index), {})
            rec.update({f"test/{k}": v for k, v in test.items()})
            if r.failed:
                rec["error"] = r.error
            records.append(rec)
        if not records:
            return pd.DataFrame(columns=["generation", "index", *genes, *self.objectives])
        return pd.DataFrame.from_records(records)

    def front(self):
        """The Pareto front as a DataFrame (same columns as :meth:`evaluations`)."""
        df = self.evaluations()
        keep = {(r.generation, r.index) for r in self.front_rows()}
        mask = [(g, i) in keep for g, i in zip(df["generation"], df["index"], strict=True)]
        return df[mask].reset_index(drop=True)

    def hypervolume(self):
        """Hypervolume of everything evaluated up to each generation (a pandas Series).

        It never decreases; a flat tail says the search has stopped finding better trade-offs.
        """
        import pandas as pd

        from merge3.analysis import hypervolume

        values = np.array([[r.objectives[n] for n in self.objectives] for r in self.rows])
        gens = np.array([r.generation for r in self.rows])
        ok = np.array([not r.failed for r in self.rows], dtype=bool)
        index = sorted(set(gens.tolist()))
        hv = [hypervolume(values[(gens <= g) & ok]) for g in index]
        return pd.Series(hv, index=pd.Index(index, name="generation"), name="hypervolume")

    def plot_front(self, ax=None):
        """Scatter of every candidate with the front highlighted (matplotlib Axes)."""
        from merge3.analysis import plot_front

        return plot_front(self.rows, self.front_rows(), self.objectives, ax=ax)

    def plot_progress(self, ax=None):
        """Best value of each objective and the hypervolume, per generation."""
        from merge3.analysis import plot_progress

        return plot_progress(self.evaluations(), self.hypervolume(), self.objectives, ax=ax)


def load_run(path: str | Path) -> Run:
    """Open a run directory for reading (``merge3 front`` and notebooks use this)."""
    return Run(RunDir(path).require())
