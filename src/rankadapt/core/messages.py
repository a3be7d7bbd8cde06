"""One channel for status messages: the ``rankadapt`` logger tree, on stderr, around the progress bars.

Every module that says something while it works (what a run trains on, a budget's plan, a resume, a
cache it could not write) logs it with ``logging.getLogger(__name__)``, a logger under ``rankadapt``;
nothing in the package prints status. Results (the final line of ``train``, ``eval``'s metrics,
``predict``'s JSON lines, ``config show``, report paths, a sweep's table) are the command line's to
print, on stdout, where scripts read them.

The command line calls :func:`setup_messages` once. It gives the ``rankadapt`` logger a handler that
writes each line through ``tqdm.write`` on stderr, so that a line never breaks a progress bar (the bar
is cleared, the line written, the bar drawn again), and a plain format: the message alone for
information, ``warning: ...`` and ``error: ...`` otherwise. Only the main process (``RANK`` 0 or
unset) writes below errors, as only it shows progress. A library user who never calls it keeps their
own logging configuration: the package adds no handler to any logger, and the root logger is never
touched.
"""

from __future__ import annotations

import logging
import os
import sys

ROOT = "rankadapt"


def is_main_process() -> bool:
    """``RANK`` 0 or unset: the process that writes status lines, files and results."""
    return os.environ.get("RANK", "0") == "0"


class _MainProcessOnly(logging.Filter):
    """Below errors, only the main process speaks (the others would repeat every line); the process is
    asked at each record, so a handler set up before ``RANK`` was known still obeys it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or is_main_process()


class _PlainFormatter(logging.Formatter):
    """The message alone for information; ``warning: `` or ``error: `` before it otherwise."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno >= logging.ERROR:
            return f"error: {text}"
        if record.levelno >= logging.WARNING:
            return f"warning: {text}"
        return text


class ProgressAwareHandler(logging.Handler):
    """Writes each record with ``tqdm.write(..., file=sys.stderr)``: a progress bar on stderr is cleared
    first and drawn again after. ``sys.stderr`` is looked up at every record (a test runner swaps it)."""

    def __init__(self, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.setFormatter(_PlainFormatter("%(message)s"))
        self.addFilter(_MainProcessOnly())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm.auto import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
            sys.stderr.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


def setup_messages(level: int | str = logging.INFO) -> logging.Logger:
    """Show the package's messages at ``level`` and above on stderr (see the module docstring).

    Idempotent: a second call only sets the level; there is never more than one handler, so never a
    line twice. The ``rankadapt`` logger stops propagating to the root logger, whose handlers (if some
    library installed one) would repeat the line in another format.
    """
    logger = logging.getLogger(ROOT)
    if not any(isinstance(handler, ProgressAwareHandler) for handler in logger.handlers):
        logger.addHandler(ProgressAwareHandler())
    logger.setLevel(level)
    logger.propagate = False
    return logger


def reset_messages() -> None:
    """Undo :func:`setup_messages`: the ``rankadapt`` logger as a library user finds it (tests use this)."""
    logger = logging.getLogger(ROOT)
    for handler in [h for h in logger.handlers if isinstance(h, ProgressAwareHandler)]:
        logger.removeHandler(handler)
    logger.setLevel(logging.NOTSET)
    logger.propagate = True
