"""``rankadapt report RUNS_DIR``: the tables and plots people expect from a method comparison.

Every ``results.json`` under RUNS_DIR is one run; its labels (task, model, method variant, seed) come
from the sweep's ``sweep-run.json`` when present, else from ``results.json``. Per task and method the
report gives the median over seeds (what the GLUE literature reports for five seeds), mean ± std
(sample std, n − 1), the adapter parameters achieved (and the budget requested), trainable parameters
and training time; then a GLUE-style average (the mean over tasks of each task's median main metric);
then what it summarises: models, data sizes, settings, versions. Metrics are ×100, from the metrics
after the last step (``final``) unless ``use="best"`` (the best evaluation during training, as the
official scripts' ``load_best_model_at_end`` reports).

The runs and the tables are built in :mod:`.report_tables` (re-exported here); this module writes
them out with the plots.

Written: ``report.md`` (plots as ``plots/*.png`` beside it) and ``report.html``, self-contained with
the PNGs inlined as base64, so it can be mailed or attached as one file.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..core.errors import DataError
from ..methods import registered_policies
from ..runtime.tracking import read_events
from . import plots
from .document import Document
from .report_tables import (TASK_ORDER, Group, RunRecord, _order, _seconds, average_table,  # noqa: F401  (re-exported)
                            collect_runs, data_table, group_runs, model_table, results_table, settings_table,
                            test_metric)
from .runner import MANIFEST


def build_report(root: str | Path, out_dir: str | Path | None = None, title: str | None = None,
                 use: str = "final") -> dict[str, Path]:
    """Write ``report.md``, ``report.html`` and ``plots/`` for the runs under ``root``."""
    if use not in ("final", "best"):
        raise DataError(f"use={use!r}: choose final (metrics after the last step) or best (best evaluation)")
    root = Path(root)
    out = Path(out_dir) if out_dir else root
    records = collect_runs(root)
    groups = group_runs(records, use)
    if not groups:
        raise DataError(f"the runs under {root} have no main metric in results.json; were they finished?")
    doc = Document(title or _default_title(root))
    tasks = list(dict.fromkeys(g.task for g in groups))
    multi_model = len({g.model for g in groups}) > 1
    doc.para(f"{len(records)} runs under `{root}`; generated {time.strftime('%Y-%m-%d %H:%M')}. "
             f"Metrics ×100 ({use}: {'after the last step' if use == 'final' else 'best evaluation during training'}); "
             "median and mean ± sample std over seeds.")
    doc.heading("Results")
    for task in tasks:
        task_groups = [g for g in groups if g.task == task]
        doc.heading(f"{task}: {task_groups[0].metric}", 3)
        doc.table(results_table(task_groups, multi_model))
        reported = test_metric(task_groups)
        if reported:  # the figure to report is on the test split; the table above is what selected
            doc.heading(f"{task}: {reported} (test split)", 3)
            doc.table(results_table(group_runs([r for g in task_groups for r in g.runs], use, reported), multi_model))
    if len(tasks) > 1:
        doc.heading("Average over tasks (GLUE-style)")
        doc.para("Mean over tasks of each task's median main metric; — where a method lacks a task.")
        doc.table(average_table(groups, tasks))
    _plots(doc, records, groups, out / "plots")
    _what_it_summarises(doc, records)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "report.md", "html": out / "report.html"}
    paths["markdown"].write_text(doc.markdown(relative_to=out))
    paths["html"].write_text(doc.html())
    return paths


def _default_title(root: Path) -> str:
    manifest = root / MANIFEST
    name = json.loads(manifest.read_text()).get("name") if manifest.is_file() else root.name
    return f"rankadapt report: {name}"


def _rank_adaptive(method: str | None) -> bool:
    policy = registered_policies().get(method or "")
    return bool(policy and policy.rank_adaptive)


def _plots(doc: Document, records: list[RunRecord], groups: list[Group], folder: Path) -> None:
    doc.heading("Plots")
    for task in dict.fromkeys(g.task for g in groups):
        runs = [r for r in sorted(records, key=_order) if r.task == task]
        metric = runs[0].results.get("metric_for_best", "accuracy")
        curves = [{"method": r.method, "events": read_events(r.run_dir)} for r in runs]
        doc.image(plots.learning_curves(task, curves, metric, folder / f"curves-{task}.png"),
                  f"{task}: training loss and eval {metric} per optimizer step (one line per seed)")
        adaptive = [c for r, c in zip(runs, curves) if _rank_adaptive(r.results.get("method"))]
        if adaptive:
            doc.image(plots.rank_budget(task, adaptive, folder / f"rank-budget-{task}.png"),
                      f"{task}: total active rank over optimizer steps (rank-adaptive methods)")
        for g in (g for g in groups if g.task == task and _rank_adaptive(g.runs[0].results.get("method"))):
            patterns = [r.results["rank_pattern"] for r in g.runs if r.results.get("rank_pattern")]
            if patterns:
                name = f"ranks-{task}-{g.model}-{g.method}.png"
                doc.image(plots.rank_heatmap(f"{task} / {g.method}: final ranks", patterns, g.runs[0].roles,
                                             folder / name), f"{task} / {g.model} / {g.method}: final rank per layer "
                                                             "and module type, mean over seeds")


def _what_it_summarises(doc: Document, records: list[RunRecord]) -> None:
    doc.heading("What this report summarises")
    doc.heading("Models", 3)
    doc.table(model_table(records))
    doc.heading("Data", 3)
    doc.table(data_table(records))
    doc.heading("Settings", 3)
    doc.para("As run (each run's `config.yaml`); several values are joined by /. Budgets are adapter "
             "parameters; the achieved count is in the results tables.")
    doc.table(settings_table(records))
    versions = records[0].results.get("versions") or {}
    total = sum(r.results.get("wall_seconds") or 0 for r in records)
    shown = ", ".join(f"{k} {v}" for k, v in versions.items() if v)
    doc.para(f"Compute: {_seconds(total)} of run time over {len(records)} runs. Versions: {shown or 'unknown'}.")
