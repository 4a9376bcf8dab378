"""Ready adapters for the real sets bundled in ``../shared/data`` (see its README).

Prompts follow lm-eval-harness's task formats so that scores are comparable with it:
``mmlu`` (description + "question / A. .. D. / Answer:", letters scored), ``gsm8k``
("Question: ..\\nAnswer:", greedy until "Question:", strict ``#### N`` match), ``mgsm-LANG``
(lm-eval's ``mgsm_direct`` prompt in English words, last number matched), and the Open LLM
Leaderboard items selected by metabench (``leaderboard-TASK``).

Few-shot pools where the bundled data lacks lm-eval's: MMLU has no dev split here, so with
``num_fewshot > 0`` the first ``num_fewshot`` items of each subject (file order) are the shots
and are not evaluated; GSM8K and MGSM take the first shots of ``gsm8k/train.jsonl``. Sets that
ship one split get seeded ``search``/``test`` halves (:func:`merge3.data.tasks.with_halves`).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from merge3.data.files import read_rows
from merge3.data.items import Excluded, Item
from merge3.data.tasks import Benchmark, Generation, Task, with_halves
from merge3.errors import DataError

LETTERS = ("A", "B", "C", "D")
GSM8K_GENERATION = Generation(("Question:", "</s>", "<|im_end|>"), 256, "gsm8k")
MGSM_LANGS = ("bn", "de", "en", "es", "fr", "ja", "ru", "sw", "te", "th", "zh")
LEADERBOARD = ("arc", "hellaswag", "winogrande", "truthfulqa", "gsm8k", "mmlu")


def mmlu_description(subject: str) -> str:
    return f"The following are multiple choice questions (with answers) about {subject}.\n\n"


def mmlu_question(question: str, choices: list[str]) -> str:
    body = "".join(f"\n{letter}. {c}" for letter, c in zip(LETTERS, choices, strict=True))
    return f"{question.strip()}{body}\nAnswer:"


def mmlu(data: Path, num_fewshot: int = 0) -> Benchmark:
    """MMLU test (57 subjects) as one task ``mmlu``; ids ``mmlu-N`` (N = line number)."""
    path = data / "mmlu" / "mmlu.jsonl"
    by_subject: dict[str, list[tuple[str, dict]]] = defaultdict(list)
    excluded = []
    for n, row in enumerate(read_rows(path), 1):
        item_id = f"mmlu-{n}"
        if row.get("correct_answer") not in LETTERS:  # the two stray header rows
            excluded.append(Excluded(item_id, "mmlu", f"{path}:{n}: answer is not A-D"))
            continue
        by_subject[row["topic"]].append((item_id, row))
    items = []
    for subject, rows in by_subject.items():
        shots, rest = rows[:num_fewshot], rows[num_fewshot:]
        context = mmlu_description(subject) + "".join(
            f"{mmlu_question(r['question'], _abcd(r))} {r['correct_answer']}\n\n" for _, r in shots
        )
        items += [
            Item(
                item_id,
                "mmlu",
                mmlu_question(r["question"], _abcd(r)),
                LETTERS,
                LETTERS.index(r["correct_answer"]),
                context,
                {"subject": subject, "line": int(item_id[5:])},
            )
            for item_id, r in rest
        ]
    items.sort(key=lambda i: i.metadata["line"])
    task = Task("mmlu", "multiple_choice", with_halves(items), " ", excluded=excluded)
    return Benchmark("mmlu", {"mmlu": task})


def _abcd(row: dict) -> list[str]:
    return [str(row[f"answer_{x}"]) for x in "abcd"]


def gsm8k_final(answer: str) -> str:
    """The reference number of a GSM8K answer: the text after ``#### ``."""
    return answer.split("#### ")[-1].strip()


def _gsm8k_shots(data: Path, n: int) -> str:
    if n <= 0:
        return ""
    with open(data / "gsm8k" / "train.jsonl", encoding="utf-8") as fh:
        rows = [json.loads(next(fh)) for _ in range(n)]
    return "".join(f"Question: {r['question']}\nAnswer: {r['answer']}\n\n" for r in rows)


def gsm8k(data: Path, num_fewshot: int = 0) -> Benchmark:
    """GSM8K test (1,319), lm-eval's ``gsm8k`` prompt; shots: first of train (first_n)."""
    context = _gsm8k_shots(data, num_fewshot)
    items = [
        Item(
            f"gsm8k-{n}",
            "gsm8k",
            f"Question: {r['question']}\nAnswer:",
            (),
            gsm8k_final(r["answer"]),
            context,
        )
        for n, r in enumerate(read_rows(data / "gsm8k" / "test.jsonl"))
    ]
    task = Task("gsm8k", "generate", with_halves(items), " ", generation=GSM8K_GENERATION)
    return Benchmark("gsm8k", {"gsm8k": task})


def mgsm(data: Path, lang: str, num_fewshot: int = 0) -> Benchmark:
    """MGSM in one language (250 items): question, numeric answer; last number matched."""
    if lang not in MGSM_LANGS:
        raise DataError(f"unknown MGSM language {lang!r} (known: {', '.join(MGSM_LANGS)})")
    path = data / "mgsm" / f"mgsm_{lang}.tsv"
    if not path.is_file():
        raise DataError(f"{path}: MGSM file not found")
    items = []
    shots = _gsm8k_shots(data, num_fewshot)
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        question, _, answer = line.rpartition("\t")
        items.append(
            Item(
                f"mgsm_{lang}-{n}",
                f"mgsm-{lang}",
                f"Question: {question}\nAnswer:",
                (),
                answer.strip(),
                shots,
                {"language": lang},
            )
        )
    generation = Generation(("Question:", "</s>", "<|im_end|>", "\n\n"), 256, "last_number")
    task = Task(f"mgsm-{lang}", "generate", with_halves(items), " ", generation=generation)
    return Benchmark(f"mgsm-{lang}", {task.name: task})


# Open LLM Leaderboard v1 items (metabench selection). ``fewshot=True`` reads the leaderboard's
# own few-shot prompt stored beside each item (25-shot ARC, 10-shot HellaSwag, 5-shot others).
_LONG_PROMPT = {
    "arc": "alltwentyfiveshot_longprompt",
    "hellaswag": "alltenshot_longprompt",
    "winogrande": "allfiveshot_longprompt",
    "gsm8k": "allfiveshot_longprompt",
    "mmlu": "allfiveshot_longprompt",
}


def _hellaswag_clean(text: str) -> str:
    import re

    text = text.strip().replace(" [title]", ". ")
    return re.sub("\\[.*?\\]", "", text).replace("  ", " ")


def leaderboard(data: Path, name: str, fewshot: bool = False) -> Benchmark:
    """One leaderboard task from ``leaderboard/NAME.parquet``; ids ``NAME-METABENCH_IDX``."""
    if name not in LEADERBOARD:
        raise DataError(f"unknown leaderboard task {name!r} (known: {', '.join(LEADERBOARD)})")
    rows = read_rows(data / "leaderboard" / f"{name}.parquet")
    if fewshot and name not in _LONG_PROMPT:
        raise DataError(f"leaderboard-{name} has no stored few-shot prompt")
    task_name = f"leaderboard-{name}"
    items, excluded = [], []
    for row in rows:
        item_id = f"{name}-{row['metabench_idx']}"
        try:
            items.append(_leaderboard_item(name, task_name, item_id, row, fewshot))
        except (KeyError, ValueError, IndexError) as exc:
            excluded.append(Excluded(item_id, task_name, f"malformed row ({exc})"))
    kind = "generate" if name == "gsm8k" else "multiple_choice"
    task = Task(
        task_name,
        kind,
        with_halves(items),
        " ",
        normalize=name in ("arc", "hellaswag"),  # the leaderboard reports acc_norm for these
        generation=GSM8K_GENERATION if kind == "generate" else None,
        excluded=excluded,
    )
    return Benchmark(task_name, {task_name: task})


def _leaderboard_item(name: str, task: str, item_id: str, row: dict, fewshot: bool) -> Item:
    long_prompt = row.get(_LONG_PROMPT.get(name, ""), "") if fewshot else ""
    if name == "arc":
        labels, texts = list(row["choices"]["label"]), list(row["choices"]["text"])
        question = long_prompt or f"Question: {row['question']}\nAnswer:"
        return Item(item_id, task, question, tuple(texts), labels.index(row["answerKey"]))
    if name == "hellaswag":
        ctx = row["ctx_a"] + " " + row["ctx_b"].capitalize()
        query = _hellaswag_clean(row["activity_label"] + ": " + ctx)
        endings = row["endings"]
        if isinstance(endings, str):  # stored as the text of a numpy array
            import ast

            endings = ast.literal_eval(endings.replace("'\n '", "', '"))
        choices = tuple(_hellaswag_clean(e) for e in endings)
        return Item(item_id, task, long_prompt or query, choices, int(row["label"]))
    if name == "winogrande":
        sentence = row["sentence"]
        cut = sentence.index("_")
        options = (row["option1"], row["option2"])
        continuation = sentence[cut + 1 :].strip()
        prefix = long_prompt[: -len(sentence)] if long_prompt.endswith(sentence) else ""
        contexts = tuple(prefix + sentence[:cut] + o for o in options)
        return Item(
            item_id,
            task,
            sentence,
            (continuation, continuation),
            int(row["answer"]) - 1,
            contexts=contexts,
        )
    if name == "truthfulqa":
        mc1 = row["mc1_targets"]
        return Item(
            item_id,
            task,
            f"Q: {row['question']}\nA:",
            tuple(mc1["choices"]),
            list(mc1["labels"]).index(1),
        )
    if name == "gsm8k":
        question = long_prompt or f"Question: {row['question']}\nAnswer:"
        return Item(item_id, task, question, (), gsm8k_final(row["answer"]))
    # mmlu
    choices = list(row["choices"])
    subject = row["subject"].replace("_", " ")
    question = long_prompt or mmlu_question(row["question"], choices)
    context = "" if long_prompt else mmlu_description(subject)
    return Item(item_id, task, question, LETTERS, int(row["answer"]), context, {"subject": subject})
