"""``rankadapt predict`` uses the settings the run trained with (max length, labels, single texts or
pairs) unless told otherwise, the merged export carries them, and the final line of ``train`` shows
every metric of the task."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rankadapt.cli import app, final_line
from rankadapt.core.errors import ConfigError
from rankadapt.recipes.trained import completed_meta, load_trained, run_config_for
from rankadapt.tasks.text_classification.family import predict_texts, split_pairs

from helpers import custom_task_args, make_model_dir

runner = CliRunner()
RUN_MAX_LENGTH = 12
# Long enough (about 40 tokens) that truncation at 12 and at 48 tokens give different probabilities; 48 stays
# within the tiny model's 64 positions (an explicit --max-length beyond them is refused).
LONG_TEXT = "the movie was good and nice " + "but the plot was boring and weak and sad " * 3


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> tuple[Path, Path, str]:
    """A tiny LoRA run at data.max_length=12; (run dir, tmp dir, the train command's output)."""
    tmp = tmp_path_factory.mktemp("predict")
    model_dir = make_model_dir(tmp / "model")
    args = custom_task_args(tmp, model_dir, tmp / "run") + ["method.name=lora", f"data.max_length={RUN_MAX_LENGTH}"]
    result = runner.invoke(app, ["train", *args])
    assert result.exit_code == 0, result.output
    return tmp / "run", tmp, result.output


def _predict(*args) -> tuple[list[dict], str]:
    result = runner.invoke(app, ["predict", *map(str, args)])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.strip().splitlines()], result.stderr


def _probability_at(run_dir: Path, max_length: int) -> float:
    config = run_config_for(run_dir)
    trained = load_trained(run_dir, config)
    assert trained.label_names == ("negative", "positive")
    return predict_texts(trained.model, trained.processor, [LONG_TEXT], label_names=trained.label_names,
                         max_length=max_length)[0]["probability"]


def test_predict_uses_the_runs_max_length_by_default_and_the_option_overrides(trained_run):
    run_dir, _, _ = trained_run
    at_run_length, at_48 = _probability_at(run_dir, RUN_MAX_LENGTH), _probability_at(run_dir, 48)
    assert at_run_length != pytest.approx(at_48, abs=1e-6)  # otherwise the test could not tell them apart

    (record,), told = _predict(run_dir, LONG_TEXT)
    assert record["probability"] == pytest.approx(at_run_length, abs=1e-6)
    assert f"truncated to {RUN_MAX_LENGTH} tokens" in told and "negative, positive" in told
    (record,), told = _predict(run_dir, LONG_TEXT, "--max-length", 48)
    assert record["probability"] == pytest.approx(at_48, abs=1e-6)
    assert "truncated to 48 tokens" in told


def test_adapter_and_merged_export_carry_the_runs_settings(trained_run):
    run_dir, tmp, _ = trained_run
    expected = {"task": "custom", "max_length": RUN_MAX_LENGTH, "label_names": ["negative", "positive"],
                "is_pair": False, "family": "text-classification"}

    def settings(path):
        _, _, meta = completed_meta(path, run_config_for(path))
        return {key: meta[key] for key in expected}

    assert settings(run_dir / "adapter") == expected
    result = runner.invoke(app, ["export", str(run_dir), "--merged", str(tmp / "merged")])
    assert result.exit_code == 0, result.output
    assert settings(tmp / "merged") == expected
    (from_run,), _ = _predict(run_dir, LONG_TEXT)
    (from_merged,), _ = _predict(tmp / "merged", LONG_TEXT)
    assert (from_merged["label"], from_merged["probability"]) == pytest.approx(
        (from_run["label"], from_run["probability"]), abs=1e-5)


def test_pair_tasks_take_tab_separated_inputs_and_reject_single_texts():
    pairs = {"task": "mrpc", "max_length": 128, "label_names": ["not_equivalent", "equivalent"], "is_pair": True}
    assert split_pairs(["a cat sat\tthe cat sat", "b\tc"], pairs) == (["a cat sat", "b"], ["the cat sat", "c"])
    with pytest.raises(ConfigError, match=r"sentence pairs \(task mrpc\).*<TAB>.*'only one sentence'"):
        split_pairs(["a\tb", "only one sentence"], pairs)
    single = {"task": "sst2", "max_length": 128, "label_names": ["negative", "positive"], "is_pair": False}
    assert split_pairs(["a\tb"], single) == (["a\tb"], None)


def test_final_line_prints_every_metric_of_the_task(trained_run):
    results = {"method": "lora", "task": "mrpc", "metric_for_best": "accuracy", "steps": 60, "best_step": 40,
               "final_metrics": {"accuracy": 0.7402, "f1": 0.8291, "loss": 0.55},
               "best_metrics": {"f1": 0.8333, "accuracy": 0.75, "loss": 0.5}}
    assert final_line(results) == ("lora on mrpc: accuracy 0.7402, f1 0.8291 (final); "
                                   "accuracy 0.7500, f1 0.8333 (best, step 40)")
    assert final_line({**results, "best_step": 60}) == "lora on mrpc: accuracy 0.7402, f1 0.8291 (final)"
    # end to end: a two-class custom task reports accuracy and F1 of class 1
    _, _, output = trained_run
    line = next(line for line in output.splitlines() if line.startswith("lora on custom:"))
    assert "accuracy " in line and "f1 " in line and "loss" not in line


def test_stock_peft_gets_the_label_names_with_the_readme_recipe(trained_run):
    """README, "Exported adapters and PEFT": the label names of rankadapt.json as id2label/label2id."""
    import peft
    from transformers import AutoModelForSequenceClassification

    run_dir, tmp, _ = trained_run
    names = json.loads((run_dir / "adapter" / "rankadapt.json").read_text())["label_names"]
    base = AutoModelForSequenceClassification.from_pretrained(
        tmp / "model", id2label=dict(enumerate(names)), label2id={name: i for i, name in enumerate(names)})
    model = peft.PeftModel.from_pretrained(base, run_dir / "adapter")
    assert model.config.id2label == {0: "negative", 1: "positive"}
    assert model.config.label2id == {"negative": 0, "positive": 1}
