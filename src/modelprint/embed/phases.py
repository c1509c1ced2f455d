"""Where an embed run's wall time goes: seconds per named phase, so a speed target is judged on its parts."""
from __future__ import annotations

import contextlib
import time
from typing import Iterator


class Phases:
    """Wall-clock seconds per phase (a phase entered twice adds up); ``other`` is what no phase covered."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._start = time.perf_counter()

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    def report(self) -> dict[str, float]:
        """Every phase and ``other`` (the rest of the time since this object was made), rounded to 0.1 s."""
        total = time.perf_counter() - self._start
        out = {name: round(s, 1) for name, s in self.seconds.items()}
        out["other"] = round(max(total - sum(self.seconds.values()), 0.0), 1)
        return out


def describe(report: dict[str, float]) -> str:
    """One line for the log and the CLI table: ``load 3 s, training 280 s, …``."""
    return ", ".join(f"{name} {s:.0f} s" for name, s in report.items())
