"""MMLU's subject groups and a seeded, disjoint finetune / search / test split of each.

The subject → category map is the MMLU paper's (Hendrycks et al., 2021), as lm-eval-harness
encodes it for its ``mmlu_stem``, ``mmlu_humanities``, ``mmlu_social_sciences`` and
``mmlu_other`` groups (``lm_eval/tasks/mmlu/_generate_configs.py``). The demo makes one expert
per group of :data:`DEMO_GROUPS`; ``other`` (medicine, business, misc.: 13 subjects) is
excluded: it has no expert, and none of its items is trained on or evaluated.

The split, per subject (so every subject is represented in every part): items get a stable id
from their content (:func:`item_id`: the same on every machine and whichever source the jsonl
came from), are sorted by it, shuffled with ``numpy.random.default_rng(seed + subject index)``
and cut into :data:`FRACTIONS` (``finetune`` 40 %, ``search`` 30 %, ``test`` 30 %; rounding goes
to ``test``). An item whose content (question, choices, answer) appears more than once (MMLU
has ~100 such copies, 78 of them under two subjects) is kept once, under the alphabetically
first of its subjects, so no item reaches two parts (or two groups) through a copy of itself.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from merge3.data.adapters import LETTERS, mmlu_description, mmlu_question
from merge3.data.items import Item

_GROUP_SUBJECTS = {
    "stem": (
        "abstract_algebra anatomy astronomy college_biology college_chemistry "
        "college_computer_science college_mathematics college_physics computer_security "
        "conceptual_physics electrical_engineering elementary_mathematics high_school_biology "
        "high_school_chemistry high_school_computer_science high_school_mathematics "
        "high_school_physics high_school_statistics machine_learning"
    ),
    "humanities": (
        "formal_logic high_school_european_history high_school_us_history "
        "high_school_world_history international_law jurisprudence logical_fallacies "
        "moral_disputes moral_scenarios philosophy prehistory professional_law world_religions"
    ),
    "social_sciences": (
        "econometrics high_school_geography high_school_government_and_politics "
        "high_school_macroeconomics high_school_microeconomics high_school_psychology "
        "human_sexuality professional_psychology public_relations security_studies sociology "
        "us_foreign_policy"
    ),
    "other": (
        "business_ethics clinical_knowledge college_medicine global_facts human_aging "
        "management marketing medical_genetics miscellaneous nutrition professional_accounting "
        "professional_medicine virology"
    ),
}
SUBJECT_GROUP: dict[str, str] = {
    s: g for g, subjects in _GROUP_SUBJECTS.items() for s in subjects.split()
}
DEMO_GROUPS = ("stem", "humanities", "social_sciences")
PARTS = ("finetune", "search", "test")
FRACTIONS = {"finetune": 0.4, "search": 0.3, "test": 0.3}


def group_of(topic: str) -> str:
    """The category of a subject, written with spaces (jsonl) or underscores (lm-eval)."""
    return SUBJECT_GROUP[topic.strip().replace(" ", "_")]


def item_id(row: dict) -> str:
    """A content id: the same item has the same id on every machine and from every source."""
    key = [row["question"].strip()] + [str(row[f"answer_{x}"]).strip() for x in "abcd"]
    key.append(row["correct_answer"])
    return "mmlu-" + hashlib.sha1(json.dumps(key).encode()).hexdigest()[:16]


def to_item(row: dict, group: str) -> Item:
    """An item in lm-eval's 0-shot MMLU format (the ``mmlu`` adapter's prompt functions)."""
    subject = row["topic"].replace("_", " ")
    choices = [str(row[f"answer_{x}"]) for x in "abcd"]
    return Item(
        item_id(row),
        f"mmlu_{group}",
        mmlu_question(row["question"], choices),
        LETTERS,
        LETTERS.index(row["correct_answer"]),
        mmlu_description(subject),
        {"subject": subject, "group": group},
    )


def read_rows(jsonl: str | Path) -> list[dict]:
    """The rows of an MMLU jsonl with an A–D answer (the stray header rows dropped)."""
    with open(jsonl, encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    return [r for r in rows if r.get("correct_answer") in LETTERS]


def split_groups(
    jsonl: str | Path,
    seed: int = 0,
    groups: tuple[str, ...] = DEMO_GROUPS,
    fractions: dict[str, float] | None = None,
) -> dict[str, dict[str, list[Item]]]:
    """``{group: {part: items}}`` for ``groups``; parts are disjoint and seeded (module doc)."""
    fractions = dict(fractions or FRACTIONS)
    first: dict[str, tuple[str, dict]] = {}  # id -> (subject, row): copies kept once
    for row in read_rows(jsonl):
        subject = row["topic"].strip().replace(" ", "_")
        key = item_id(row)
        if subject in SUBJECT_GROUP and (key not in first or subject < first[key][0]):
            first[key] = (subject, row)
    by_subject: dict[str, dict[str, dict]] = defaultdict(dict)
    for key, (subject, row) in first.items():
        if SUBJECT_GROUP[subject] in groups:
            by_subject[subject][key] = row
    out = {g: {p: [] for p in PARTS} for g in groups}
    for index, subject in enumerate(sorted(SUBJECT_GROUP)):
        rows = by_subject.get(subject)
        if not rows:
            continue
        group = SUBJECT_GROUP[subject]
        ids = sorted(rows)
        order = np.random.default_rng(seed + index).permutation(len(ids))
        n_ft = round(fractions["finetune"] * len(ids))
        n_search = round(fractions["search"] * len(ids))
        cuts = {"finetune": (0, n_ft), "search": (n_ft, n_ft + n_search)}
        cuts["test"] = (n_ft + n_search, len(ids))
        for part, (lo, hi) in cuts.items():
            out[group][part] += [to_item(rows[ids[i]], group) for i in order[lo:hi]]
    for parts in out.values():
        for items in parts.values():
            items.sort(key=lambda it: it.id)
    return out
