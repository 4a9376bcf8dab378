"""``merge3 evaluate``: accuracy per task and per-item correctness of one model folder."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated

import typer


def add_commands(app: typer.Typer) -> None:
    from merge3.cli import user_errors

    @app.command()
    @user_errors
    def evaluate(
        model_dir: Annotated[Path, typer.Argument(help="A Hugging Face model folder.")],
        benchmark: Annotated[
            str,
            typer.Option(
                "--benchmark",
                help="mmlu, gsm8k, mgsm-LANG, senteval-TASK, leaderboard-TASK, an lm-eval "
                "task name or YAML, or a .jsonl/.csv/.parquet file.",
            ),
        ],
        items: Annotated[
            int | None, typer.Option("--items", help="Seeded sample of N items per task.")
        ] = None,
        seed: Annotated[int, typer.Option("--seed", help="Seed of the item sample.")] = 0,
        backend: Annotated[str, typer.Option("--backend", help="builtin or lm-eval.")] = "builtin",
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
        data_dir: Annotated[
            Path | None,
            typer.Option(
                "--data-dir", help="Bundled data (default $MERGE3_DATA or ../shared/data)."
            ),
        ] = None,
        split: Annotated[str, typer.Option("--split", help="all, search, test, train.")] = "all",
        num_fewshot: Annotated[
            int | None, typer.Option("--num-fewshot", help="Few-shot examples per prompt.")
        ] = None,
        batch_size: Annotated[int, typer.Option("--batch-size")] = 32,
        dtype: Annotated[str, typer.Option("--dtype")] = "float32",
        device: Annotated[str, typer.Option("--device")] = "cpu",
    ) -> None:
        """Evaluate MODEL_DIR on a benchmark: accuracy per task and per-item correctness."""
        from merge3.errors import ConfigError
        from merge3.models.io import DTYPES

        if backend not in ("builtin", "lm-eval"):
            raise ConfigError(f"--backend must be 'builtin' or 'lm-eval', not {backend!r}")
        if dtype not in DTYPES:
            raise ConfigError(f"--dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
        result = run_evaluation(
            model_dir,
            benchmark,
            items,
            seed,
            backend,
            data_dir,
            split,
            num_fewshot,
            batch_size,
            dtype,
            device,
        )
        if as_json:
            typer.echo(json.dumps(result))
            return
        for task, acc in result["accuracy"].items():
            n = sum(1 for r in result["items"] if r["task"] == task)
            shown = "n/a" if acc is None else f"{acc:.4f}"
            typer.echo(f"{task}\t{shown}\t({n} items)")
        for ex in result.get("excluded", []):
            typer.echo(f"excluded {ex['task']}/{ex['id']}: {ex['reason']}", err=True)


def run_evaluation(
    model_dir,
    spec,
    n_items,
    seed,
    backend,
    data_dir=None,
    split="all",
    num_fewshot=None,
    batch_size=32,
    dtype="float32",
    device="cpu",
) -> dict:
    """Load the model once, evaluate each task of ``spec`` on the same seeded item sample."""
    from merge3.data import load_benchmark, sample_items
    from merge3.evaluate.factory import accuracy, builtin_evaluator, lm_eval_evaluator
    from merge3.models.io import load_causal_lm, load_tokenizer, parse_dtype

    bench = load_benchmark(spec, data_dir, num_fewshot)
    from_lm_eval = _is_lm_eval_spec(spec)
    model = load_causal_lm(model_dir, parse_dtype(dtype), device)
    tokenizer = load_tokenizer(model_dir)
    out: dict = {"accuracy": {}, "items": [], "excluded": []}
    with tempfile.TemporaryDirectory(prefix="merge3-eval-") as tmp:
        for name, task in bench.tasks.items():
            chosen = sample_items(task.items(split), n_items, seed)
            if backend == "lm-eval":
                ev = lm_eval_evaluator(
                    spec,
                    task,
                    chosen,
                    tokenizer,
                    Path(tmp) / name,
                    from_lm_eval,
                    num_fewshot,
                    device,
                )
            else:
                limit = getattr(model.config, "max_position_embeddings", None)
                ev = builtin_evaluator(
                    task, chosen, tokenizer, batch_size, device, max_length=limit
                )
            correct = ev(model)
            acc = accuracy(correct)
            out["accuracy"][name] = None if acc != acc else acc  # NaN: every item excluded
            for item, c in zip(chosen, correct, strict=True):
                if c == c:  # not NaN
                    out["items"].append({"id": item.id, "task": name, "correct": int(c)})
            out["excluded"] += [
                {"id": e.id, "task": e.task, "reason": e.reason}
                for e in [*task.excluded, *getattr(ev, "excluded", [])]
            ]
    if not out["excluded"]:
        del out["excluded"]
    return out


def _is_lm_eval_spec(spec: str) -> bool:
    from merge3.data.spec import FILE_SUFFIXES

    if spec.startswith("lm-eval:") or spec.endswith((".yaml", ".yml")):
        return True
    builtin = ("mmlu", "gsm8k")
    prefixes = ("mgsm-", "senteval-", "leaderboard-", "hf:")
    return not (
        spec in builtin or spec.startswith(prefixes) or Path(spec).suffix.lower() in FILE_SUFFIXES
    )
