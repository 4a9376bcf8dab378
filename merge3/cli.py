"""The ``merge3`` command line: parse → call the library → print. Nothing else lives here.

Every user mistake surfaces as a :class:`~merge3.errors.Merge3Error`, printed as one line on
stderr with exit code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from merge3.errors import Merge3Error

app = typer.Typer(
    name="merge3",
    help="Evolutionary model merging: Extract anchors, Estimate accuracy with IRT, Evolve merges.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
_state = {"debug": False}


@app.callback()
def _global(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks for user errors.")
    ] = False,
) -> None:
    _state["debug"] = debug


def user_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a Merge3Error into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Merge3Error as exc:
            if _state["debug"]:
                raise
            one_line = " ".join(str(exc).split())  # a library's message may span lines
            typer.echo(f"merge3: error: {one_line}", err=True)
            raise typer.Exit(exc.exit_code) from None

    return wrapper


def _reporter(quiet: bool):
    from merge3.evolve.progress import PlainReporter, RichReporter

    return PlainReporter() if quiet or not sys.stderr.isatty() else RichReporter()


QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="Plain log lines instead of progress bars.")
]


@app.command()
@user_errors
def search(
    config: Annotated[Path, typer.Argument(help="Run config (YAML).")],
    run_dir: Annotated[Path, typer.Option("--run-dir", help="Where the run is written.")] = Path(
        "runs/latest"
    ),
    quiet: QuietOpt = False,
) -> None:
    """Start a search described by CONFIG; everything it evaluates goes to --run-dir."""
    from merge3.evolve import start_search

    run = start_search(config, run_dir, _reporter(quiet))
    _print_front(run.path, fmt="table")


@app.command()
@user_errors
def resume(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `merge3 search`.")],
    quiet: QuietOpt = False,
) -> None:
    """Continue a stopped or crashed search; stored candidates are not evaluated again."""
    from merge3.evolve import resume_search

    run = resume_search(run_dir, _reporter(quiet))
    _print_front(run.path, fmt="table")


@app.command()
@user_errors
def front(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the front as JSON.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print the front as CSV.")] = False,
) -> None:
    """Print the Pareto front of a run (accuracies: higher is better)."""
    _print_front(run_dir, fmt="json" if as_json else "csv" if as_csv else "table")


@app.command()
@user_errors
def merge(
    config: Annotated[Path, typer.Argument(help="A mergekit merge YAML.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder (Hugging Face format).")],
) -> None:
    """Merge models as a mergekit YAML describes and save the result."""
    from merge3.mergekit_yaml import merge_from_yaml

    typer.echo(str(merge_from_yaml(config, out)))


@app.command()
@user_errors
def export(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder (Hugging Face format).")],
    rank: Annotated[int, typer.Option("--rank", min=1, help="1 = best by mean estimate.")] = 1,
) -> None:
    """Save the K-th best candidate: HF folder, mergekit YAML (merge.yaml), model card."""
    from merge3.analysis import ranked
    from merge3.errors import RunDirError
    from merge3.evolve.fitness import Merger
    from merge3.export import export_merge
    from merge3.runs import load_run

    run = load_run(run_dir)
    order = ranked(run.rows, run.objectives)
    if rank > len(order):
        raise RunDirError(f"{run_dir}: --rank {rank} but the run has {len(order)} distinct merges")
    row = order[rank - 1]
    scores = {
        "candidate": [row.generation, row.index],
        "rank": rank,
        "estimated": row.objectives,
        "test_accuracy": run.test_accuracy.get((row.generation, row.index), {}),
    }
    merger = Merger(run.config)
    typer.echo(str(export_merge(merger, row.recipe, out, scores, run.dir.config_path.read_text())))


def _print_front(run_dir: Path, fmt: str) -> None:
    from merge3.runs import load_run

    run = load_run(run_dir)
    rows = run.front_rows()
    if fmt == "json":
        from merge3.analysis import front_json

        shown = front_json(rows, run.objectives, run.test_accuracy, run.failed_rows())
        typer.echo(json.dumps(shown, indent=2))
    elif fmt == "csv":
        from merge3.analysis import front_csv

        typer.echo(front_csv(rows, run.objectives, run.gene_names()), nl=False)
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(
            title=f"Pareto front of {run_dir} ({len(rows)} of {run.n_candidates} candidates)"
        )
        table.add_column("gen/idx")
        for name in run.objectives:
            table.add_column(name, justify="right")
        tested = [t for t in run.config.benchmark.tasks if t.test and run.test_accuracy]
        for task in tested:
            table.add_column(f"test {task.name}", justify="right")
        table.add_column("recipe")
        for r in rows:
            params = ", ".join(
                f"{k}={_short(v)}" for k, v in r.recipe["params"].items() if not isinstance(v, bool)
            )
            test = run.test_accuracy.get((r.generation, r.index), {})
            table.add_row(
                f"{r.generation}/{r.index}",
                *(f"{r.objectives[n]:.3f}" for n in run.objectives),
                *(f"{test[t.name]:.3f}" if t.name in test else "" for t in tested),
                params,
            )
        failed = run.failed_rows()
        if failed:  # listed apart: a failed candidate is never on the front
            first = failed[0]
            table.caption = (
                f"{len(failed)} candidates failed; first: {first.generation}/{first.index} "
                f"{first.error.splitlines()[0] if first.error else ''}"
            )
        Console().print(table)


def _short(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(f"{v:.2f}" for v in value) + "]"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


# The verbs of the estimate and evaluate layers live beside them; they need `user_errors`,
# so they are imported after it is defined.
from merge3 import cli_demo, cli_estimate, cli_evaluate  # noqa: E402

cli_estimate.add_commands(app)
cli_evaluate.add_commands(app)
cli_demo.add_commands(app)


def main() -> None:
    app(prog_name="merge3")
