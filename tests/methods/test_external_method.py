"""A method registered from outside the package trains, resumes and exports through the CLI with no other
change to rankadapt: its keys validate (and its typos are rejected), the run writes its settings, a resumed
run equals an uninterrupted one, the exported adapter loads in stock PEFT with the same logits, and the
official run_glue.py command line can select it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import external_method  # noqa: F401  (registers l2lora, as a user's plug-in module would)
from external_method import L2LoRA
from helpers import custom_task_args, make_model_dir
from test_cli import events, invoke, train_ok
from test_methods_cli import _assert_exported_adapter_matches_peft

ARGS = ["method.name=l2lora", "method.l2_weight=0.01", "method.lora_r=4", "method.lora_module=[query,value]",
        "train.epochs=2", "train.eval_strategy=steps", "train.eval_steps=5", "train.learning_rate=1e-2"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("tiny-bert"))


def test_its_keys_are_validated_and_documented(model_dir, tmp_path):
    shown = invoke("config", "show", "method.name=l2lora", "method.l2_weight=0.5")
    assert shown.exit_code == 0 and "l2_weight: 0.5" in shown.output and "init_std: 0.02" in shown.output
    typo = invoke("config", "validate", "method.name=l2lora", "method.l2_wieght=0.5")
    assert typo.exit_code == 2 and "method.name=l2lora does not use l2_wieght" in typo.output
    bad = invoke("config", "validate", "method.name=l2lora", "method.init_std=2")
    assert bad.exit_code == 2 and "method.init_std=2.0 would start A far from small" in bad.output
    other = invoke("config", "validate", "method.name=lora", "method.l2_weight=0.5")
    assert other.exit_code == 2 and "method.l2_weight is read by l2lora" in other.output


def test_it_trains_resumes_and_exports_through_the_cli(model_dir, tmp_path, monkeypatch):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    train_ok(*custom_task_args(tmp_path, model_dir, straight), *ARGS)
    results = json.loads((straight / "results.json").read_text())
    assert results["method"] == "l2lora" and results["steps"] == 16
    assert "l2_weight: 0.01" in (straight / "config.yaml").read_text()
    assert all("regularization" in e for e in events(straight, "train")), "the method's loss term is logged"
    _assert_exported_adapter_matches_peft(straight, model_dir)

    original = L2LoRA.after_optimizer_step

    def crash_at_step_8(self, adapters, ctx):
        if ctx.step == 7:
            raise KeyboardInterrupt
        return original(self, adapters, ctx)

    monkeypatch.setattr(L2LoRA, "after_optimizer_step", crash_at_step_8)
    assert invoke("train", *custom_task_args(tmp_path, model_dir, interrupted), *ARGS).exit_code == 130
    monkeypatch.setattr(L2LoRA, "after_optimizer_step", original)
    train_ok(*custom_task_args(tmp_path, model_dir, interrupted), *ARGS, "train.resume=true")
    untimed = lambda d: [{k: v for k, v in e.items() if k != "samples_per_second"} for e in events(d, "train")]
    assert untimed(interrupted) == untimed(straight)
    resumed = json.loads((interrupted / "results.json").read_text())
    assert resumed["final_metrics"] == results["final_metrics"]

    merged = tmp_path / "merged"
    assert invoke("export", str(straight), "--merged", str(merged)).exit_code == 0
    assert (merged / "config.json").is_file()


def test_run_glue_selects_it_by_its_flag():
    from rankadapt.experiments.run_glue import parse_glue_args

    command = parse_glue_args(["--model_name_or_path", "m", "--task_name", "rte", "--do_train", "--apply_l2lora",
                               "--lora_r", "4"])
    assert command.config.method.name == "l2lora" and command.config.method.lora_r == 4
