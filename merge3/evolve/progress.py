"""How a search reports progress: rich bars for people, plain lines for logs (``--quiet``)."""

from __future__ import annotations

import sys
from typing import Protocol


class Reporter(Protocol):
    def start(self, generations: int, done: int) -> None: ...
    def generation(self, generation: int, size: int, reused: int) -> None: ...
    def candidate(self, best: dict[str, float], reused: bool) -> None: ...
    def phase(self, description: str) -> None: ...
    def items(self, done: int, total: int) -> None: ...
    def finish(self) -> None: ...


class SilentReporter:
    def start(self, generations: int, done: int) -> None:
        pass

    def generation(self, generation: int, size: int, reused: int) -> None:
        pass

    def candidate(self, best: dict[str, float], reused: bool) -> None:
        pass

    def phase(self, description: str) -> None:
        pass

    def items(self, done: int, total: int) -> None:
        pass

    def finish(self) -> None:
        pass


def _fmt(best: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.3f}" for k, v in best.items())


class PlainReporter(SilentReporter):
    """One line per generation on stderr."""

    def __init__(self) -> None:
        self._gen = 0
        self._best: dict[str, float] = {}

    def generation(self, generation: int, size: int, reused: int) -> None:
        self._gen = generation
        note = f" ({reused} from the store)" if reused else ""
        print(f"generation {generation + 1}: {size} candidates{note}", file=sys.stderr, flush=True)

    def candidate(self, best: dict[str, float], reused: bool) -> None:
        self._best = best

    def phase(self, description: str) -> None:
        print(description, file=sys.stderr, flush=True)

    def finish(self) -> None:
        if self._best:
            print(f"best so far: {_fmt(self._best)}", file=sys.stderr, flush=True)


class RichReporter(SilentReporter):
    """Bars for generations, the candidates of the current one and the items being evaluated,
    and the best estimated fitness so far."""

    def __init__(self, console=None) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[best]}"),
            console=console,
        )
        self._gens = None
        self._cands = None
        self._items = None
        self._started = False

    def _start(self) -> None:
        if not self._started:
            self.progress.start()
            self._started = True

    def start(self, generations: int, done: int) -> None:
        self._start()
        self._gens = self.progress.add_task(
            "generations", total=generations, completed=done, best=""
        )

    def generation(self, generation: int, size: int, reused: int) -> None:
        if self._cands is not None:
            self.progress.remove_task(self._cands)
            self.progress.advance(self._gens)
        self._cands = self.progress.add_task(
            f"gen {generation + 1} candidates", total=size, best=""
        )

    def candidate(self, best: dict[str, float], reused: bool) -> None:
        self.progress.advance(self._cands)
        self.progress.update(self._gens, best=f"best: {_fmt(best)}")

    def phase(self, description: str) -> None:
        self._start()
        self.progress.console.print(description)

    def items(self, done: int, total: int) -> None:
        self._start()
        if self._items is None:
            self._items = self.progress.add_task("items", total=total, best="")
        self.progress.update(self._items, completed=done, total=total)

    def finish(self) -> None:
        if self._cands is not None:
            self.progress.advance(self._gens)
        if self._started:
            self.progress.stop()
