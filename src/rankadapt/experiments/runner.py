"""Running a sweep: sequentially, in-process (``rankadapt.recipes.finetune.train``), safe to interrupt.

A run is *finished* when its ``results.json`` exists (training writes it last, atomically); finished
runs are skipped. A run that was interrupted has a ``checkpoint/`` but no ``results.json`` and
continues with ``train.resume=true``, so its result equals an uninterrupted run's. Each run directory
holds ``sweep-run.json`` (its labels and the requested configuration, written before training): a
finished run whose configuration has since changed is reported and kept unless ``rerun_changed``,
and a checkpoint of other settings is never resumed. ``{output_root}/sweep.json`` records every
run's status, main metric and time, across restarts. A run that fails with a user-facing error is
recorded and the sweep goes on; the sweep then ends with an error listing how many failed.

In the terminal: what each run is doing (running, resuming, skipped as finished, failed) as status
messages on stderr (:mod:`rankadapt.core.messages`); each run's main metric as it finishes, and at
the end a table of the median over seeds per method × task of every finished run of the sweep (those
skipped as finished included), as results, to ``echo`` (the command line's stdout).
"""

from __future__ import annotations

import gc
import json
import logging
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.config import RunConfig
from ..core.errors import ConfigError, RankAdaptError, TrainingError
from ..runtime.checkpoint import has_checkpoint
from .sweep import Sweep, SweepRun

log = logging.getLogger(__name__)

MANIFEST = "sweep.json"
ENTRY_FILE = "sweep-run.json"
RESULTS_FILE = "results.json"
_VOLATILE = {"train": ("resume", "progress", "save_final_checkpoint")}
"""Settings that do not change a run's result; a rerun with other values is the same run."""


def fingerprint(config: RunConfig) -> dict[str, Any]:
    """The requested configuration, minus settings that do not change a run's result."""
    dumped = config.model_dump(mode="json")
    for section, keys in _VOLATILE.items():
        for key in keys:
            dumped[section].pop(key, None)
    return dumped


def run_status(run: SweepRun) -> str:
    """``finished``, ``changed`` (finished with other settings), ``partial`` (resumable) or ``new``."""
    entry = read_entry(run.run_dir)
    same = entry is None or entry.get("config") == fingerprint(run.config)
    if (run.run_dir / RESULTS_FILE).is_file():
        return "finished" if same else "changed"
    if entry is not None and same and has_checkpoint(run.run_dir):
        return "partial"
    return "new"


def read_entry(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / ENTRY_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def _write_json(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str))
    tmp.replace(path)


class Manifest:
    """``{output_root}/sweep.json``: every run's status, kept across restarts and filtered reruns."""

    def __init__(self, sweep: Sweep) -> None:
        self.path = sweep.root / MANIFEST
        old = json.loads(self.path.read_text()) if self.path.is_file() else {}
        self.record = {"name": sweep.name, "source": sweep.source, "runs": old.get("runs", {})}

    def mark(self, run: SweepRun, status: str, **fields: Any) -> None:
        key = str(run.run_dir)
        self.record["runs"][key] = {**run.labels, "status": status, **fields}
        self.record["updated"] = time.strftime("%Y-%m-%d %H:%M:%S")
        _write_json(self.path, self.record)


def _main_metric(results: dict[str, Any]) -> dict[str, Any]:
    name = results.get("metric_for_best")
    return {"metric": name, "value": results.get("final_metrics", {}).get(name),
            "seconds": results.get("train_seconds")}


def run_sweep(sweep: Sweep, *, rerun_changed: bool = False, dry_run: bool = False,
              echo: Callable[[str], None] = print) -> dict[str, int]:
    """Run every unfinished combination; returns counts by outcome. ``echo`` is given the results (the
    dry run's listing, each run's metric, the table, the counts); status goes to the log. See the
    module docstring."""
    statuses = [run_status(run) for run in sweep.runs]
    changed = [run for run, status in zip(sweep.runs, statuses) if status == "changed"]
    if dry_run:
        for run, status in zip(sweep.runs, statuses):
            echo(f"{status:<9} {run.describe():<50} {run.run_dir}")
        return _count(statuses)
    if changed and not rerun_changed:
        listed = "\n  ".join(str(r.run_dir) for r in changed[:5]) + ("\n  ..." if len(changed) > 5 else "")
        raise ConfigError(f"{len(changed)} finished runs were made with other settings than the sweep asks now:\n  "
                          f"{listed}\nkeep them (use another output_root), delete them, or pass --rerun-changed")
    manifest, failures, outcome, finished = Manifest(sweep), [], [], []
    total = len(sweep.runs)
    for index, (run, status) in enumerate(zip(sweep.runs, statuses), 1):
        if status == "finished":
            log.info(f"[{index}/{total}] {run.describe()}: finished, skipped")
            result = json.loads((run.run_dir / RESULTS_FILE).read_text())
            manifest.mark(run, "finished", **_main_metric(result))
            outcome.append("skipped")
            finished.append((run, result))
            continue
        result = _execute(run, status == "partial", manifest, f"[{index}/{total}]", echo)
        outcome.append("failed" if result is None else "ran")
        if result is None:
            failures.append(run)
        else:
            finished.append((run, result))
    if finished:
        echo("\n".join(summary_table(finished)))
    counts = _count(outcome)
    echo(f"sweep {sweep.name}: {counts.get('ran', 0)} ran, {counts.get('skipped', 0)} skipped (finished), "
         f"{counts.get('failed', 0)} failed; progress in {manifest.path}")
    if failures:
        raise TrainingError(f"{len(failures)} of {total} sweep runs failed (first: {failures[0].describe()}); see "
                            f"{manifest.path}. Fix the cause and rerun the same command: finished runs are skipped")
    return counts


def _execute(run: SweepRun, resume: bool, manifest: Manifest, prefix: str,
             echo: Callable[[str], None]) -> dict[str, Any] | None:
    from ..recipes.finetune import train

    config = run.config.model_copy(update={"train": run.config.train.model_copy(update={"resume": resume})})
    log.info(f"{prefix} {run.describe()}: {'resuming' if resume else 'running'} in {run.run_dir}")
    _write_json(run.run_dir / ENTRY_FILE, {"labels": run.labels, "config": fingerprint(run.config)})
    manifest.mark(run, "running")
    try:
        results = train(config)
    except RankAdaptError as err:
        manifest.mark(run, "failed", error=str(err))
        log.warning(f"{prefix} {run.describe()}: failed: {err}")
        return None
    except KeyboardInterrupt:
        manifest.mark(run, "interrupted")
        raise
    finally:
        gc.collect()
    main = _main_metric(results)
    manifest.mark(run, "finished", **main)
    echo(f"{prefix} {run.describe()}: {_format_main(main)}")
    return results


def _format_main(main: dict[str, Any]) -> str:
    value = "—" if main["value"] is None else f"{main['value']:.4f}"
    seconds = "" if main["seconds"] is None else f" after {main['seconds']:.0f} s of training"
    return f"{main['metric']} {value}{seconds}"


def summary_table(finished: list[tuple[SweepRun, dict[str, Any]]]) -> list[str]:
    """Lines of a method × task table: the median over seeds of each task's main metric (final
    evaluation), with the number of seeds; the report (``rankadapt report``) has the full picture."""
    cells: dict[tuple[str, str], list[float]] = {}
    metric_of: dict[str, str] = {}
    for run, results in finished:
        main = _main_metric(results)
        task = run.task if len({r.model for r, _ in finished}) == 1 else f"{run.task}/{run.model}"
        metric_of.setdefault(task, main["metric"])
        if main["value"] is not None:
            cells.setdefault((run.method, task), []).append(main["value"])
    methods = list(dict.fromkeys(run.method for run, _ in finished))
    tasks = list(metric_of)
    rows = [["method", *(f"{t} {metric_of[t]}" for t in tasks)]]
    for method in methods:
        values = [cells.get((method, t)) for t in tasks]
        rows.append([method, *(f"{statistics.median(v):.4f} ({len(v)})" if v else "—" for v in values)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    return ["median over seeds of the final main metric (number of seeds):", *lines]


def _count(items: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return counts
