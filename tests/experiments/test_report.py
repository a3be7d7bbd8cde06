"""The report on hand-made run directories: medians and mean ± std checked by hand, the GLUE-style
average, budgets beside achieved counts, plots written, HTML self-contained."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from rankadapt.cli import app
from rankadapt.core.errors import DataError
from rankadapt.experiments.plots import layer_and_type, rank_grid
from rankadapt.experiments.report import _seconds, build_report, collect_runs, group_runs

runner = CliRunner()
PATTERN = {f"bert.encoder.layer.{i}.attention.self.{m}": r for i, (m, r) in
           enumerate([("query", 1), ("value", 3), ("query", 2), ("value", 0)])}


def write_run(root: Path, task: str, method: str, seed: int, value: float, metric: str = "accuracy",
              adaptive: bool = False, budget: int | None = None) -> Path:
    """A finished run as training and the sweep leave it: results.json, config.yaml, metrics.jsonl, sweep-run.json."""
    run_dir = root / task / "tiny" / f"{method}-seed{seed}"
    run_dir.mkdir(parents=True)
    results = {"task": task, "method": method, "model": "org/tiny", "seed": seed, "metric_for_best": metric,
               "final_metrics": {metric: value, "loss": 0.5}, "best_metrics": {metric: value + 0.01},
               "trainable_parameters": 3000, "total_parameters": 30000, "adapter_parameters": 1024,
               "train_seconds": 10.0 + seed, "wall_seconds": 12.0, "train_examples": 100,
               "eval_examples": {"validation": 40}, "versions": {"torch": "2.x"}}
    if method != "none":
        results["rank_pattern"] = PATTERN
    if budget:
        results["budget"] = budget
    (run_dir / "results.json").write_text(json.dumps(results))
    method_block = {"name": method, "lora_r": 4, "lora_alpha": 16.0, "lora_module": ["query", "value"], "budget": budget}
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"method": method_block, "data": {"max_length": 64},
                                                         "train": {"learning_rate": 1e-3, "epochs": 2, "batch_size": 8}}))
    events = [{"event": "train", "step": s, "loss": 1.0 / s} for s in range(1, 9)]
    events += [{"event": "eval", "step": 4, metric: value - 0.05}, {"event": "eval", "step": 8, metric: value, "final": True}]
    if adaptive:
        events += [{"event": "ranks", "step": 0, "ranks": PATTERN, "total": 12}, {"event": "ranks", "step": 5, "total": 6}]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    labels = {"task": task, "model": "tiny", "method": method, "seed": seed}
    (run_dir / "sweep-run.json").write_text(json.dumps({"labels": labels, "config": {}}))
    return run_dir


@pytest.fixture
def runs(tmp_path) -> Path:
    root = tmp_path / "runs"
    for seed, value in enumerate([0.70, 0.80, 0.75]):
        write_run(root, "rte", "lora", seed, value, budget=1000)
    for seed, value in enumerate([0.60, 0.90, 0.66]):
        write_run(root, "rte", "adalora", seed, value, adaptive=True, budget=1000)
    write_run(root, "rte", "none", 0, 0.5)
    for seed, value in enumerate([0.40, 0.50]):
        write_run(root, "cola", "lora", seed, value, metric="matthews_correlation")
    return root


def test_groups_have_the_hand_checked_medians(runs):
    groups = {(g.task, g.method): g for g in group_runs(collect_runs(runs))}
    assert groups[("rte", "lora")].median == pytest.approx(75.0)
    assert groups[("rte", "adalora")].median == pytest.approx(66.0)   # median of 60, 90, 66
    assert groups[("cola", "lora")].median == pytest.approx(45.0)     # two seeds: their mean
    best = {(g.task, g.method): g for g in group_runs(collect_runs(runs), use="best")}
    assert best[("rte", "lora")].median == pytest.approx(76.0)


def test_report_tables_plots_and_self_contained_html(runs, tmp_path):
    paths = build_report(runs, tmp_path / "out", title="tiny report")
    md = paths["markdown"].read_text()
    # rte: lora 70/80/75 -> median 75.00, mean 75.00 ± 5.00; adalora 60/90/66 -> 66.00, 72.00 ± 15.87
    assert "| lora | 3 | 75.00 | 75.00 ± 5.00 | 1,024 (budget 1,000) | 3,000 | 11 s |" in md
    assert "| adalora | 3 | 66.00 | 72.00 ± 15.87 |" in md
    assert "| none | 1 | 50.00 | 50.00 | — |" in md
    assert "### cola: matthews_correlation" in md and "| lora | 2 | 45.00 | 45.00 ± 7.07 |" in md
    # GLUE-style average: tasks in GLUE order (cola, rte); lora has both, adalora and none only rte
    assert "| method | model | cola | rte | average |" in md
    assert "| lora | tiny | 45.00 | 75.00 | 60.00 |" in md and "| adalora | tiny | — | 66.00 | — |" in md
    assert "| rte | 100 | validation 40 | accuracy | 64 |" in md  # data sizes it summarises
    plots = sorted(p.name for p in (tmp_path / "out" / "plots").glob("*.png"))
    assert plots == ["curves-cola.png", "curves-rte.png", "rank-budget-rte.png", "ranks-rte-tiny-adalora.png"]
    for name in plots:
        assert f"(plots/{name})" in md
    page = paths["html"].read_text()
    assert page.count("data:image/png;base64,") == 4 and 'src="plots/' not in page
    assert "<td>75.00 ± 5.00</td>" in page


def test_report_command_and_errors(runs, tmp_path):
    result = runner.invoke(app, ["report", str(runs)])
    assert result.exit_code == 0, result.output
    assert (runs / "report.html").is_file() and "report.md" in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no results.json"):
        collect_runs(empty)
    result = runner.invoke(app, ["report", str(runs), "--use", "worst"])
    assert result.exit_code == 2 and "choose final" in result.output


def test_rank_grid_is_layers_by_module_types():
    assert layer_and_type("bert.encoder.layer.3.attention.self.query") == (3, "attention.self.query")
    assert layer_and_type("bert.encoder.layer.3.attention.self.query", {"bert.encoder.layer.3.attention.self.query":
                                                                         "query"}) == (3, "query")
    roles = {name: name.rsplit(".", 1)[1] for name in PATTERN}
    other_seed = {name: rank + 1 for name, rank in PATTERN.items()}
    layers, kinds, grid = rank_grid([PATTERN, other_seed], roles)
    assert layers == [0, 1, 2, 3] and kinds == ["query", "value"]
    np.testing.assert_allclose(grid, [[1.5, np.nan], [np.nan, 3.5], [2.5, np.nan], [np.nan, 0.5]])


def test_durations_switch_units_on_the_rounded_value():
    assert [_seconds(x) for x in (None, 59.4, 119.4, 119.6, 150.0, 7300.0)] == \
        ["—", "59 s", "119 s", "2.0 min", "2.5 min", "2.0 h"]


def test_short_runs_plot_single_points_with_markers_and_legends(tmp_path, monkeypatch):
    from rankadapt.experiments import plots

    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or path)
    events = [{"event": "train", "step": 2, "loss": 0.69}, {"event": "eval", "step": 2, "accuracy": 0.5}]
    plots.learning_curves("rte", [{"method": "lora", "events": events}, {"method": "sora", "events": events}],
                          "accuracy", tmp_path / "curves.png")
    loss_ax, metric_ax = figures[0].axes
    assert [line.get_marker() for line in loss_ax.get_lines()] == ["o", "o"]  # a lone point is visible
    for ax in (loss_ax, metric_ax):
        assert [t.get_text() for t in ax.get_legend().get_texts()] == ["lora", "sora"]


def test_model_table_counts_parameters_with_head_from_adapter_runs(tmp_path):
    from rankadapt.experiments.report import model_table

    run_dir = write_run(tmp_path / "runs", "rte", "lora", 0, 0.7)
    results = json.loads((run_dir / "results.json").read_text())
    (run_dir / "results.json").write_text(json.dumps({**results, "base_parameters": 28976}))
    table = model_table(collect_runs(tmp_path / "runs"))
    assert table.rows == [["tiny", "org/tiny", "28,976"]]


def test_base_parameters_are_the_models_own_count_head_included():
    from conftest import tiny_model
    from rankadapt import MethodConfig, prepare_model
    from rankadapt.recipes.finetune import _adapter_tensor_parameters

    for method in ("lora", "sora", "elalora"):
        model = tiny_model()
        plain = sum(p.numel() for p in model.parameters())
        adapted = prepare_model(model, MethodConfig(name=method, lora_r=4))
        assert adapted.total_parameters() > plain
        assert adapted.total_parameters() - _adapter_tensor_parameters(adapted) == plain


def test_runs_selected_on_validation_report_the_test_split_too(tmp_path):
    """VTAB-1k: validation_accuracy picks the best model, accuracy on the test split is the figure to report."""
    for seed, (val, test) in enumerate([(0.70, 0.725), (0.60, 0.615), (0.80, 0.805)]):
        run_dir = write_run(tmp_path, "imagefolder", "lora", seed, val, metric="validation_accuracy")
        results = json.loads((run_dir / "results.json").read_text())
        results["final_metrics"]["accuracy"] = test
        (run_dir / "results.json").write_text(json.dumps(results))
    text = build_report(tmp_path)["markdown"].read_text()
    assert "### imagefolder: validation_accuracy" in text and "### imagefolder: accuracy (test split)" in text
    test_table = text.split("accuracy (test split)")[1].split("##")[0]
    assert "| lora | 3 | 72.50 |" in test_table  # the median of 72.5, 61.5, 80.5
    plain = build_report(write_run(tmp_path / "other", "sst2", "lora", 0, 0.9).parents[2])["markdown"].read_text()
    assert "(test split)" not in plain
