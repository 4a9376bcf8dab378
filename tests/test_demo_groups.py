"""MMLU subject groups and the demo's seeded finetune / search / test split."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from merge3.data.adapters import mmlu
from merge3.demo.groups import (
    DEMO_GROUPS,
    FRACTIONS,
    PARTS,
    SUBJECT_GROUP,
    group_of,
    item_id,
    read_rows,
    split_groups,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
MMLU = SHARED / "mmlu" / "mmlu.jsonl"


@pytest.fixture(scope="module")
def split():
    return split_groups(MMLU)


def test_subject_map_is_mmlus():
    assert len(SUBJECT_GROUP) == 57
    assert Counter(SUBJECT_GROUP.values()) == {
        "stem": 19,
        "humanities": 13,
        "social_sciences": 12,
        "other": 13,
    }
    assert {group_of(r["topic"]) for r in read_rows(MMLU)} == set(SUBJECT_GROUP.values())
    assert group_of("high school us history") == group_of("high_school_us_history")


def test_parts_are_disjoint_and_cover_each_group(split):
    assert set(split) == set(DEMO_GROUPS)
    by_group: dict[str, set[str]] = {g: set() for g in DEMO_GROUPS}
    for row in read_rows(MMLU):
        if group_of(row["topic"]) in DEMO_GROUPS:
            by_group[group_of(row["topic"])].add(item_id(row))
    seen: set[str] = set()
    for group, parts in split.items():
        ids = [it.id for p in PARTS for it in parts[p]]
        assert len(ids) == len(set(ids))  # disjoint parts
        assert not seen & set(ids)  # disjoint groups
        seen |= set(ids)
        # every item of the group is in one part (copies under two subjects count once)
        assert set(ids) <= by_group[group] and len(ids) >= len(by_group[group]) - 40
        assert all(it.task == f"mmlu_{group}" for p in PARTS for it in parts[p])
    assert not any(
        SUBJECT_GROUP[t.metadata["subject"].replace(" ", "_")] == "other"
        for parts in split.values()
        for p in PARTS
        for t in parts[p]
    )


def test_proportions_per_subject(split):
    for parts in split.values():
        counts = {p: Counter(it.metadata["subject"] for it in parts[p]) for p in PARTS}
        for subject in counts["finetune"]:
            total = sum(counts[p][subject] for p in PARTS)
            for part in PARTS:
                assert abs(counts[part][subject] - FRACTIONS[part] * total) <= 1.0


def test_split_is_reproducible_and_independent_of_row_order(split, tmp_path):
    lines = MMLU.read_text().splitlines()
    random.Random(3).shuffle(lines)
    shuffled = tmp_path / "mmlu.jsonl"
    shuffled.write_text("\n".join(lines) + "\n")
    again = split_groups(shuffled)
    for g in DEMO_GROUPS:
        for p in PARTS:
            assert [it.id for it in again[g][p]] == [it.id for it in split[g][p]]
    other = split_groups(MMLU, seed=1, groups=("stem",))
    assert {it.id for it in other["stem"]["test"]} != {it.id for it in split["stem"]["test"]}


def test_items_use_the_mmlu_adapters_prompt(split):
    adapter = {it.prompt: it.answer for it in mmlu(SHARED).tasks["mmlu"].splits["all"]}
    items = split["humanities"]["test"][:50]
    assert all(adapter[it.prompt] == it.answer for it in items)
    assert items[0].choices == ("A", "B", "C", "D")
    row = json.loads(MMLU.read_text().splitlines()[5])
    assert item_id(row) == item_id({**row, "topic": "another subject"})  # content, not source
