"""What a sweep shows in the terminal: each run's main metric as it finishes and, at the end, the
median over seeds per method × task (finished runs that were skipped included), on stdout; what each
run is doing, on stderr. Training is replaced
by a stand-in that writes a known results.json, so the table's medians can be checked exactly."""

from __future__ import annotations

import json

import yaml
from typer.testing import CliRunner

import rankadapt.recipes.finetune
from rankadapt.cli import app

runner = CliRunner()
# accuracy of (method, task, seed): the medians over seeds 0, 1, 2 are the middle values
ACCURACY = {("lora", "sst2"): [0.80, 0.82, 0.81], ("lora", "rte"): [0.50, 0.53, 0.52],
            ("adalora", "sst2"): [0.70, 0.74, 0.72], ("adalora", "rte"): [0.49, 0.47, 0.48]}


def fake_train(config):
    """Stand-in for rankadapt.recipes.finetune.train: writes results.json as a finished run does."""
    value = ACCURACY[(config.method.name, config.data.task)][config.train.seed]
    results = {"task": config.data.task, "method": config.method.name, "metric_for_best": "accuracy",
               "final_metrics": {"accuracy": value}, "train_seconds": 12.0}
    out = config.resolved_output_dir()
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results))
    return results


def test_sweep_prints_each_runs_metric_and_a_median_table(tmp_path, monkeypatch):
    monkeypatch.setattr(rankadapt.recipes.finetune, "train", fake_train)
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({"name": "grid", "output_root": str(tmp_path / "runs"), "tasks": ["sst2", "rte"],
                                    "methods": ["lora", "adalora"], "seeds": [0, 1, 2]}))
    first = runner.invoke(app, ["sweep", str(path), "seeds=0,1"])
    assert first.exit_code == 0, first.output
    assert "rte / all-MiniLM-L6-v2 / adalora / seed 1: accuracy 0.4700 after 12 s of training" in first.stdout
    # what each run is doing is status, on stderr; its metric, the table and the counts are results, on stdout
    assert "rte / all-MiniLM-L6-v2 / adalora / seed 1: running in" in first.stderr
    assert "running in" not in first.stdout and "0 failed" in first.stdout

    second = runner.invoke(app, ["sweep", str(path)])  # seeds 0 and 1 are skipped as finished, seed 2 runs
    assert second.exit_code == 0, second.output
    assert "sst2 / all-MiniLM-L6-v2 / lora / seed 0: finished, skipped" in second.stderr
    table = second.stdout.splitlines()
    start = table.index("median over seeds of the final main metric (number of seeds):")
    assert [line.split() for line in table[start + 1:start + 4]] == [
        ["method", "sst2", "accuracy", "rte", "accuracy"],
        ["lora", "0.8100", "(3)", "0.5200", "(3)"],
        ["adalora", "0.7200", "(3)", "0.4800", "(3)"]]
