"""Loaders: local files with a field mapping, HF datasets (offline json), lm-eval YAMLs, and
the adapters for the real sets in ../shared/data (counts, prompts, the fixed SentEval split)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from merge3.data import load_benchmark, load_items, sample_items
from merge3.data.hf import load_hf_items
from merge3.data.lm_eval_tasks import items_task_yaml, lm_eval_benchmark
from merge3.data.senteval import SPLIT_SEED
from merge3.errors import DataError

ROWS = [
    {"q": "2 plus 2 is", "opts": ["3", "4"], "gold": "B", "topic": "math"},
    {"q": "sky is", "opts": ["blue", "green"], "gold": 0, "topic": "nature"},
    {"q": "no answer here", "opts": ["a", "b"], "topic": "bad"},
    {"q": "out of range", "opts": ["a", "b"], "gold": "D", "topic": "bad"},
]
MAPPING = {"question": "q", "choices": "opts", "answer": "gold", "metadata": ["topic"]}


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_jsonl_csv_parquet_give_the_same_items_and_report_bad_rows(tmp_path):
    jsonl = _write(tmp_path / "t.jsonl", ROWS)
    flat = [
        {"q": r["q"], "a": r["opts"][0], "b": r["opts"][1], "gold": str(r.get("gold", ""))}
        for r in ROWS
    ]
    pd.DataFrame(flat).to_csv(tmp_path / "t.csv", index=False)
    pd.DataFrame(flat).to_parquet(tmp_path / "t.parquet")
    columns = {"question": "q", "choices": ["a", "b"], "answer": "gold"}
    a = load_items(jsonl, "t", MAPPING)
    b = load_items(tmp_path / "t.csv", "t", columns)
    c = load_items(tmp_path / "t.parquet", "t", columns)
    for task in (a, b, c):
        items = task.items()
        assert [(i.question, i.choices, i.answer) for i in items] == [
            ("2 plus 2 is", ("3", "4"), 1),
            ("sky is", ("blue", "green"), 0),
        ]
        assert [e.id for e in task.excluded] == ["2", "3"]
    assert a.items()[0].metadata == {"topic": "math"}
    assert "missing field 'gold'" in a.excluded[0].reason
    assert "outside the 2 choices" in a.excluded[1].reason
    with pytest.raises(DataError, match=r"t.jsonl:3: missing field 'gold'"):
        load_items(jsonl, "t", MAPPING, strict=True)


def test_file_errors_are_one_clear_line(tmp_path):
    with pytest.raises(DataError, match="item file not found"):
        load_items(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q"\n')
    with pytest.raises(DataError, match=r"bad.jsonl:1: not valid JSON"):
        load_items(bad)
    only_bad = _write(tmp_path / "none.jsonl", ROWS[2:])
    with pytest.raises(DataError, match="no usable items"):
        load_items(only_bad, fields=MAPPING)
    with pytest.raises(DataError, match="unknown field mapping"):
        load_items(only_bad, fields={"prompt": "q"})


def test_generative_rows_and_kind_guess(tmp_path):
    path = _write(
        tmp_path / "gen.jsonl",
        [{"question": "1+1?", "answer": "2"}, {"question": "2+2?", "answer": " 4 "}],
    )
    bench = load_benchmark(str(path))
    task = bench.tasks["gen"]
    assert task.kind == "generate" and [i.answer for i in task.items()] == ["2", "4"]


def test_hf_datasets_loader_on_a_local_json_dataset(tmp_path):
    path = _write(tmp_path / "t.jsonl", ROWS)
    task = load_hf_items("json", None, "train", "t", MAPPING, data_files=str(path))
    assert [i.answer for i in task.items("train")] == [1, 0]
    assert len(task.excluded) == 2
    with pytest.raises(DataError, match="cannot be loaded"):
        load_hf_items("json", None, "train", "t", MAPPING, data_files=str(tmp_path / "x.json"))


def test_lm_eval_yaml_with_local_json_roundtrips_items(tmp_path):
    path = _write(tmp_path / "t.jsonl", ROWS[:2])
    task = load_items(path, "toy", MAPPING)
    task.normalize = True
    spec = items_task_yaml(task, task.items(), tmp_path / "lm")
    back = lm_eval_benchmark(spec).tasks["merge3_toy"]
    assert [(i.prompt, i.choices, i.answer) for i in back.items()] == [
        (i.prompt, i.choices, i.answer) for i in task.items()
    ]
    assert [i.id for i in back.items()] == ["0", "1"]  # lm-eval document ids
    gen = load_items(
        _write(tmp_path / "g.jsonl", [{"question": "Q: 1+1?\nA:", "answer": "2"}]),
        "g",
        kind="generate",
    )
    gen_back = lm_eval_benchmark(items_task_yaml(gen, gen.items(), tmp_path / "g")).tasks
    (g,) = gen_back.values()
    assert g.kind == "generate" and g.items()[0].prompt == "Q: 1+1?\nA:"
    assert g.items()[0].answer == "2" and g.generation.extract == "last_number"
    with pytest.raises(DataError, match="YAML not found"):
        lm_eval_benchmark(str(tmp_path / "nope.yaml"))


def test_mmlu_adapter_matches_lm_eval_prompt_and_drops_header_rows():
    task = load_benchmark("mmlu").tasks["mmlu"]
    items = task.items("all")
    assert len(items) == 14042 and len(task.excluded) == 2
    first = items[0]
    assert first.context.startswith(
        "The following are multiple choice questions (with answers) about moral scenarios."
    )
    assert first.question.endswith("\nD. Not wrong, Not wrong\nAnswer:")
    assert first.choices == ("A", "B", "C", "D") and first.answer == 3
    search, test = task.items("search"), task.items("test")
    assert len(search) + len(test) == len(items)
    assert not {i.id for i in search} & {i.id for i in test}
    five = load_benchmark("mmlu", num_fewshot=5).tasks["mmlu"].items("all")
    assert len(five) == 14042 - 5 * 57
    assert five[0].context.count("\nAnswer: ") == 5


def test_gsm8k_mgsm_and_leaderboard_adapters():
    gsm = load_benchmark("gsm8k").tasks["gsm8k"]
    assert len(gsm.items()) == 1319 and gsm.items()[0].answer == "18"
    assert gsm.generation.extract == "gsm8k" and "Question:" in gsm.generation.until
    for lang in ("de", "zh", "sw"):
        mg = load_benchmark(f"mgsm-{lang}").tasks[f"mgsm-{lang}"]
        assert len(mg.items()) == 250 and mg.items()[0].metadata["language"] == lang
    sizes = {
        "arc": 145,
        "hellaswag": 93,
        "winogrande": 133,
        "truthfulqa": 154,
        "gsm8k": 237,
        "mmlu": 96,
    }
    for name, n in sizes.items():
        task = load_benchmark(f"leaderboard-{name}").tasks[f"leaderboard-{name}"]
        assert len(task.items()) == n and not task.excluded, name
    wino = load_benchmark("leaderboard-winogrande").tasks["leaderboard-winogrande"].items()[0]
    assert wino.contexts[0].endswith("but Patricia") and wino.contexts[1].endswith("but Felicia")
    arc25 = load_benchmark("leaderboard-arc", num_fewshot=25).tasks["leaderboard-arc"].items()[0]
    assert arc25.question.count("\nAnswer:") == 26
    with pytest.raises(DataError, match="unknown MGSM language"):
        load_benchmark("mgsm-xx")


def test_senteval_split_is_fixed_documented_and_reproducible():
    expected = {  # train / search / test sizes of the documented split
        "mr": (7463, 1066, 2133),
        "cr": (2639, 377, 755),
        "subj": (7000, 1000, 2000),
        "mpqa": (7422, 1060, 2121),
        "trec": (4906, 546, 500),
        "sst2": (6920, 872, 1821),
    }
    assert SPLIT_SEED == 20250605
    for name, sizes in expected.items():
        task = load_benchmark(f"senteval-{name}").tasks[f"senteval-{name}"]
        splits = [task.items(s) for s in ("train", "search", "test")]
        assert tuple(len(s) for s in splits) == sizes, name
        ids = [{i.id for i in s} for s in splits]
        assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
        again = load_benchmark(f"senteval-{name}").tasks[f"senteval-{name}"]
        assert [i.id for i in again.items("search")] == [i.id for i in splits[1]]
    mr = load_benchmark("senteval-mr").tasks["senteval-mr"]
    assert [i.id for i in mr.items("search")[:3]] == MR_SEARCH_HEAD
    assert mr.items("train")[0].choices == ("negative", "positive")


MR_SEARCH_HEAD = ["mr-rt-polarity.all-8", "mr-rt-polarity.all-25", "mr-rt-polarity.all-26"]


def test_item_sample_is_seeded_and_ordered():
    items = load_benchmark("leaderboard-mmlu").tasks["leaderboard-mmlu"].items()
    a, b = sample_items(items, 10, seed=1), sample_items(items, 10, seed=1)
    assert [i.id for i in a] == [i.id for i in b]
    assert [i.id for i in a] != [i.id for i in sample_items(items, 10, seed=2)]
    order = [items.index(i) for i in a]
    assert order == sorted(order)
    with pytest.raises(DataError, match="positive"):
        sample_items(items, 0)
