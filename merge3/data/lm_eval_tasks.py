"""lm-eval-harness tasks as items, and items as lm-eval tasks.

Reading: a task name (``arc_easy``) or a task YAML (local ones with ``dataset_path: json`` and
``dataset_kwargs: {data_files: ...}`` work offline) is built by lm-eval itself, and its own
requests give the prompts: the items carry exactly the text lm-eval would score, few-shot
examples and description included. Item ids are lm-eval document ids.

Writing: :func:`items_task_yaml` turns any item list into a local ``json`` task, so the
lm-eval backend can score items that came from another loader (same prompts, other engine).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from merge3.data.items import Item
from merge3.data.tasks import Benchmark, Generation, Task
from merge3.errors import DataError


def task_manager(spec: str | Path):
    """A TaskManager that sees ``spec``: a YAML file's folder, or lm-eval's own tasks."""
    from lm_eval.tasks import TaskManager

    path = Path(spec)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise DataError(f"{path}: lm-eval task YAML not found")
        return TaskManager(include_path=str(path.parent.resolve()), include_defaults=False)
    return TaskManager()


def task_name(spec: str | Path) -> str:
    """The task name a spec refers to (a YAML's ``task:`` key)."""
    path = Path(spec)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise DataError(f"{path}: lm-eval task YAML not found")
        try:
            config = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise DataError(f"{path}: invalid YAML ({exc})") from None
        if not isinstance(config, dict) or "task" not in config:
            raise DataError(f"{path}: an lm-eval task YAML needs a 'task' key")
        return str(config["task"])
    return str(spec)


def load_lm_eval_tasks(spec: str | Path, num_fewshot: int | None = None) -> dict[str, Any]:
    """lm-eval Task objects by name (a group is flattened into its leaf tasks)."""
    from lm_eval.tasks import get_task_dict

    name = task_name(spec)
    manager = task_manager(spec)
    try:
        tree = get_task_dict([name], manager)
    except Exception as exc:  # lm-eval raises KeyError/ValueError/dataset errors alike
        raise DataError(f"lm-eval task {name!r} cannot be loaded ({exc})") from None
    tasks: dict[str, Any] = {}

    def walk(node):
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value)
            else:
                tasks[getattr(key, "group_name", None) or value.config.task] = value

    walk(tree)
    for task in tasks.values():
        if num_fewshot is not None:
            task.set_config(key="num_fewshot", value=num_fewshot)
        elif task.get_config("num_fewshot") is None:
            task.set_config(key="num_fewshot", value=0)
    return tasks


def lm_eval_benchmark(spec: str | Path, num_fewshot: int | None = None) -> Benchmark:
    """Items of every task of ``spec``, with the prompts lm-eval builds for them."""
    tasks = {}
    for name, task in load_lm_eval_tasks(spec, num_fewshot).items():
        task.build_all_requests(rank=0, world_size=1)
        by_doc: dict[int, list] = {}
        for inst in task.instances:
            by_doc.setdefault(inst.doc_id, []).append(inst)
        kind = task.OUTPUT_TYPE
        delimiter = task.config.target_delimiter
        items = []
        generation = None
        for doc_id, insts in sorted(by_doc.items()):
            insts.sort(key=lambda x: x.idx)
            doc = insts[0].doc
            if kind == "multiple_choice":
                items.append(_mc_item(task, name, doc_id, doc, insts, delimiter))
            elif kind == "generate_until":
                context, gen_kwargs = insts[0].arguments
                generation = generation or _generation(task, gen_kwargs)
                target = task.doc_to_target(doc)
                items.append(Item(str(doc_id), name, context, (), _reference(target)))
            else:
                raise DataError(f"lm-eval task {name!r}: output type {kind!r} is not supported")
        out_kind = "multiple_choice" if kind == "multiple_choice" else "generate"
        tasks[name] = Task(name, out_kind, {"all": items}, delimiter, generation=generation)
    return Benchmark(task_name(spec), tasks)


def _mc_item(task, name: str, doc_id: int, doc, insts, delimiter: str) -> Item:
    contexts = [inst.arguments[0] for inst in insts]
    continuations = [inst.arguments[1] for inst in insts]
    choices = tuple(c[len(delimiter) :] if c.startswith(delimiter) else c for c in continuations)
    if task.multiple_input:  # the gold is doc_to_text's index; the contexts differ per choice
        answer = task.doc_to_text(doc)
        return Item(str(doc_id), name, contexts[0], choices, int(answer), contexts=tuple(contexts))
    target = task.doc_to_target(doc)
    if isinstance(target, str):
        target = choices.index(target) if target in choices else target
    if isinstance(target, list):
        target = target[0]
    return Item(str(doc_id), name, contexts[0], choices, target)


def _reference(target: Any) -> str:
    text = str(target[0] if isinstance(target, list) else target)
    return text.split("#### ")[-1].strip()


def _generation(task, gen_kwargs: dict) -> Generation:
    """lm-eval's generation settings; its filters mapped onto our two extractors."""
    patterns = [
        f.get("regex_pattern", "")
        for flt in (task.config.filter_list or [])
        for f in flt.get("filter", [])
    ]
    extract = (
        "gsm8k" if any("####" in p for p in patterns) else ("last_number" if patterns else "none")
    )
    until = gen_kwargs.get("until", ["\n\n"])
    until = (until,) if isinstance(until, str) else tuple(until)
    return Generation(until, int(gen_kwargs.get("max_gen_toks", 256)), extract)


_FILTERS = {
    "gsm8k": {"function": "regex", "regex_pattern": "#### (\\-?[0-9\\.\\,]+)"},
    "last_number": {
        "function": "regex",
        "group_select": -1,
        "regex_pattern": "(-?[$0-9.,]{2,})|(-?[0-9]+)",
    },
}


def items_task_yaml(task: Task, items: list[Item], folder: str | Path) -> Path:
    """Write ``items`` as a local lm-eval ``json`` task in ``folder``; returns the YAML path.

    Document ``k`` is ``items[k]``; the prompt is the item's full prompt, so lm-eval scores
    exactly what the built-in evaluators score.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name = "merge3_" + "".join(ch if ch.isalnum() else "_" for ch in task.name)
    docs = folder / f"{name}.jsonl"
    with open(docs, "w", encoding="utf-8") as fh:
        for item in items:
            doc = {
                "id": item.id,
                "prompt": item.prompt,
                "choices": list(item.choices),
                "answer": item.answer,
                "contexts": list(item.contexts),
            }
            if item.contexts:
                doc["continuation"] = item.choices[0]
            fh.write(json.dumps(doc, ensure_ascii=False) + "\n")
    config: dict[str, Any] = {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(docs.resolve())}},
        "test_split": "test",
        "target_delimiter": task.target_delimiter,
        "doc_to_text": "prompt",
        "doc_to_target": "answer",
        "metadata": {"version": 1.0},
    }
    if task.kind == "generate":
        gen = task.generation or Generation()
        config.update(
            output_type="generate_until",
            generation_kwargs={
                "until": list(gen.until),
                "max_gen_toks": gen.max_new_tokens,
                "do_sample": False,
            },
            metric_list=[
                {
                    "metric": "exact_match",
                    "aggregation": "mean",
                    "higher_is_better": True,
                    "ignore_case": True,
                    "regexes_to_ignore": [",", "\\$", "(?s).*#### ", "\\.$"],
                }
            ],
        )
        if gen.extract in _FILTERS:
            config["filter_list"] = [
                {"name": gen.extract, "filter": [_FILTERS[gen.extract], {"function": "take_first"}]}
            ]
    else:
        metric = "acc_norm" if task.normalize else "acc"
        config.update(
            output_type="multiple_choice",
            doc_to_choice="choices",
            metric_list=[{"metric": metric, "aggregation": "mean", "higher_is_better": True}],
        )
        if any(item.contexts for item in items):  # Winogrande-style: choices are contexts
            config.update(
                doc_to_text="answer", doc_to_choice="contexts", doc_to_target="continuation"
            )
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def mmlu_native_yaml(items: list[Item], folder: str | Path) -> Path:
    """MMLU items (from :func:`merge3.data.adapters.mmlu`) as a 0-shot lm-eval task that
    ``include``\\ s lm-eval's own ``mmlu`` template: lm-eval builds the prompts itself."""
    import lm_eval

    template = Path(lm_eval.__file__).parent / "tasks" / "mmlu" / "default"
    template = template / "_default_template_yaml"
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    docs = folder / "mmlu_docs.jsonl"
    with open(docs, "w", encoding="utf-8") as fh:
        for item in items:
            lines = item.question.split("\n")
            doc = {
                "question": "\n".join(lines[:-5]),
                "subject": item.metadata["subject"],
                "choices": [line[3:] for line in lines[-5:-1]],
                "answer": item.answer,
            }
            fh.write(json.dumps(doc, ensure_ascii=False) + "\n")
    config = {
        "include": str(template),
        "task": "merge3_mmlu_native",
        "dataset_path": "json",
        "dataset_name": None,
        "dataset_kwargs": {"data_files": {"test": str(docs.resolve())}},
        "test_split": "test",
        "fewshot_split": None,
        "description": "The following are multiple choice questions (with answers) about "
        "{{subject}}.\n\n",
    }
    path = folder / "merge3_mmlu_native.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def gsm8k_native_yaml(
    test_rows: list[dict],
    train_rows: list[dict],
    folder: str | Path,
    num_fewshot: int,
    max_gen_toks: int = 256,
) -> Path:
    """GSM8K rows as a local lm-eval task that ``include``\\ s lm-eval's own ``gsm8k.yaml``
    (prompt, stop sequences, filters, metric), with ``first_n`` shots from ``train_rows``."""
    import lm_eval

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, rows in (("test", test_rows), ("train", train_rows)):
        files[split] = folder / f"gsm8k_{split}.jsonl"
        with open(files[split], "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps({"question": row["question"], "answer": row["answer"]}) + "\n")
    template = Path(lm_eval.__file__).parent / "tasks" / "gsm8k" / "gsm8k.yaml"
    config = {
        "include": str(template),
        "task": "merge3_gsm8k_native",
        "tag": [],
        "dataset_path": "json",
        "dataset_name": None,
        "dataset_kwargs": {"data_files": {k: str(v.resolve()) for k, v in files.items()}},
        "num_fewshot": num_fewshot,
        "fewshot_config": {"sampler": "first_n"},
        "generation_kwargs": {
            "until": ["Question:", "</s>", "<|im_end|>"],
            "do_sample": False,
            "temperature": 0.0,
            "max_gen_toks": max_gen_toks,
        },
    }
    path = folder / "merge3_gsm8k_native.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path
