"""Progress for every long phase of a run, on one channel: tqdm bars on stderr.

Training, tokenising, evaluating and exporting each show a bar (or, for a phase with no steps to
count, a line when it starts and its time when it ends), so a run is never silent for minutes.
Stdout stays for results (``predict``'s JSON lines, ``eval``'s metrics). Bars are shown only where
``show`` is true: the main process, with ``train.progress`` on. Status lines go through
:mod:`.messages`, which writes them around these bars.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager


def bar(total: int, desc: str, unit: str, show: bool, initial: int = 0, leave: bool = True, **options):
    """A tqdm bar on stderr. Phases inside training (evaluation) pass ``leave=False``: the bar goes
    away when done, and the metrics line that follows says what it found."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, leave=leave,
                disable=not show, file=sys.stderr, **options)


@contextmanager
def phase(desc: str, show: bool, leave: bool = True) -> Iterator[None]:
    """A phase with no steps to count (writing an export): ``desc ...`` when it starts,
    ``desc: done in 00:02`` when it ends (removed then if not ``leave``)."""
    with bar(1, desc, "phase", show, leave=leave, bar_format="{desc} ...") as status:
        yield
        status.bar_format = "{desc}: done in {elapsed}"
        status.n = 1  # shown once, by close()
