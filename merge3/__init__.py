"""merge3: evolutionary model merging with anchor extraction and IRT accuracy estimation.

The package follows the three E's of MERGE³: ``extract`` picks anchor items, ``estimate`` turns
anchor correctness into full-benchmark accuracy, ``evolve`` searches merge recipes with pymoo.
``merge3.load_run(DIR)`` opens a run directory in a notebook.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["load_run"]


def __getattr__(name: str) -> Any:
    # Lazy, so that `import merge3` (and every CLI start) does not pay for pandas and pymoo.
    if name == "load_run":
        from merge3.runs import load_run

        return load_run
    raise AttributeError(f"module 'merge3' has no attribute {name!r}")
