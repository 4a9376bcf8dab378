"""A venv for mergenetic 0.1.1, beside merge3's (it cannot share it).

mergenetic 0.1.1 pins transformers 4.45, mergekit 0.0.6, pandas 2.2 and vLLM through lm-eval's
extra, while merge3 runs on transformers 5. So the benchmark builds a venv of its own under the
merge3 cache: mergenetic without its dependencies, then a set of pins known to import and run
together on a CPU-only Python 3.11 machine (mergekit 0.1.4 instead of 0.0.6, whose
``run_merge``/``MergeOptions`` mergenetic calls unchanged). Built once; a stamp file records
the pins, so changing them rebuilds it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from merge3.tiny import cache_root

TORCH = "torch==2.13.0"  # the CPU wheel, as in merge3's own Makefile
PINS = (
    "lm-eval==0.4.8",
    "transformers<5",
    "mergekit==0.1.4",
    "pymoo==0.6.1.3",
    "pandas<3",
    "fasttext-numpy2",  # imported at module level by mergenetic.evaluation
    "gitpython",  # mergenetic/__init__ finds its project root with it
    "scikit-learn",
    "psutil",
    "requests",
)
MERGENETIC = "mergenetic==0.1.1"


def venv_dir() -> Path:
    return cache_root() / "bench" / "mergenetic-0.1.1-venv"


def python() -> Path:
    return venv_dir() / "bin" / "python"


def ensure_venv(log=print) -> Path:
    """The venv's python, building the venv first when missing or built with other pins."""
    root = venv_dir()
    stamp = root / ".merge3-pins.json"
    wanted = {"torch": TORCH, "mergenetic": MERGENETIC, "pins": list(PINS)}
    if stamp.is_file() and json.loads(stamp.read_text()) == wanted and python().is_file():
        return python()
    if root.exists():
        shutil.rmtree(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    log(f"building mergenetic's venv in {root} (once; a few minutes)")
    base = Path(getattr(sys, "_base_executable", sys.executable))
    subprocess.run([str(base), "-m", "venv", str(root)], check=True)
    pip = [str(python()), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, TORCH], check=True)
    subprocess.run([*pip, "--no-deps", MERGENETIC], check=True)
    subprocess.run([*pip, *PINS], check=True)
    subprocess.run(
        [str(python()), "-c", "import mergenetic.optimization.predefined_problems"],
        check=True,
        cwd=root,
    )
    stamp.write_text(json.dumps(wanted))
    return python()


if __name__ == "__main__":
    print(ensure_venv())
