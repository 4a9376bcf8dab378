"""``merge3 demo``: build the demo's assets, search, and print the final table.

The run is an ordinary ``merge3 search`` of the packaged config (``merge3/demo/config.yaml``)
with optional overrides of the search budget; its directory is a normal run directory (resume
it with ``merge3 resume`` or by giving ``merge3 demo`` the same ``--run-dir``), plus
``demo.json`` / ``demo.md`` with the table and the wall time of each phase.
"""

from __future__ import annotations

import time
from pathlib import Path

import yaml

from merge3.config import RunConfig, parse_config
from merge3.demo import report
from merge3.demo.experts import LoraRecipe
from merge3.demo.prepare import CONFIG, DemoSizes, build_demo
from merge3.evolve import resume_search, start_search
from merge3.evolve.progress import Reporter
from merge3.runs import RunDir


def demo_config(generations: int | None = None, population: int | None = None) -> RunConfig:
    """The packaged config, with the search budget overridden where given."""
    data = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    if generations is not None:
        data["search"]["generations"] = generations
    if population is not None:
        data["search"]["population"] = population
    return parse_config(data, str(CONFIG), CONFIG.parent)


def run_demo(
    run_dir: str | Path,
    reporter: Reporter,
    generations: int | None = None,
    population: int | None = None,
    progress: bool = True,
    sizes: DemoSizes | None = None,
    recipe: LoraRecipe | None = None,
    base: str | Path | None = None,
) -> tuple[list[report.Row], dict[str, float]]:
    """Prepare, search (or resume ``run_dir``), tabulate; returns the rows and wall times.

    ``sizes``, ``recipe``, ``base``: other item counts, expert recipe or base model than the
    defaults (tests use a smaller demo; see :func:`merge3.demo.prepare.build_demo`)."""
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    reporter.phase("preparing the demo: SmolLM2, MMLU, three LoRA experts (cached once built)")
    build_demo(sizes=sizes, recipe=recipe, base=base, progress=progress)
    seconds["prepare"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    if RunDir(run_dir).config_path.is_file():
        resume_search(run_dir, reporter)
    else:
        start_search(demo_config(generations, population), run_dir, reporter)
    seconds["search"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    rows = report.demo_rows(run_dir, progress=progress)
    seconds["table"] = time.perf_counter() - t2
    seconds["total"] = time.perf_counter() - t0
    report.save(run_dir, rows, seconds)
    return rows, seconds
