"""The command line end to end on a tiny model: outputs, PEFT loading, resume, eval/predict/export,
and a clear error with a non-zero exit for every kind of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import peft
import pytest
import torch
from typer.testing import CliRunner

from rankadapt.cli import app

from helpers import custom_task_args, make_model_dir, write_csv

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
# Enough steps for the tiny random-init encoder to leave its initial plateau and learn the task.
LEARNS = ["train.epochs=15", "train.learning_rate=1e-2"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("tiny-bert"))


def invoke(*args: str):
    result = runner.invoke(app, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def train_ok(*args: str):
    result = invoke("train", *args)
    assert result.exit_code == 0, result.output
    return result


def events(run_dir: Path, kind: str | None = None) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    return [r for r in records if kind is None or r["event"] == kind]


@pytest.mark.parametrize("method", ["none", "head", "full", "lora"])
def test_train_writes_the_output_contract(method, model_dir, tmp_path):
    run_dir = tmp_path / "run"
    args = custom_task_args(tmp_path, model_dir, run_dir)
    extra = ["method.lora_module=[query,value,intermediate]", "method.lora_r=4", *LEARNS] if method == "lora" else []
    result = train_ok(*args, f"method.name={method}", *extra)
    assert str(run_dir / "results.json") in result.output
    results = json.loads((run_dir / "results.json").read_text())
    for key in ("task", "method", "model", "seed", "final_metrics", "best_metrics", "trainable_parameters",
                "total_parameters", "steps", "train_seconds", "samples_per_second", "versions"):
        assert key in results, key
    assert results["method"] == method and results["task"] == "custom"
    assert 0.0 <= results["final_metrics"]["accuracy"] <= 1.0
    assert (run_dir / "config.yaml").is_file()
    assert all("step" in e for e in events(run_dir))
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    if method == "none":
        assert results["trainable_parameters"] == 0 and results["steps"] == 0
        assert not (run_dir / "checkpoint").exists()
        return
    assert results["steps"] == 8 * (15 if method == "lora" else 2)  # 64 examples / batch 8 x epochs
    assert (run_dir / "checkpoint" / "loop.json").is_file()
    assert events(run_dir, "train") and events(run_dir, "eval")
    if method == "lora":
        assert results["trainable_parameters"] < results["total_parameters"] / 3
        assert results["final_metrics"]["accuracy"] >= 0.9, "the tiny task is learnable"
        _assert_peft_loads_with_equal_logits(run_dir, model_dir)
    else:
        assert (run_dir / "model" / "config.json").is_file()


def _assert_peft_loads_with_equal_logits(run_dir: Path, model_dir: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rankadapt.recipes.evaluate import predict_path
    from rankadapt.recipes.trained import load_trained, run_config_for

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    batch = tokenizer(["the film was good and nice", "bad awful plot"], padding=True, return_tensors="pt")
    base = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=2)
    reference = peft.PeftModel.from_pretrained(base, run_dir / "adapter").eval()
    config = run_config_for(run_dir)
    ours = load_trained(run_dir, config).model
    with torch.no_grad():
        torch.testing.assert_close(ours(**batch).logits, reference(**batch).logits, atol=1e-5, rtol=0)
    predictions = predict_path(run_dir, ["the film was good and nice"])
    assert predictions[0]["label"] in ("negative", "positive")


def test_resume_equals_an_uninterrupted_run(model_dir, tmp_path, monkeypatch):
    common = custom_task_args(tmp_path, model_dir, tmp_path / "x") + [
        "method.name=lora", "method.lora_dropout=0.1", "train.eval_strategy=steps", "train.eval_steps=5"]
    straight = tmp_path / "straight"
    train_ok(*common, f"output_dir={straight}")

    interrupted = tmp_path / "interrupted"
    from rankadapt.methods.lora import LoRA

    calls = {"n": 0}
    original = LoRA.after_scheduler_step

    def crash_at_step_8(self, adapters, ctx):
        calls["n"] += 1
        if ctx.step == 7:
            raise KeyboardInterrupt
        return original(self, adapters, ctx)

    monkeypatch.setattr(LoRA, "after_scheduler_step", crash_at_step_8)
    result = invoke("train", *common, f"output_dir={interrupted}")
    assert result.exit_code == 130 and "train.resume=true" in result.output
    assert json.loads((interrupted / "checkpoint" / "loop.json").read_text())["step"] == 5
    monkeypatch.setattr(LoRA, "after_scheduler_step", original)
    train_ok(*common, f"output_dir={interrupted}", "train.resume=true")

    losses = lambda d: [(e["step"], e["loss"]) for e in events(d, "train")]
    assert losses(interrupted) == losses(straight)
    a = json.loads((straight / "results.json").read_text())
    b = json.loads((interrupted / "results.json").read_text())
    assert a["final_metrics"] == b["final_metrics"]


def test_eval_predict_and_merged_export(model_dir, tmp_path):
    run_dir = tmp_path / "run"
    train_ok(*custom_task_args(tmp_path, model_dir, run_dir), "method.name=lora", *LEARNS)
    results = json.loads((run_dir / "results.json").read_text())
    result = invoke("eval", run_dir)
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)["metrics"]
    # adapter/ holds the best evaluation's model (train.export=best), which may precede the last step
    assert metrics == pytest.approx(results["best_metrics"], rel=1e-6)
    result = invoke("eval", run_dir / "adapter", f"model.name={model_dir}", "data.task=custom",
                    f"data.train_file={tmp_path / 'data' / 'train.csv'}", f"data.eval_file={tmp_path / 'data' / 'eval.csv'}")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["metrics"]["accuracy"] == pytest.approx(metrics["accuracy"])
    result = invoke("predict", run_dir, "good great nice film", "bad awful sad plot")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert [p["label"] for p in lines] == ["positive", "negative"]
    result = invoke("export", run_dir, "--merged", tmp_path / "merged")
    assert result.exit_code == 0, result.output
    merged = invoke("eval", tmp_path / "merged", "data.task=custom", f"data.train_file={tmp_path / 'data' / 'train.csv'}",
                    f"data.eval_file={tmp_path / 'data' / 'eval.csv'}")
    assert merged.exit_code == 0, merged.output
    assert json.loads(merged.stdout)["metrics"]["accuracy"] == pytest.approx(metrics["accuracy"])


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(model_dir, tmp_path, monkeypatch):
    from rankadapt.methods.lora import LoRA

    def nan_after_step_4(self, adapters):
        self._calls = getattr(self, "_calls", 0) + 1
        return torch.tensor(float("nan")) if self._calls > 4 else None

    monkeypatch.setattr(LoRA, "regularization", nan_after_step_4)
    run_dir = tmp_path / "run"
    result = invoke("train", *custom_task_args(tmp_path, model_dir, run_dir), "method.name=lora",
                    "train.eval_strategy=steps", "train.eval_steps=2")
    assert result.exit_code == 2
    assert "loss became nan" in result.output and "last good checkpoint" in result.output
    assert "Traceback" not in result.output
    assert json.loads((run_dir / "checkpoint" / "loop.json").read_text())["step"] == 4


@pytest.mark.parametrize("make_args, message", [
    (lambda t: ["train.learnig_rate=1e-3"], "unknown key train.learnig_rate; did you mean train.learning_rate"),
    (lambda t: ["train.batch_size=many"], "train.batch_size: Input should be a valid integer"),
    (lambda t: ["data.max_length=4"], "data.max_length=4 is too short"),
    (lambda t: [f"data.train_file={t / 'nope.csv'}"], "nope.csv"),
    (lambda t: [f"data.train_file={write_csv(t / 'cols.csv', [('x', 'positive')], header=('sentence', 'label'))}"],
     "text"),
    (lambda t: [f"data.train_file={write_csv(t / 'labels.csv', [('good film', 'maybe')] * 4)}",
                "data.label_names=[negative,positive]"], "maybe"),
    (lambda t: [f"data.train_file={write_csv(t / 'empty.csv', [])}"], "empty"),
    (lambda t: ["method.name=lora", "method.lora_module=[query,attention]"], "unknown module name 'attention'"),
])
def test_bad_input_is_a_clear_error_with_nonzero_exit(make_args, message, model_dir, tmp_path):
    args = custom_task_args(tmp_path, model_dir, tmp_path / "run") + make_args(tmp_path)
    result = invoke("train", *args)
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and message in result.output, result.output
    assert "Traceback" not in result.output


def test_every_shipped_config_validates():
    configs = sorted((ROOT / "configs").rglob("*.yaml"))
    assert len(configs) >= 10
    for path in configs:
        result = invoke("config", "validate", path)
        assert result.exit_code == 0, f"{path}: {result.output}"


def test_config_show_prints_the_resolved_config():
    result = invoke("config", "show", "method.name=adalora", "method.target_rank=2", "train.seed=7")
    assert result.exit_code == 0, result.output
    assert "name: adalora" in result.output and "target_rank: 2" in result.output
    assert "runs/imdb-adalora-seed7" in result.output


def test_bf16_autocast_trains_on_cpu(model_dir, tmp_path):
    """Mixed precision is a config option; bf16 autocast runs on CPU and still learns the tiny task."""
    run_dir = tmp_path / "run"
    train_ok(*custom_task_args(tmp_path, model_dir, run_dir), "method.name=lora", *LEARNS, "train.mixed_precision=bf16")
    results = json.loads((run_dir / "results.json").read_text())
    assert results["final_metrics"]["accuracy"] >= 0.9


def test_yaml_no_is_read_as_the_option_no():
    from rankadapt.core.config_files import load_config

    config = load_config(None, ["train.mixed_precision=no", "train.eval_strategy=no"])
    assert config.train.mixed_precision == "no" and config.train.eval_strategy == "no"


@pytest.mark.parametrize("method", ["none", "full", "lora", "adalora", "elalora", "sora", "rmlora"])
def test_written_config_yaml_loads_back_as_the_same_config(method, tmp_path):
    """A run's config.yaml is a valid config: `rankadapt train run/config.yaml train.resume=true` works."""
    from rankadapt.core.config_files import load_config

    config = load_config(None, [f"method.name={method}", "train.seed=3"])
    (tmp_path / "config.yaml").write_text(config.to_yaml())
    assert load_config(tmp_path / "config.yaml") == config
