"""Fault injection for tests: make one candidate raise, or its worker process die.

A worker dying mid-candidate or a candidate raising inside a Ray actor cannot be provoked on
demand through real inputs (and a monkeypatch does not reach another process), so every
executor calls :func:`inject` before each candidate. ``$MERGE3_FAULT`` is read once by the
driver and handed to the workers; unset (always, outside tests) nothing happens.

``MERGE3_FAULT=KIND:GENERATION:INDEX[:MARKER]``, GENERATION and INDEX may be ``*``, several
such specs separated by ``;``:

- ``raise``: the candidate raises ``RuntimeError`` (it is recorded as failed);
- ``exit``: the process exits at once (``os._exit``), as a killed worker would. With MARKER,
  only while the file MARKER does not exist (it is created first, holding the process id), so
  a retry succeeds.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV = "MERGE3_FAULT"


def from_env() -> str | None:
    return os.environ.get(ENV) or None


def inject(specs: str | None, generation: int, index: int) -> None:
    """Act out each spec of ``specs`` that names candidate ``index`` of ``generation``."""
    for spec in (specs or "").split(";"):
        if spec:
            _inject(spec, generation, index)


def _inject(spec: str, generation: int, index: int) -> None:
    kind, gen, idx, *marker = spec.split(":", 3)
    if gen not in ("*", str(generation)) or idx not in ("*", str(index)):
        return
    if kind == "raise":
        raise RuntimeError(f"injected fault ({ENV}={spec})")
    if kind == "exit":
        if marker:
            path = Path(marker[0])
            if path.exists():
                return
            path.write_text(f"{os.getpid()}\n")
        os._exit(77)
    raise ValueError(f"{ENV}: unknown fault kind {kind!r} (raise, exit)")
