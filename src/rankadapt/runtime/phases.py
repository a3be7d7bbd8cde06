"""Where a run's wall time goes: seconds per phase, recorded in ``results.json`` as ``phase_seconds``.

Why: on a short job the time outside the training loop (start-up, reading and tokenising the data,
loading the model, evaluation, export, checkpoints) is a large share of the whole (issue 22 measured
~18 of 95 s); this record shows which part, on every run, without a profiler.

``start_up`` is the time from the process's start to the recipe (interpreter, imports, reading the
config); it is read from ``/proc`` and absent where that is not available. Only the first clock of a
process records it: a later run in the same process (a benchmark's grid, a sweep) had no start-up.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_start_up_recorded = False


class PhaseClock:
    """Accumulates wall seconds per named phase; a phase may be entered several times."""

    def __init__(self) -> None:
        global _start_up_recorded
        self.seconds: dict[str, float] = {}
        started = None if _start_up_recorded else seconds_since_process_start()
        _start_up_recorded = True
        if started is not None:
            self.seconds["start_up"] = started

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        tic = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - tic)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def record(self) -> dict[str, float]:
        """The phases in the order first entered, rounded to milliseconds."""
        return {name: round(value, 3) for name, value in self.seconds.items()}


def seconds_since_process_start(proc: Path = Path("/proc")) -> float | None:
    """Seconds since this process started: system uptime less the process's start time (field 22 of
    ``/proc/self/stat``, in clock ticks since boot); None off Linux."""
    try:
        # The command name (field 2) may hold spaces and parentheses: split after its closing one.
        fields = (proc / "self" / "stat").read_text().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])  # field 22; fields[0] is field 3
        uptime = float((proc / "uptime").read_text().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):
        return None
