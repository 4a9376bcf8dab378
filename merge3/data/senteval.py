"""The six SentEval sentence-classification tasks, with a fixed, documented split.

Files (``senteval/`` in the bundled data; one ``LABEL TEXT`` example a line):
MR ``rt-polarity.all``, CR ``custrev.all``, SUBJ ``subj.all``, MPQA ``mpqa.all``,
TREC ``TREC.train.all`` + ``TREC.test.all``, SST-2 ``stsa.binary.{train,dev,test}``.

The split (``train`` fits the heads, ``search`` gives the anchors, ``test`` is held out):

* MR, CR, SUBJ, MPQA have no official split. Lines are permuted with
  ``numpy.random.default_rng(SPLIT_SEED)`` (``SPLIT_SEED = 20250605``); the first 70 % of the
  permutation (``floor(0.7 n)``) is ``train``, the next 10 % (``floor(0.1 n)``) ``search``, the
  rest ``test``. Items keep file order inside each split.
* TREC: ``TREC.test.all`` is ``test``; ``TREC.train.all`` is split 90/10 into ``train`` and
  ``search`` with the same seeded permutation rule.
* SST-2: ``stsa.binary.train`` / ``dev`` / ``test`` are ``train`` / ``search`` / ``test``.

Lines with no text (4 in CR, 3 in MPQA) are reported in ``excluded`` and left out before the
split. Item ids are ``TASK-FILE_NAME-LINE`` (0-based line in its file), so they never depend
on the split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from merge3.data.items import Excluded, Item
from merge3.data.tasks import Benchmark, Task
from merge3.errors import DataError

SPLIT_SEED = 20250605
LABELS = {
    "mr": ("negative", "positive"),
    "cr": ("negative", "positive"),
    "subj": ("subjective", "objective"),
    "mpqa": ("negative", "positive"),
    "trec": ("description", "entity", "abbreviation", "human", "location", "number"),
    "sst2": ("negative", "positive"),
}
_SINGLE_FILE = {
    "mr": "rt-polarity.all",
    "cr": "custrev.all",
    "subj": "subj.all",
    "mpqa": "mpqa.all",
}


def _read(path: Path, task: str, excluded: list[Excluded]) -> list[Item]:
    if not path.is_file():
        raise DataError(f"{path}: SentEval file not found")
    items = []
    n_labels = len(LABELS[task])
    raw = path.read_bytes().decode("utf-8", errors="replace")
    for n, line in enumerate(raw.splitlines()):
        item_id = f"{task}-{path.name}-{n}"
        label, _, text = line.strip().partition(" ")
        if not label.isdigit() or int(label) >= n_labels or not text.strip():
            excluded.append(Excluded(item_id, f"senteval-{task}", f"{path}:{n + 1}: bad line"))
            continue
        items.append(
            Item(
                item_id,
                f"senteval-{task}",
                text.strip(),
                LABELS[task],
                int(label),
                metadata={"file": path.name, "line": n},
            )
        )
    return items


def _cut(items: list[Item], fractions: tuple[float, ...]) -> list[list[Item]]:
    """Seeded permutation cut into consecutive parts; the last part takes the remainder."""
    perm = np.random.default_rng(SPLIT_SEED).permutation(len(items))
    part = np.full(len(items), len(fractions), int)
    start = 0
    for k, frac in enumerate(fractions):
        stop = start + int(np.floor(frac * len(items)))
        part[perm[start:stop]] = k
        start = stop
    return [
        [i for i, p in zip(items, part, strict=True) if p == k] for k in range(len(fractions) + 1)
    ]


def senteval(data: Path, task: str) -> Benchmark:
    """One SentEval task as ``senteval-TASK`` with ``train``/``search``/``test`` splits."""
    task = task.lower().replace("-", "")
    if task not in LABELS:
        raise DataError(f"unknown SentEval task {task!r} (known: {', '.join(LABELS)})")
    root = data / "senteval"
    excluded: list[Excluded] = []
    if task in _SINGLE_FILE:
        train, search, test = _cut(_read(root / _SINGLE_FILE[task], task, excluded), (0.7, 0.1))
    elif task == "trec":
        train, search = _cut(_read(root / "TREC.train.all", task, excluded), (0.9,))
        test = _read(root / "TREC.test.all", task, excluded)
    else:
        train, search, test = (
            _read(root / f"stsa.binary.{s}", task, excluded) for s in ("train", "dev", "test")
        )
    name = f"senteval-{task}"
    splits = {"train": train, "search": search, "test": test}
    return Benchmark(name, {name: Task(name, "classify", splits, " ", excluded=excluded)})
