"""Publishing a folder built in a temporary place into the cache, safely under concurrency."""

from __future__ import annotations

import os
from pathlib import Path


def publish_folder(built: Path, target: Path) -> None:
    """Rename ``built`` (made beside ``target``) into place in one step.

    A reader sees either no ``target`` or a complete one. When another process published the
    same build first (``target/DONE`` exists), its folder is kept: both are equally good.
    """
    try:
        os.replace(built, target)
    except OSError:
        if not (target / "DONE").is_file():
            raise
