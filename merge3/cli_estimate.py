"""CLI verbs of Extract and Estimate: ``irt fit``, ``extract``, ``estimate``. Thin wrappers."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Annotated

import numpy as np
import typer


def add_commands(app: typer.Typer) -> None:
    """Register ``irt`` (with ``fit``), ``extract`` and ``estimate`` on the main app."""
    from merge3.cli import user_errors

    irt_app = typer.Typer(help="Item response theory models of response matrices.")
    app.add_typer(irt_app, name="irt")

    @irt_app.command("fit")
    @user_errors
    def irt_fit(
        responses: Annotated[Path, typer.Argument(help="Response matrix (CSV or parquet).")],
        out: Annotated[Path, typer.Option("--out", help="Item file (.json or .safetensors).")],
        model: Annotated[str, typer.Option("--model", help="1pl or 2pl.")] = "2pl",
        dims: Annotated[int, typer.Option("--dims", help="Latent dimensions D.")] = 1,
        seed: Annotated[int, typer.Option("--seed")] = 0,
        steps: Annotated[int, typer.Option("--steps", help="SVI steps.")] = 250,
        items_file: Annotated[
            Path | None, typer.Option("--items", help="Sidecar item → task[, subject] file.")
        ] = None,
        soft: Annotated[bool, typer.Option("--soft", help="Allow scores in [0, 1].")] = False,
        hierarchical: Annotated[bool, typer.Option("--hierarchical")] = False,
        device: Annotated[str, typer.Option("--device", help="cpu or cuda.")] = "cpu",
        backend: Annotated[
            str, typer.Option("--backend", help="merge3 (Pyro, default) or pyirt (extra).")
        ] = "merge3",
    ) -> None:
        """Fit an IRT model to RESPONSES and save the item parameters (with ids) to --out."""
        from merge3.errors import ConfigError
        from merge3.estimate.irt import MODELS
        from merge3.estimate.responses import read_responses

        if model.lower() not in MODELS:
            raise ConfigError(f"--model {model!r}: choose from {', '.join(MODELS)}")
        rm = read_responses(responses, items_file)
        flat = rm.uninformative()
        if flat:
            typer.echo(
                f"merge3: warning: {len(flat)} item(s) answered alike by every model (e.g. "
                f"{flat[0]!r}); kept, their difficulty is set by the prior",
                err=True,
            )
        if backend == "pyirt":
            from merge3.estimate.pyirt_backend import fit_pyirt

            fit_pyirt(rm, model.lower(), dims, seed=seed).save(out)
            typer.echo(f"{out}: py-irt {model} D={dims} on {len(rm.models)} models")
            return
        if backend != "merge3":
            raise ConfigError(f"--backend {backend!r}: choose merge3 or pyirt")
        est = MODELS[model.lower()](
            dims=dims,
            steps=steps,
            seed=seed,
            binary=not soft,
            hierarchical=hierarchical,
            device=device,
        )
        bank = est.fit(rm).item_bank()
        bank.save(out)
        typer.echo(f"{out}: {model} D={dims} on {len(rm.models)} models × {len(rm.items)} items")

    @app.command("extract")
    @user_errors
    def extract_cmd(
        out: Annotated[Path, typer.Option("--out", help="Anchor file (JSON).")],
        n: Annotated[int, typer.Option("--n", help="Anchors per task.")],
        method: Annotated[str, typer.Option("--method", help="random, stratified, ...")] = "random",
        irt: Annotated[Path | None, typer.Option("--irt", help="IRT item file.")] = None,
        responses: Annotated[Path | None, typer.Option("--responses")] = None,
        items_file: Annotated[Path | None, typer.Option("--items")] = None,
        seed: Annotated[int, typer.Option("--seed")] = 0,
    ) -> None:
        """Choose N anchor items per task.

        Methods: random, stratified, irt-kmeans, correctness-kmeans, irt-info (most informative
        about ability; needs --irt, uses --responses' models as the population when given).
        """
        from merge3.errors import ConfigError
        from merge3.estimate.itembank import ItemBank
        from merge3.estimate.responses import read_responses
        from merge3.extract import extract

        if irt is None and responses is None:
            raise ConfigError("extract needs --irt ITEMS or --responses RESPONSES")
        bank = ItemBank.load(irt) if irt is not None else None
        rm = read_responses(responses, items_file) if responses is not None else None
        anchors = extract(method, n, seed, bank=bank, responses=rm)
        anchors.save(out)
        typer.echo(f"{out}: {method}, {n} anchors × {len(anchors.tasks)} tasks")

    @app.command("estimate")
    @user_errors
    def estimate_cmd(
        irt: Annotated[Path, typer.Option("--irt", help="IRT item file.")],
        anchors: Annotated[Path, typer.Option("--anchors", help="Anchor file (JSON).")],
        responses: Annotated[Path, typer.Option("--responses", help="Candidates' responses.")],
        estimator: Annotated[str, typer.Option("--estimator")] = "gmpirt",
        endpoint_responses: Annotated[
            Path | None, typer.Option("--endpoint-responses", help="Endpoints' full responses.")
        ] = None,
        validation: Annotated[
            Path | None,
            typer.Option("--validation", help="Full responses of validation models (fits λ)."),
        ] = None,
        lam: Annotated[
            float | None, typer.Option("--lambda", help="Mix λ of g-estimators.")
        ] = None,
        constraint: Annotated[str, typer.Option("--constraint", help="mpirt's λ set.")] = "simplex",
        inference: Annotated[
            str, typer.Option("--inference", help="mpirt's λ: map or posterior (mean).")
        ] = "map",
        items_file: Annotated[Path | None, typer.Option("--items")] = None,
        as_json: Annotated[bool, typer.Option("--json")] = False,
    ) -> None:
        """Estimate every row's accuracy per task from its anchor columns only."""
        from merge3.estimate.cli_support import build_estimator, read_anchor_correctness
        from merge3.estimate.itembank import ItemBank
        from merge3.estimate.responses import read_responses
        from merge3.extract import AnchorSet

        bank = ItemBank.load(irt)
        anchor_set = AnchorSet.load(anchors)
        ends = read_responses(endpoint_responses) if endpoint_responses else None
        val = read_responses(validation, items_file) if validation else None
        est = build_estimator(estimator, anchor_set, bank, ends, val, lam, constraint, inference)
        models, correct = read_anchor_correctness(responses, anchor_set, items_file)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            result = est.estimate(correct)
        table = {
            m: {t: float(np.round(result[t][k], 6)) for t in result} for k, m in enumerate(models)
        }
        if as_json:
            typer.echo(json.dumps({"estimator": estimator, "estimates": table}, indent=2))
            return
        tasks = list(result)
        typer.echo("\t".join(["model", *tasks]))
        for m, row in table.items():
            typer.echo("\t".join([m, *(f"{row[t]:.4f}" for t in tasks)]))
