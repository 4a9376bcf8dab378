"""One string names a benchmark: a bundled adapter, a file, an lm-eval task, or a HF dataset.

* ``mmlu``, ``gsm8k``, ``mgsm-LANG``, ``senteval-TASK``, ``leaderboard-TASK``: the real sets
  in the data folder (``--data-dir``, ``$MERGE3_DATA``, else ``../shared/data``).
* a path to a ``.jsonl``/``.csv``/``.tsv``/``.parquet`` file: items with a field mapping.
* a path to an lm-eval task ``.yaml``, or ``lm-eval:NAME`` / any other name: an lm-eval task.
* ``hf:NAME[/CONFIG]:SPLIT``: a Hugging Face dataset (needs the hub).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from merge3.data import adapters
from merge3.data.files import load_items
from merge3.data.tasks import Benchmark, Kind

FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")


def load_benchmark(
    spec: str,
    data_dir: str | Path | None = None,
    num_fewshot: int | None = None,
    fields: Mapping[str, Any] | None = None,
    kind: Kind | None = None,
) -> Benchmark:
    """Resolve ``spec`` (see the module docstring) to a :class:`Benchmark`."""
    from merge3.assets import data_dir as find_data

    shots = num_fewshot or 0
    if spec == "mmlu":
        return adapters.mmlu(find_data(data_dir), shots)
    if spec == "gsm8k":
        return adapters.gsm8k(find_data(data_dir), shots)
    if spec.startswith("mgsm-"):
        return adapters.mgsm(find_data(data_dir), spec[5:], shots)
    if spec.startswith("senteval-"):
        from merge3.data.senteval import senteval

        return senteval(find_data(data_dir), spec[9:])
    if spec.startswith("leaderboard-"):
        return adapters.leaderboard(find_data(data_dir), spec[12:], fewshot=bool(shots))
    if spec.startswith("hf:"):
        from merge3.data.hf import load_hf_items

        _, name, split = (spec.split(":") + ["test"])[:3]
        # ``owner/name/config``: the config is the last part; ``owner/name`` has none
        name, _, config = name.rpartition("/") if name.count("/") > 1 else (name, "", "")
        task = load_hf_items(
            name, config or None, split, fields=fields, kind=kind or "multiple_choice"
        )
        return Benchmark(task.name, {task.name: task})
    path = Path(spec)
    if path.suffix.lower() in FILE_SUFFIXES:
        task = load_items(path, fields=fields, kind=kind or _guess_kind(path, fields))
        return Benchmark(task.name, {task.name: task})
    from merge3.data.lm_eval_tasks import lm_eval_benchmark

    return lm_eval_benchmark(spec.removeprefix("lm-eval:"), num_fewshot)


def _guess_kind(path: Path, fields: Mapping[str, Any] | None) -> Kind:
    """Rows with a choices field are multiple choice; rows without one are generative."""
    from merge3.data.files import read_rows

    rows = read_rows(path)
    key = (fields or {}).get("choices", "choices")
    if rows and isinstance(key, str) and key not in rows[0]:
        return "generate"
    return "multiple_choice"
