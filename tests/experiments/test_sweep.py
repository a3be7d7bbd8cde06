"""Sweeps: grid expansion and its rules, and a tiny sweep end to end (2 methods x 2 seeds) that is
interrupted, restarted (finished runs skipped, the interrupted one resumed), rerun, and reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from rankadapt.cli import app
from rankadapt.core.errors import ConfigError
from rankadapt.experiments.report import collect_runs, group_runs
from rankadapt.experiments.sweep import load_sweep

from helpers import make_model_dir, sentiment_rows, write_csv

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def write_sweep(path: Path, **spec) -> Path:
    path.write_text(yaml.safe_dump(spec))
    return path


def test_grid_expansion_labels_precedence_and_shared_method_keys(tmp_path):
    path = write_sweep(tmp_path / "s.yaml", name="g", output_root=str(tmp_path / "{name}"),
                       base={"method": {"lora_module": ["query"], "budget": 5000, "target_rank": 1},
                             "train": {"learning_rate": 1e-3, "epochs": 2}},
                       tasks=["sst2", {"name": "rte", "train": {"epochs": 5}, "data": {"max_length": 256}}],
                       methods=["none", {"name": "full", "train": {"learning_rate": 5e-5}},
                                {"name": "adalora", "label": "ada-r3", "lora_r": 3}],
                       seeds=[1, 2])
    sweep = load_sweep(path)
    assert len(sweep.runs) == 2 * 2 * 3 and sweep.root == tmp_path / "g"
    assert [r.seed for r in sweep.runs[:6]] == [1] * 6  # seeds outermost: a stopped sweep covers every method
    runs = {(r.task, r.method, r.seed): r for r in sweep.runs}
    ada = runs[("rte", "ada-r3", 2)].config
    assert (ada.method.name, ada.method.lora_r, ada.method.target_rank, ada.method.budget) == ("adalora", 3, 1, 5000)
    assert (ada.train.epochs, ada.train.learning_rate, ada.data.max_length, ada.train.seed) == (5, 1e-3, 256, 2)
    assert ada.resolved_output_dir() == tmp_path / "g" / "rte" / "all-MiniLM-L6-v2" / "ada-r3-seed2"
    full = runs[("rte", "full", 1)].config
    assert full.train.learning_rate == 5e-5 and "budget" not in full.method.model_fields_set  # shared keys filtered
    # overrides: sections go to every run; seeds/methods select (keeping the file's entry for a label)
    picked = load_sweep(path, ["seeds=[7]", "methods=ada-r3", "tasks=[sst2]", "train.epochs=1"])
    assert [r.seed for r in load_sweep(path, ["seeds=3,4", "methods=none", "tasks=rte"]).runs] == [3, 4]
    assert [(r.method, r.seed, r.config.method.lora_r, r.config.train.epochs) for r in picked.runs] == [("ada-r3", 7, 3, 1)]
    forced = load_sweep(path, ["train.epochs=1", "method.lora_r=4", "data.max_length=32"])
    assert {(r.config.train.epochs, r.config.data.max_length) for r in forced.runs} == {(1, 32)}  # beat the rte entry
    assert {r.config.method.lora_r for r in forced.runs if r.method == "ada-r3"} == {4}
    with pytest.raises(ConfigError, match="read by no method"):
        load_sweep(path, ["methods=[none]", "method.lora_r=4"])


@pytest.mark.parametrize("spec, message", [
    ({"methods": ["lora"], "base": {"method": {"target_rank": 2}}}, "read by no method of this sweep"),
    ({"methods": ["lora", {"name": "lora", "lora_r": 2}]}, "appears twice; give the variants distinct label"),
    ({"methods": [{"name": "lora", "target_rank": 2}]}, "method.name=lora does not use target_rank"),
    ({"methods": ["lora"], "base": {"output_dir": "x"}}, "from output_root"),
    ({"methods": ["lora"], "base": {"train": {"seed": 3}}}, "list the seeds under seeds:"),
    ({"methods": ["lora"], "output_dir": "x"}, "invalid sweep file"),
    ({"methods": ["lora"], "seeds": [1, 1]}, "each once"),
    ({"methods": [{"label": "x"}]}, "needs a name"),
    ({"methods": ["lora"], "tasks": [{"name": "rte", "epochs": 3}]}, "put settings under"),
    ({"methods": ["lora"], "grid": {}}, "invalid sweep file"),
])
def test_bad_sweep_files_are_clear_errors(spec, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        load_sweep(write_sweep(tmp_path / "s.yaml", **spec))


def test_shipped_sweeps_validate():
    for path in sorted((ROOT / "configs" / "sweeps").glob("*.yaml")):
        result = runner.invoke(app, ["config", "validate", str(path)])
        assert result.exit_code == 0, f"{path}: {result.output}"
        assert "ok: sweep" in result.output
    imdb = load_sweep(ROOT / "configs" / "sweeps" / "imdb-assignment.yaml")
    assert {"none", "full", "lora", "adalora", "elalora", "sora", "rmlora"} <= {r.config.method.name for r in imdb.runs}
    glue = load_sweep(ROOT / "configs" / "sweeps" / "glue-small.yaml")
    assert {r.config.data.task for r in glue.runs} == {"sst2", "mrpc", "rte", "cola", "imdb"}
    assert len({r.seed for r in glue.runs}) == 3


def test_tiny_sweep_end_to_end_interrupted_restarted_and_reported(tmp_path, monkeypatch):
    model = make_model_dir(tmp_path / "tiny")
    data = {"task": "custom", "train_file": str(write_csv(tmp_path / "train.csv", sentiment_rows(32, seed=1))),
            "eval_file": str(write_csv(tmp_path / "eval.csv", sentiment_rows(16, seed=2))),
            "max_length": 16, "cache_dir": str(tmp_path / "cache")}
    path = write_sweep(tmp_path / "tiny.yaml", name="tiny", output_root=str(tmp_path / "runs"),
                       base={"model": {"name": str(model)}, "data": data,
                             "method": {"lora_module": ["query", "value"], "budget": 1024},
                             "train": {"batch_size": 8, "epochs": 2, "learning_rate": 5e-3, "progress": False,
                                       "tensorboard": False, "device": "cpu"}},
                       methods=["lora", {"name": "adalora", "mask_interval": 1}], seeds=[0, 1])

    from rankadapt.methods.lora import LoRA

    original, seen = LoRA.after_scheduler_step, []

    def interrupt_second_lora_run(self, adapters, ctx):  # Ctrl-C during seed 1's LoRA run, after its first epoch
        seen.append(ctx.step)
        if ctx.step == 5 and seen.count(5) == 2:
            raise KeyboardInterrupt
        return original(self, adapters, ctx)

    monkeypatch.setattr(LoRA, "after_scheduler_step", interrupt_second_lora_run)
    first = runner.invoke(app, ["sweep", str(path)])
    assert first.exit_code == 130 and "rerun the same command to continue" in first.output
    runs = tmp_path / "runs" / "custom" / "tiny"
    assert (runs / "adalora-seed0" / "results.json").is_file() and not (runs / "lora-seed1" / "results.json").exists()
    manifest = json.loads((tmp_path / "runs" / "sweep.json").read_text())
    assert manifest["runs"][str(runs / "lora-seed1")]["status"] == "interrupted"
    finished_at = (runs / "lora-seed0" / "results.json").stat().st_mtime_ns

    monkeypatch.setattr(LoRA, "after_scheduler_step", original)
    second = runner.invoke(app, ["sweep", str(path), "--report"])
    assert second.exit_code == 0, second.output
    assert "lora / seed 0: finished, skipped" in second.output and "lora / seed 1: resuming" in second.output
    assert "2 ran, 2 skipped" in second.output and "report:" in second.output
    assert (runs / "lora-seed0" / "results.json").stat().st_mtime_ns == finished_at

    third = runner.invoke(app, ["sweep", str(path)])
    assert third.exit_code == 0 and "0 ran, 4 skipped" in third.output
    changed = runner.invoke(app, ["sweep", str(path), "train.learning_rate=1e-3"])
    assert changed.exit_code == 2 and "4 finished runs were made with other settings" in changed.output

    results = {d.name: json.loads((d / "results.json").read_text()) for d in runs.iterdir()}
    assert all(r["steps"] == 8 and r["budget"] == 1024 for r in results.values())
    assert {r["adapter_parameters"] for r in results.values()} == {1024}  # equal budgets: 4 matrices of 32 x 32
    groups = {g.method: g for g in group_runs(collect_runs(tmp_path / "runs"))}
    for method in ("lora", "adalora"):
        values = sorted(100 * results[f"{method}-seed{s}"]["final_metrics"]["accuracy"] for s in (0, 1))
        assert groups[method].median == pytest.approx(sum(values) / 2)  # the median of two seeds is their mean
    md = (tmp_path / "runs" / "report.md").read_text()
    assert f"| lora | 2 | {groups['lora'].median:.2f} |" in md
    assert {p.name for p in (tmp_path / "runs" / "plots").glob("*.png")} == {
        "curves-custom.png", "rank-budget-custom.png", "ranks-custom-tiny-adalora.png"}
