"""One small logger interface for every event of a run.

Every event goes to ``metrics.jsonl`` (one JSON object per line, each with ``step`` and ``event``;
strict JSON: a non-finite number is written as null) and its numeric fields to TensorBoard. Only the main process writes; the others get a no-op logger.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..core.errors import TrainingError
from ..core.ownership import crash_point

METRICS_FILE = "metrics.jsonl"


class RunLogger:
    def __init__(self, run_dir: Path, tensorboard: bool = True, enabled: bool = True) -> None:
        self.enabled = enabled
        self.path = Path(run_dir) / METRICS_FILE
        self._writer = None
        self.events_logged = 0  # a fresh run empties the file; a resume sets it (truncate_to)
        if enabled and tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def log(self, event: str, step: int, **fields: Any) -> None:
        if not self.enabled:
            return
        record = {"event": event, "step": step, **fields}
        # One write of one whole line: a crash leaves at most a partial last line, which a resume drops.
        line = json.dumps(_finite(record), default=_jsonable, allow_nan=False) + "\n"
        with self.path.open("a") as f:
            f.write(line)
        self.events_logged += 1
        crash_point("metrics.jsonl: event written")
        if self._writer is not None:
            for key, value in fields.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    self._writer.add_scalar(f"{event}/{key}", value, step)

    def truncate_to(self, events: int | None, step: int) -> None:
        """On resume: keep the first ``events`` lines (those logged when the checkpoint was written),
        so that the file continues exactly as an uninterrupted run's; later ``config_changed``
        events are kept too (they describe the run, not its progress). A partial last line (a crash
        mid-write) is dropped. Checkpoints without the count fall back to the events up to ``step``."""
        if not self.enabled:
            return
        lines = _lines(self.path)
        if events is None:
            kept = [line for line in lines if _parse(self.path, line, lines) is not None
                    and _parse(self.path, line, lines).get("step", 0) <= step]
        else:
            if len(lines) < events:
                raise TrainingError(f"{self.path} holds {len(lines)} events but the checkpoint was written after "
                                    f"{events}: it was truncated or replaced. Restore it, or start the run afresh")
            later = [line for line in lines[events:] if (_parse(self.path, line, lines) or {}).get("event")
                     == "config_changed"]
            kept = lines[:events] + later
        for line in kept:
            if _parse(self.path, line, lines) is None:
                raise TrainingError(f"{self.path} has a corrupt line ({line[:60]!r}) before the checkpoint's position; "
                                    "restore the file or start the run afresh in another output_dir")
        _replace_text(self.path, "".join(line + "\n" for line in kept))
        self.events_logged = len(kept)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def read_events(run_dir: Path, event: str | None = None) -> list[dict[str, Any]]:
    """The events of a run (a partial last line, left by a crash mid-write, is skipped)."""
    path = Path(run_dir) / METRICS_FILE
    lines = _lines(path)
    records = [r for r in (_parse(path, line, lines) for line in lines) if r is not None]
    return [r for r in records if event is None or r.get("event") == event]


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def _parse(path: Path, line: str, lines: list[str]) -> dict[str, Any] | None:
    """One event; None for a partial last line; a corrupt line elsewhere is an error."""
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        if line is lines[-1]:
            return None
        raise TrainingError(f"{path} has a corrupt line ({line[:60]!r}); restore the file or remove that line") from None


def _replace_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: such values are written as null (a NaN loss stops the run anyway)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return _finite(value.item())
    return str(value)
