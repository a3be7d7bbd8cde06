"""Sweeps and reports over the image and summarization families: a grid of methods on a tiny ViT and a
tiny BART through ``rankadapt sweep``, then ``rankadapt report`` with the families' metrics, the
rank heatmaps of their module names, and ``task_options`` set per sweep entry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from test_cli import invoke
from test_image_cli import vision  # noqa: F401  (fixture)
from test_summarization_cli import corpus  # noqa: F401  (fixture)
from seq2seq_fixtures import one_thread  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")
ADALORA = {"name": "adalora", "lora_r": 4, "target_rank": 2, "init_warmup": 1, "final_warmup": 2, "mask_interval": 1}
TRAIN = {"max_steps": 4, "batch_size": 8, "learning_rate": 1.0e-2, "eval_strategy": "no", "progress": False,
         "device": "cpu"}


def _sweep(path: Path, root: Path, base: dict, methods: list) -> Path:
    path.write_text(yaml.safe_dump({"name": "families", "output_root": str(root), "base": base,
                                    "methods": methods, "seeds": [1]}))
    return path


def _finished(root: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in root.rglob("results.json")}


def test_an_image_sweep_and_its_report(vision, tmp_path):  # noqa: F811
    base = {"model": {"name": str(vision["model"])},
            "data": {"task": "imagefolder", "train_dir": str(vision["train"]), "eval_dir": str(vision["eval"]),
                     "cache_dir": str(vision["tmp"] / "cache")},
            "task_options": {"top_k": 2}, "method": {"lora_module": ["query", "value"]}, "train": TRAIN}
    methods = ["head", "lora", ADALORA, {"name": "lora", "label": "lora-small", "lora_r": 2,
                                        "task_options": {"image_size": 16}}]
    sweep = _sweep(tmp_path / "sweep.yaml", tmp_path / "runs", base, methods)
    result = invoke("sweep", sweep, "--report")
    assert result.exit_code == 0, result.output
    runs = _finished(tmp_path / "runs")
    assert set(runs) == {"head-seed1", "lora-seed1", "adalora-seed1", "lora-small-seed1"}
    assert all(r["family"] == "image-classification" and "accuracy" in r["final_metrics"] for r in runs.values())
    small = yaml.safe_load((tmp_path / "runs" / "imagefolder" / "model" / "lora-small-seed1" / "config.yaml").read_text())
    assert small["task_options"] == {"protocol": "full", "image_column": "image", "top_k": 2, "image_size": 16}
    report = (tmp_path / "runs" / "report.md").read_text()
    assert "imagefolder" in report and "accuracy" in report and "adalora" in report
    assert list((tmp_path / "runs").rglob("*.png")), "plots, the AdaLoRA rank heatmap among them"


def test_a_summarization_sweep_and_its_report(corpus, tmp_path):  # noqa: F811
    base = {"model": {"name": str(corpus["bart"])},
            "data": {"task": "summarization", "train_file": str(corpus["train"]),
                     "eval_file": str(corpus["validation"]), "max_length": 16, "max_target_length": 8,
                     "cache_dir": str(corpus["tmp"] / "cache")},
            "task_options": {"num_beams": 1, "max_new_tokens": 4, "min_new_tokens": 1},
            "method": {"lora_module": ["q_proj", "v_proj"]}, "train": TRAIN}
    sweep = _sweep(tmp_path / "sweep.yaml", tmp_path / "runs", base, ["lora", ADALORA])
    result = invoke("sweep", sweep, "--report")
    assert result.exit_code == 0, result.output
    runs = _finished(tmp_path / "runs")
    assert set(runs) == {"lora-seed1", "adalora-seed1"}
    assert all(r["metric_for_best"] == "rougeL" and "rougeLsum" in r["final_metrics"] for r in runs.values())
    report = (tmp_path / "runs" / "report.md").read_text()
    assert "summarization" in report and "rougeL" in report
