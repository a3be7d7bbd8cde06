"""The data of ``rankadapt report``: the runs under RUNS_DIR, grouped per task, model and method, and
the tables built from them (results, GLUE-style average, settings, data, models).

Every ``results.json`` is one :class:`RunRecord`; its labels come from the sweep's ``sweep-run.json``
when present, else from ``results.json``. A :class:`Group` holds the runs of one task, model and method
variant and their main metric ×100. The tables are :class:`~.document.Table` s; :mod:`.report` puts
them into ``report.md`` and ``report.html`` with the plots, and re-exports the names used elsewhere.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.config import method_names
from ..core.config_files import read_yaml
from ..core.errors import DataError
from ..methods import registered_policies
from .document import Table
from .runner import read_entry

TASK_ORDER = ("imdb", "cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli")


@dataclass
class RunRecord:
    run_dir: Path
    results: dict[str, Any]
    task: str
    model: str
    method: str
    seed: int
    config: dict[str, Any]
    roles: dict[str, str]

    def value(self, use: str = "final", metric: str | None = None) -> float | None:
        """The run's ``metric`` (default: the one that picked its best model) ×100."""
        metrics = self.results.get("best_metrics" if use == "best" else "final_metrics") or {}
        value = metrics.get(metric or self.results.get("metric_for_best"))
        return None if value is None else 100.0 * value


@dataclass
class Group:
    task: str
    model: str
    method: str
    runs: list[RunRecord]
    values: list[float]
    reported: str | None = None
    """The metric of ``values`` when it is not the one that picks the best model (VTAB-1k's test accuracy)."""

    @property
    def metric(self) -> str:
        return self.reported or self.runs[0].results.get("metric_for_best", "?")

    @property
    def median(self) -> float:
        return statistics.median(self.values)


def collect_runs(root: str | Path) -> list[RunRecord]:
    """Every finished run (a ``results.json``) under ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root} is not a directory of runs")
    records = []
    for path in sorted(root.rglob("results.json")):
        results = json.loads(path.read_text())
        entry = read_entry(path.parent)
        labels = entry["labels"] if entry else {
            "task": results["task"], "model": str(results["model"]).rstrip("/").split("/")[-1],
            "method": results["method"], "seed": results["seed"]}
        config = read_yaml(path.parent / "config.yaml") if (path.parent / "config.yaml").is_file() else {}
        meta = path.parent / "adapter" / "rankadapt.json"
        roles = json.loads(meta.read_text()).get("roles", {}) if meta.is_file() else {}
        records.append(RunRecord(path.parent, results, labels["task"], labels["model"], labels["method"],
                                 int(labels["seed"]), config, roles))
    if not records:
        raise DataError(f"no results.json under {root}; run `rankadapt sweep` or `rankadapt train` first")
    return records


def _order(record: RunRecord) -> tuple:
    task = TASK_ORDER.index(record.task) if record.task in TASK_ORDER else len(TASK_ORDER)
    method = record.results.get("method")
    order = method_names()
    return task, record.task, record.model, order.index(method) if method in order else 99, record.method


def group_runs(records: list[RunRecord], use: str = "final", metric: str | None = None) -> list[Group]:
    """Runs grouped by (task, model, method) with their main metric, or ``metric`` where they have it."""
    groups: dict[tuple[str, str, str], Group] = {}
    for record in sorted(records, key=_order):
        key = (record.task, record.model, record.method)
        group = groups.setdefault(key, Group(*key, runs=[], values=[], reported=metric))
        group.runs.append(record)
        value = record.value(use, metric)
        if value is not None:
            group.values.append(value)
    return [g for g in groups.values() if g.values]


# ==================================================================================================
# Tables
# ==================================================================================================

def test_metric(groups: list[Group]) -> str | None:
    """The test split's name for the main metric when runs select on a held-out validation split
    (``validation_accuracy`` picks, ``accuracy`` on test is reported: VTAB-1k), else None."""
    main = groups[0].metric
    name = main.removeprefix("validation_")
    finals = [r.results.get("final_metrics") or {} for g in groups for r in g.runs]
    return name if name != main and all(name in f for f in finals) else None


def _num(x: float | None) -> str:
    return "—" if x is None else f"{x:,.0f}"


def _seconds(x: float | None) -> str:
    if x is None:
        return "—"
    # Thresholds on the rounded value, so 119.6 s reads "2.0 min" beside its neighbours, not "120 s".
    return f"{x:.0f} s" if round(x) < 120 else f"{x / 60:.1f} min" if x < 7200 else f"{x / 3600:.1f} h"


def _median_of(group: Group, key: str) -> float | None:
    values = [r.results[key] for r in group.runs if r.results.get(key) is not None]
    return statistics.median(values) if values else None


def _params(group: Group) -> str:
    if not any(r.results.get("rank_pattern") is not None for r in group.runs):
        return "—"
    achieved = _num(_median_of(group, "adapter_parameters"))
    budget = group.runs[0].results.get("budget")
    return f"{achieved} (budget {budget:,})" if budget else achieved


def results_table(groups: list[Group], with_model: bool) -> Table:
    header = ["method", *(["model"] if with_model else []), "seeds", "median", "mean ± std",
              "adapter params", "trainable params", "train time (median)"]
    rows = []
    for g in groups:
        spread = f"{statistics.mean(g.values):.2f} ± {statistics.stdev(g.values):.2f}" if len(g.values) > 1 \
            else f"{g.values[0]:.2f}"
        rows.append([g.method, *([g.model] if with_model else []), str(len(g.values)), f"{g.median:.2f}", spread,
                     _params(g), _num(_median_of(g, "trainable_parameters")), _seconds(_median_of(g, "train_seconds"))])
    return Table(header, rows)


def average_table(groups: list[Group], tasks: list[str]) -> Table:
    """Rows (model, method), columns the tasks' medians and their mean (only when every task is there)."""
    rows: dict[tuple[str, str], dict[str, float]] = {}
    for g in groups:
        rows.setdefault((g.model, g.method), {})[g.task] = g.median
    table = Table(["method", "model", *tasks, "average"], [])
    for (model, method), by_task in rows.items():
        cells = [f"{by_task[t]:.2f}" if t in by_task else "—" for t in tasks]
        average = f"{statistics.mean(by_task.values()):.2f}" if len(by_task) == len(tasks) else "—"
        table.rows.append([method, model, *cells, average])
    return table


def _unique(values: list[Any]) -> str:
    shown = list(dict.fromkeys("—" if v is None else (", ".join(map(str, v)) if isinstance(v, list) else str(v))
                               for v in values))
    return " / ".join(shown)


def settings_table(records: list[RunRecord]) -> Table:
    """The settings of each method variant, as run (config.yaml); several values are joined by /."""
    by_method: dict[str, list[RunRecord]] = {}
    for r in sorted(records, key=_order):
        by_method.setdefault(r.method, []).append(r)
    header = ["method", "rank settings", "modules", "lr", "epochs", "batch", "max length", "seeds"]
    rows = []
    for label, runs in by_method.items():
        cfg = [r.config for r in runs]
        m = [c.get("method", {}) for c in cfg]
        t = [c.get("train", {}) for c in cfg]
        name = runs[0].results.get("method")
        policy = registered_policies().get(name)
        rank = "—" if policy is not None and not policy.injects_adapters else _rank_settings(name, m)
        trains = name != "none"  # none evaluates the pretrained model: no training settings apply
        rows.append([f"{label} ({name})" if label != name else label, rank,
                     "—" if rank == "—" else _unique([x.get("lora_module") for x in m]),
                     _unique([x.get("learning_rate") for x in t]) if trains else "—",
                     _unique([x.get("max_steps") and f"{x['max_steps']} steps" or x.get("epochs") for x in t])
                     if trains else "—",
                     _unique([x.get("batch_size") for x in t]) if trains else "—",
                     _unique([c.get("data", {}).get("max_length") for c in cfg]),
                     _unique(sorted({r.seed for r in runs}))])
    return Table(header, rows)


def _rank_settings(name: str, blocks: list[dict[str, Any]]) -> str:
    """The settings the method's module names (``report_keys``), then lora_alpha and the budget."""
    policy = registered_policies().get(name)
    keys = policy.report_keys if policy else ("lora_r",)
    parts = [f"{k} {_unique([b.get(k) for b in blocks])}" for k in (*keys, "lora_alpha")
             if any(b.get(k) is not None for b in blocks)]
    budget = _unique([b.get("budget") for b in blocks])
    return ", ".join(parts) + ("" if budget == "—" else f", budget {budget}")


def data_table(records: list[RunRecord]) -> Table:
    tasks: dict[str, list[RunRecord]] = {}
    for r in sorted(records, key=_order):
        tasks.setdefault(r.task, []).append(r)
    rows = []
    for task, runs in tasks.items():
        res = runs[0].results
        evals = ", ".join(f"{k} {v:,}" for k, v in (res.get("eval_examples") or {}).items())
        rows.append([task, _unique([r.results.get("train_examples") for r in runs]), evals,
                     res.get("metric_for_best", "?"), _unique([r.config.get("data", {}).get("max_length") for r in runs])])
    return Table(["task", "train examples", "eval examples", "main metric", "max length"], rows)


def model_table(records: list[RunRecord]) -> Table:
    models: dict[str, list[RunRecord]] = {}
    for r in records:
        models.setdefault(r.model, []).append(r)
    rows = []
    for label, runs in models.items():
        rows.append([label, _unique([r.results.get("model") for r in runs]), _num(_base_parameters(runs))])
    return Table(["model", "name", "parameters (with head)"], rows)


def _base_parameters(runs: list[RunRecord]) -> float | None:
    """The model's own parameters, head included: ``base_parameters`` of any run, else the total of a
    run without adapters (none/head/full count exactly the base model and its head; results written
    before ``base_parameters`` existed have only that)."""
    counts = [r.results.get("base_parameters") or (r.results.get("total_parameters")
                                                   if r.results.get("rank_pattern") is None else None) for r in runs]
    counts = [c for c in counts if c]
    return min(counts) if counts else None
