"""benchmarks/summary.py: rows from results JSONs, the markdown table and the README section.

Synthetic dicts shaped like the real results files; nothing here runs a benchmark, and the
README tests work on a copy in tmp_path.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


summary = _load("summary")
machine = _load("machine")


def merge_speed_json() -> dict:
    def op(merge3: float, limit: float) -> dict:
        return {
            "median_s": merge3,
            "times_s": [merge3] * 7,
            "limit_median_s": limit,
            "ratio_vs_limit": merge3 / limit,
            "prepare_s": 1.5,
        }

    return {
        "operators": {
            "task_arithmetic": {
                "merge3": op(0.1, 0.08),
                "mergekit": {"median_s": 1.6, "merge3_paired_median_s": 0.1, "times_s": [1.6]},
                "mergekit_over_merge3": 16.0,
                "mergekit_over_merge3_unpaired": 16.5,
            },
            "ties": {
                "merge3": op(0.4, 0.1),
                "mergekit": {"median_s": 70.0, "merge3_paired_median_s": 0.35},
                "mergekit_over_merge3": 200.0,
            },
            "tsv": {"merge3": op(0.1, 0.08), "mergekit": None},
        },
        "setup": {"reps": 7, "mergekit_reps": 3, "dtype": "float32"},
    }


def eval_speed_json() -> dict:
    return {
        "reps": 3,
        "zero_shot": {
            "items": 50,
            "items_per_s": {"builtin": 3.6, "lm_eval": 2.4},
            "ratio_builtin_vs_lm_eval": 1.5,
            "ratio_builtin_vs_lm_eval_with_setup": 1.57,
            "agreement": 1.0,
        },
        "five_shot": {
            "items": 40,
            "mean_prompt_tokens": 405.0,
            "items_per_s": {
                "builtin_prefix_reuse": 2.88,
                "builtin_no_reuse": 0.89,
                "lm_eval": 0.69,
            },
            "ratio_prefix_reuse": 3.23,
            "ratio_builtin_vs_lm_eval": 4.19,
            "agreement_reuse_vs_no_reuse": 1.0,
            "agreement_reuse_vs_lm_eval": 1.0,
        },
    }


def irt_speed_json() -> dict:
    return {
        "models": 200,
        "items": 4000,
        "reps": 3,
        "merge3_fit_s": 10.0,
        "merge3_heldout_ll": -0.54,
        "truth_heldout_ll": -0.535,
        "pyirt_fit_s": 300.0,
        "pyirt_epochs": 2000,
        "pyirt_heldout_ll": -0.541,
        "speedup": 30.0,
        "speedup_cpu": 25.0,
    }


def by_comparison(rows: list[dict], text: str) -> dict:
    (row,) = [r for r in rows if text in r["comparison"]]
    return row


def test_merge_speed_rows_orientation_and_targets():
    rows = summary.rows_for("merge_speed", merge_speed_json())
    assert {r["benchmark"] for r in rows} == {"merge_speed"}
    limit = by_comparison(rows, "task_arithmetic float32: (a) merge3")
    # merge3 slower than the limit (1.25×) still meets "≤ 3×"; > 1 would mean faster
    assert limit["ratio"] == pytest.approx(0.8) and limit["target"] == pytest.approx(1 / 3)
    assert limit["met"] is True and limit["target_text"] == "≤ 3× the limit"
    ties_limit = by_comparison(rows, "ties float32: (a) merge3")
    assert ties_limit["ratio"] == pytest.approx(0.25)  # (a)/(c) = 4 > 3
    assert ties_limit["met"] is False and ties_limit["ratio_text"] == "(a)/(c) = 4.00"
    mk = by_comparison(rows, "task_arithmetic float32: merge3 vs (b) mergekit")
    assert (mk["merge3"], mk["alternative"], mk["ratio"], mk["target"]) == (0.1, 1.6, 16.0, 30)
    assert mk["met"] is False and mk["target_text"] == "≥ 30×"
    assert "paired medians of 3" in mk["note"]
    assert by_comparison(rows, "ties float32: merge3 vs (b) mergekit")["met"] is True
    tsv = by_comparison(rows, "tsv float32: merge3 vs (b) mergekit")
    assert tsv["ratio"] is None and tsv["met"] is None and "no tsv" in tsv["note"]
    assert "median of 7" in limit["note"]


def test_eval_and_irt_rows():
    rows = summary.rows_for("eval_speed", eval_speed_json())
    zero = by_comparison(rows, "0-shot")
    assert zero["unit"] == "items/s" and zero["target"] == 5 and zero["met"] is False
    reuse = by_comparison(rows, "prefix KV reuse vs none")
    assert reuse["ratio"] == pytest.approx(3.23) and reuse["met"] is True
    assert by_comparison(rows, "(reuse) vs lm-eval")["target"] is None
    (irt,) = summary.rows_for("irt_speed", irt_speed_json())
    assert irt["ratio"] == 30.0 and irt["target"] is None and irt["met"] is None
    assert "-0.5400" in irt["note"] and "-0.5410" in irt["note"]
    assert "median of 3 alternated" in irt["note"]
    no_pyirt = {k: v for k, v in irt_speed_json().items() if not k.startswith(("pyirt", "spee"))}
    (row,) = summary.rows_for("irt_speed", no_pyirt)
    assert row["alternative"] is None and "py-irt not run" in row["note"]


def test_summary_list_is_used_verbatim():
    rows = [{"benchmark": "e2e_mergenetic", "comparison": "c", "ratio": 7.0, "extra": 1}]
    assert summary.rows_for("e2e_mergenetic", {"summary": rows, "other": 3}) == rows
    assert summary.rows_for("merge_speed", {"summary": []}) == []
    (row,) = summary.rows_for("e2e_mergenetic", {"no": "summary"})
    assert "no top-level summary" in row["note"]


def test_missing_or_broken_file_gives_a_note_row(tmp_path: Path):
    (row,) = summary.rows_from_file("e2e_mergenetic", tmp_path / "e2e_mergenetic.json")
    assert row["note"] == "not run: no e2e_mergenetic.json" and row["ratio"] is None
    (tmp_path / "irt_speed.json").write_text(json.dumps({"models": 1}))
    (row,) = summary.rows_from_file("irt_speed", tmp_path / "irt_speed.json")
    assert row["note"].startswith("unreadable irt_speed.json")
    (tmp_path / "eval_speed.json").write_text(json.dumps(eval_speed_json()))
    rows = summary.collect(tmp_path, ["eval_speed", "merge_7b"])
    assert len(rows) == 4 and rows[-1]["note"] == "not run: no merge_7b.json"


def test_provenance_of_results_files(tmp_path: Path):
    data = merge_speed_json()
    data["setup"].update(date="2026-12-04 23:11:37 UTC", load_avg_1_5_15_before=[3.67, 4, 4])
    data["setup"]["load_avg_1_5_15_after"] = [3.78, 4, 4]
    (tmp_path / "merge_speed.json").write_text(json.dumps(data))
    (tmp_path / "eval_speed.json").write_text(json.dumps({"load_average": 1.34}))
    assert summary.sources(tmp_path) == [
        "merge_speed 2026-12-04 23:11:37 UTC, load 3.7→3.8",
        "eval_speed date not recorded, load 1.3",
    ]
    text = summary.render_table([], {"loadavg_1_5_15": [0.5, 0.5, 0.5]}, None, ["x y"])
    assert "**Results files** (1-min load average): x y." in text


def test_render_table_machine_line_and_missed_marker():
    rows = summary.rows_for("merge_speed", merge_speed_json())
    m = machine.describe()
    assert {"cpu_model", "nproc", "ram_gib", "gpu", "torch", "python", "utc"} <= set(m)
    assert len(m["loadavg_1_5_15"]) == 3
    m["end"] = {"loadavg_1_5_15": [1.0, 2.0, 3.0], "utc": "later"}
    text = summary.render_table(rows, m, {"merge_speed": {"status": "ok", "wall_s": 12.0}})
    assert f"**Machine**: {m['cpu_model']}, {m['nproc']} cores" in text
    assert "1.00/2.00/3.00 at later (end)" in text and "merge_speed ok (12 s)" in text
    assert (
        "| benchmark | comparison | merge3 | alternative | ratio | target | met? | note |" in text
    )
    assert "**missed: 16× of ≥ 30× (by 1.88×)**" in text
    assert "**missed: (a)/(c) = 4.00 of ≤ 3× the limit (by 1.33×)**" in text
    assert text.count("| met |") == 3  # task_arithmetic and tsv limits, ties vs mergekit
    low = summary.make_row("b", "c", 0.5, 0.1, "s", 0.2, 1 / 3, "≤ 3× the limit", "", "(a)/(c) 5")
    assert "**missed: (a)/(c) 5 of ≤ 3× the limit (by 1.67×)**" in summary.render_table([low], m)


def test_write_readme_inserts_then_replaces_only_between_markers(tmp_path: Path):
    readme = tmp_path / "README.md"
    shutil.copy(summary.README, readme)
    original = readme.read_text()
    if summary.START in original:  # start from the hand-written file
        head, rest = original.split(summary.START, 1)
        original = head.rstrip("\n") + "\n\n" + rest.split(summary.END, 1)[1].lstrip("\n")
        readme.write_text(original)
    summary.write_readme("first table", readme)
    text = readme.read_text()
    assert text.startswith("# Benchmarks\n\n" + summary.START + "\n" + summary.HEADING)
    assert "first table" in text and text.count(summary.START) == 1
    outside = text.split(summary.START)[0] + text.split(summary.END)[1]
    assert outside.replace("\n", "") == original.replace("\n", "")
    summary.write_readme("second table", readme)
    again = readme.read_text()
    assert "second table" in again and "first table" not in again
    assert again.split(summary.START)[0] + again.split(summary.END)[1] == (
        text.split(summary.START)[0] + text.split(summary.END)[1]
    )
    bare = tmp_path / "bare.md"
    bare.write_text("intro\n")
    summary.write_readme("t", bare)
    assert bare.read_text().startswith(summary.START) and bare.read_text().endswith("intro\n")


def test_run_all_quick_commands_stay_out_of_results_and_failures_are_rows(tmp_path: Path):
    run_all = _load("run_all")
    for bench in run_all.BENCHES:
        argv = run_all.command(bench, tmp_path, quick=True)
        if argv is not None:
            assert argv[argv.index("--out") + 1] == str(tmp_path / f"{bench.name}.json")
    (tmp_path / "irt_speed.json").write_text(json.dumps(irt_speed_json()))
    runs = {
        "merge_speed": {"rc": 3, "log": "/x/merge_speed.log", "started": 0.0},
        "eval_speed": {"status": "skipped (--only/--skip)"},
    }
    rows = run_all.rows(tmp_path, runs, gpu=False)
    notes = {r["benchmark"]: r["note"] for r in rows}
    assert notes["merge_speed"] == "failed, exit 3, see log /x/merge_speed.log"
    assert notes["eval_speed"] == "skipped (--only/--skip)"
    assert notes["merge_7b"] == "skipped: no GPU (torch.cuda unavailable)"
    assert notes["e2e_mergenetic"] == "not run: no e2e_mergenetic.json"
    assert [r["ratio"] for r in rows if r["benchmark"] == "irt_speed"] == [30.0]


def test_irt_row_says_when_pyirt_diverged():
    data = irt_speed_json()
    data["reps"] = 3
    data["pyirt_failures"] = [
        {"rep": 0, "seed": 0, "s": 42.0, "error": "ValueError: ... found invalid values:"}
    ]
    (irt,) = summary.rows_for("irt_speed", data)
    assert "diverged to NaN in 1 of 3 reps (seed 0)" in irt["note"]
    assert irt["ratio"] == data["speedup"]


def test_partial_rerun_keeps_the_earlier_runs_records(tmp_path: Path):
    run_all = _load("run_all")
    earlier = {
        "machine": {"utc": "2026-01-01 00:00:00 UTC"},
        "runs": {
            "merge_speed": {"status": "ok", "rc": 0, "wall_s": 294.0},
            "eval_speed": {"status": "ok", "rc": 0, "wall_s": 5.0, "when": "2026-01-02 UTC"},
            "irt_speed": {"status": "failed, exit 1", "rc": 1, "wall_s": 50.0},
            "merge_7b": {"status": "skipped: no GPU"},
        },
    }
    (tmp_path / "summary.json").write_text(json.dumps(earlier))
    kept = run_all.previous_runs(tmp_path)
    assert set(kept) == {"merge_speed", "eval_speed"}  # failed and skipped runs say nothing now
    assert kept["merge_speed"]["when"] == "2026-01-01 00:00:00 UTC"
    assert kept["eval_speed"]["when"] == "2026-01-02 UTC"
    text = summary.render_table([], {"cpu_model": "x", "nproc": 2}, kept)
    assert "merge_speed ok (294 s) at 2026-01-01 00:00:00 UTC" in text
    assert run_all.previous_runs(tmp_path / "absent") == {}
