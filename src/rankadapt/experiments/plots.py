"""The report's figures (matplotlib, PNG): learning curves, final-rank heatmaps, rank budget over steps.

Everything is read from what runs write: ``metrics.jsonl`` (``train``, ``eval`` and ``ranks`` events)
and ``results.json`` (``rank_pattern``). Seeds of one method share a colour and are drawn as thin
lines, so the spread over seeds is visible without a statistical model of it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; no display (CI, servers, the sweep's own process)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..core.config import MODULE_NAMES  # noqa: E402

_LAYER = re.compile(r"\.(\d+)\.")
_MARKERS_UP_TO = 30
"""Loss curves with at most this many logged points are drawn with markers."""


def _colors(labels: Sequence[str]) -> dict[str, Any]:
    cmap = plt.get_cmap("tab10")
    return {label: cmap(i % 10) for i, label in enumerate(labels)}


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def learning_curves(task: str, runs: Sequence[dict[str, Any]], metric: str, path: Path) -> Path:
    """Training loss and the eval metric against optimizer steps, one colour per method.

    ``runs``: dicts with ``method`` (label), ``events`` (the run's metrics.jsonl records).
    """
    methods = list(dict.fromkeys(r["method"] for r in runs))
    colors = _colors(methods)
    fig, (loss_ax, metric_ax) = plt.subplots(1, 2, figsize=(11, 4))
    seen: set[str] = set()
    for run in runs:
        label = None if run["method"] in seen else run["method"]
        seen.add(run["method"])
        train = [(e["step"], e["loss"]) for e in run["events"] if e["event"] == "train" and "loss" in e]
        evals = [(e["step"], e[metric]) for e in run["events"] if e["event"] == "eval" and metric in e]
        if train:  # markers where there are few points: a run that logged once is a point, not an empty panel
            loss_ax.plot(*zip(*train), color=colors[run["method"]], lw=1, alpha=0.7, label=label,
                         marker="o" if len(train) <= _MARKERS_UP_TO else None, ms=3)
        if len(set(evals)) == 1 and not train:  # an untrained baseline (none): one value, drawn as a level
            metric_ax.axhline(evals[0][1], color=colors[run["method"]], lw=1, ls="--", alpha=0.8, label=label)
        elif evals:
            metric_ax.plot(*zip(*sorted(set(evals))), color=colors[run["method"]], lw=1, alpha=0.8, marker="o",
                           ms=3, label=label)
    loss_ax.set(title=f"{task}: training loss", xlabel="optimizer step", ylabel="loss")
    metric_ax.set(title=f"{task}: eval {metric}", xlabel="optimizer step", ylabel=metric)
    for ax in (loss_ax, metric_ax):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="best")
    return _save(fig, path)


def layer_and_type(name: str, roles: dict[str, str] | None = None) -> tuple[int, str]:
    """(layer index, module type) of an adapted matrix: ``bert.encoder.layer.3.attention.self.query``
    → (3, ``query`` when the run recorded roles, else ``attention.self.query``)."""
    match = _LAYER.search(name)
    layer = int(match.group(1)) if match else -1
    kind = (roles or {}).get(name) or (name[match.end():] if match else name)
    return layer, kind


def rank_grid(patterns: Sequence[dict[str, int]], roles: dict[str, str] | None = None
              ) -> tuple[list[int], list[str], np.ndarray]:
    """Mean final rank per (layer, module type) over ``patterns`` (one per seed)."""
    cells: dict[tuple[int, str], list[int]] = {}
    for pattern in patterns:
        for name, rank in pattern.items():
            cells.setdefault(layer_and_type(name, roles), []).append(rank)
    layers = sorted({layer for layer, _ in cells})
    known = {kind for _, kind in cells}
    kinds = [k for k in MODULE_NAMES if k in known] + sorted(known - set(MODULE_NAMES))
    grid = np.full((len(layers), len(kinds)), np.nan)
    for (layer, kind), ranks in cells.items():
        grid[layers.index(layer), kinds.index(kind)] = float(np.mean(ranks))
    return layers, kinds, grid


def rank_heatmap(title: str, patterns: Sequence[dict[str, int]], roles: dict[str, str] | None, path: Path) -> Path:
    """Final ranks as layers × module types (mean over seeds, annotated)."""
    layers, kinds, grid = rank_grid(patterns, roles)
    fig, ax = plt.subplots(figsize=(1.3 * len(kinds) + 2.5, 0.45 * len(layers) + 1.8))
    image = ax.imshow(grid, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(kinds)), kinds, rotation=30, ha="right")
    ax.set_yticks(range(len(layers)), [str(layer) for layer in layers])
    ax.set(xlabel="module type", ylabel="layer", title=title)
    top = np.nanmax(grid) if np.isfinite(grid).any() else 0
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            if np.isfinite(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.3g}", ha="center", va="center", fontsize=8,
                        color="black" if grid[i, j] > 0.6 * top else "white")
    fig.colorbar(image, ax=ax, label=f"final rank (mean of {len(patterns)} seed{'s' * (len(patterns) > 1)})")
    return _save(fig, path)


def rank_budget(task: str, runs: Sequence[dict[str, Any]], path: Path) -> Path:
    """Total active rank against optimizer steps (the ``ranks`` events), for rank-adaptive runs."""
    methods = list(dict.fromkeys(r["method"] for r in runs))
    colors = _colors(methods)
    fig, ax = plt.subplots(figsize=(7, 4))
    seen: set[str] = set()
    for run in runs:
        points = [(e["step"], e["total"]) for e in run["events"] if e["event"] == "ranks"]
        if not points:
            continue
        final_step = max([e["step"] for e in run["events"]] + [points[-1][0]])
        steps, totals = zip(*(points + [(final_step, points[-1][1])]))
        ax.step(steps, totals, where="post", color=colors[run["method"]], lw=1.2, alpha=0.8,
                label=None if run["method"] in seen else run["method"])
        seen.add(run["method"])
    ax.set(title=f"{task}: rank budget (total active rank)", xlabel="optimizer step", ylabel="total rank")
    ax.grid(alpha=0.3)
    if seen:
        ax.legend(fontsize=8)
    return _save(fig, path)
