"""Sections of a results file that scripts regenerate, so no figure in it is typed by hand."""

from __future__ import annotations

import re
from pathlib import Path


def replace_section(path: Path, start: str, end: str, text: str) -> None:
    """Put ``text`` (which begins with ``start`` and ends with ``end``) in place of the old
    section between those markers, or append it when the file has none yet."""
    old = path.read_text() if path.exists() else "# Results\n"
    if start in old:
        new = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: text, old, flags=re.S)
    else:
        new = old.rstrip() + "\n\n" + text + "\n"
    path.write_text(new)
