"""AdaLoRA, ElaLoRA, SoRA and RM-LoRA through the command line on a tiny model: rank events, the
final rank pattern, export to stock PEFT with equal logits, and resume equivalence (policy state,
including importance EMAs, masks, round counters and random generators, restored from checkpoint)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import peft
import pytest
import torch

from helpers import custom_task_args, make_model_dir
from test_cli import events, invoke, train_ok

SIX = "[query,key,value,attention.output,intermediate,layer.output]"
# 64 examples / batch 8 = 8 steps per epoch; 5 epochs = 40 optimizer steps.
METHOD_ARGS = {
    "adalora": ["method.lora_r=4", "method.target_rank=2", "method.init_warmup=6", "method.final_warmup=12",
                "method.mask_interval=2"],
    "elalora": ["method.lora_r=3", "method.max_rank=6", "method.b=4", "method.k=2", "method.init_warmup=4",
                "method.final_warmup=8", "method.mask_interval=4"],
    # ξ = 0.1 subtracted per step (the official threshold): the earlier η·ξ setting 10 at lr 1e-2
    "sora": ["method.lora_r=4", "method.sparse_lambda_2=0.1", "method.gate_init=normal"],
    "rmlora": ["method.lora_r=4", "method.random_rank=2", "method.lora_type=v2", "method.lora_dropout=0.1"],
}
POLICY_CLASS = {"adalora": ("rankadapt.methods.adalora", "AdaLoRA"), "elalora": ("rankadapt.methods.elalora", "ElaLoRA"),
                "sora": ("rankadapt.methods.sora", "SoRA"), "rmlora": ("rankadapt.methods.rmlora", "RMLoRA")}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("tiny-bert"))


def method_args(tmp: Path, model_dir: Path, run_dir: Path, method: str) -> list[str]:
    return custom_task_args(tmp, model_dir, run_dir) + [
        f"method.name={method}", f"method.lora_module={SIX}", "train.epochs=5", "train.learning_rate=1e-2",
        "train.eval_strategy=steps", "train.eval_steps=10", *METHOD_ARGS[method]]


@pytest.mark.parametrize("method", list(METHOD_ARGS))
def test_method_end_to_end_with_peft_export(method, model_dir, tmp_path):
    run_dir = tmp_path / "run"
    train_ok(*method_args(tmp_path, model_dir, run_dir, method))
    results = json.loads((run_dir / "results.json").read_text())
    assert results["method"] == method and results["steps"] == 40
    pattern = results["rank_pattern"]
    assert len(pattern) == 12  # six module types x two layers
    rank_events = events(run_dir, "ranks")
    if method == "adalora":
        assert sum(pattern.values()) == 2 * 12  # exactly the final budget b(T)
        assert rank_events[0]["total"] == 4 * 12 and rank_events[-1]["ranks"] == pattern
    elif method == "elalora":
        assert sum(pattern.values()) == 3 * 12  # the active total is conserved
        assert len(rank_events) > 1 and set(pattern.values()) != {3}, "ranks moved between matrices"
    elif method == "sora":
        assert sum(pattern.values()) < 4 * 12, "a large xi prunes gates"
        assert rank_events[-1]["ranks"] == pattern
    else:
        assert set(pattern.values()) == {4} and not rank_events  # RM-LoRA keeps its rank
    # Tiny BERT: d_in + d_out is 32 + 32 for attention maps, 32 + 64 for the feed-forward ones.
    feed_forward = lambda n: "intermediate" in n or (n.endswith("output.dense") and "attention" not in n)
    assert results["adapter_parameters"] == sum(r * (96 if feed_forward(n) else 64) for n, r in pattern.items())
    _assert_exported_adapter_matches_peft(run_dir, model_dir)


def _assert_exported_adapter_matches_peft(run_dir: Path, model_dir: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rankadapt.recipes.trained import load_trained, run_config_for

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    batch = tokenizer(["the film was good and nice", "bad awful plot"], padding=True, return_tensors="pt")
    base = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    reference = peft.PeftModel.from_pretrained(base, run_dir / "adapter").eval()
    ours = load_trained(run_dir, run_config_for(run_dir)).model
    with torch.no_grad():
        torch.testing.assert_close(ours(**batch).logits, reference(**batch).logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", list(METHOD_ARGS))
def test_resume_equals_an_uninterrupted_run(method, model_dir, tmp_path, monkeypatch):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    train_ok(*method_args(tmp_path, model_dir, straight, method))

    module, name = POLICY_CLASS[method]
    policy_class = getattr(importlib.import_module(module), name)
    original = policy_class.after_scheduler_step

    def crash_at_step_15(self, adapters, ctx):
        if ctx.step == 14:
            raise KeyboardInterrupt
        return original(self, adapters, ctx)

    monkeypatch.setattr(policy_class, "after_scheduler_step", crash_at_step_15)
    result = invoke("train", *method_args(tmp_path, model_dir, interrupted, method))
    assert result.exit_code == 130
    assert json.loads((interrupted / "checkpoint" / "loop.json").read_text())["step"] == 10
    monkeypatch.setattr(policy_class, "after_scheduler_step", original)
    train_ok(*method_args(tmp_path, model_dir, interrupted, method), "train.resume=true")

    untimed = lambda d, kind: [{k: v for k, v in e.items() if k != "samples_per_second"} for e in events(d, kind)]
    for kind in ("train", "ranks", "eval"):
        assert untimed(interrupted, kind) == untimed(straight, kind), kind
    a = json.loads((straight / "results.json").read_text())
    b = json.loads((interrupted / "results.json").read_text())
    assert a["final_metrics"] == b["final_metrics"] and a["rank_pattern"] == b["rank_pattern"]


def test_adalora_schedule_without_budgeting_phase_is_rejected(model_dir, tmp_path):
    args = method_args(tmp_path, model_dir, tmp_path / "run", "adalora")
    result = invoke("train", *args, "method.init_warmup=20", "method.final_warmup=20")
    assert result.exit_code == 2
    assert "method.init_warmup" in result.output and "method.final_warmup" in result.output
