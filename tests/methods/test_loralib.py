"""Adapters from elsewhere: loralib checkpoints (lora_A / lora_B keys) round-trip with identical logits
and evaluate from the command line; init_from copies another adapter into a new run's layers."""

from __future__ import annotations

import json
import shlex

import pytest
import torch
from typer.testing import CliRunner

from rankadapt.cli import app
from rankadapt.core.config import MethodConfig
from rankadapt.core.errors import ConfigError, ModelError
from rankadapt.methods.init_from import init_adapters_from
from rankadapt.methods.loralib import load_loralib, loralib_state_dict, save_loralib
from rankadapt.methods.export import export_peft
from rankadapt.methods.adapting import prepare_model

from conftest import tiny_batch, tiny_model
from helpers import custom_task_args, make_model_dir

runner = CliRunner()


def trained_like(method: str = "lora", seed: int = 1, num_labels: int = 2, **kwargs):
    """A tiny model with an adapter whose every factor is non-zero (as after training)."""
    adapted = prepare_model(tiny_model(num_labels=num_labels), MethodConfig(name=method, **kwargs))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in adapted.adapters.values():
            layer.lora_A.copy_(torch.randn(layer.lora_A.shape, generator=gen) * 0.3)
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=gen) * 0.3)
            if layer.gate_trainable:
                layer.lora_E.copy_(torch.randn(layer.lora_E.shape, generator=gen))
        adapted.model.classifier.weight.normal_(generator=gen)
    return adapted


def logits(model):
    with torch.no_grad():
        return model.eval()(**tiny_batch(batch=4, seed=3)).logits


@pytest.mark.parametrize("method, kwargs, alpha", [
    ("lora", {"lora_r": 4, "lora_module": ["query", "value"]}, 16.0),
    # AdaLoRA-like per-module ranks and scales (one zeroed λ): B is rescaled for loralib's single alpha.
    ("adalora", {"lora_r": 3, "lora_alpha": 12.0, "lora_module": ["query", "key", "intermediate"]}, 7.0),
])
def test_loralib_state_dict_round_trips_with_identical_logits(method, kwargs, alpha, tmp_path):
    source = trained_like(method, **kwargs)
    if method == "adalora":
        first = next(iter(source.adapters.values()))
        with torch.no_grad():
            first.lora_E[0] = 0.0
    path = save_loralib(source, tmp_path / "lora.bin", lora_alpha=alpha)
    state = torch.load(path, weights_only=True)
    name = "bert.encoder.layer.0.attention.self.query"
    assert state[f"{name}.lora_A"].shape[1] == 32 and state[f"{name}.lora_B"].shape[0] == 32
    assert "classifier.weight" in state
    loaded = load_loralib(tiny_model(), path, lora_alpha=alpha)
    assert loaded.adapters[name].capacity == state[f"{name}.lora_A"].shape[0]
    torch.testing.assert_close(logits(loaded.model), logits(source.model), atol=1e-5, rtol=0)


def test_foreign_prefixes_and_bad_checkpoints(tmp_path):
    source = trained_like(lora_r=2)
    state = {k.replace("bert.", "deberta.", 1): v for k, v in loralib_state_dict(source, 16.0).items()}
    torch.save(state, tmp_path / "prefixed.bin")  # as trained under another wrapper's prefix
    loaded = load_loralib(tiny_model(), tmp_path / "prefixed.bin", 16.0)
    torch.testing.assert_close(logits(loaded.model), logits(source.model), atol=1e-5, rtol=0)

    torch.save({"classifier.weight": torch.zeros(2, 32)}, tmp_path / "nolora.bin")
    with pytest.raises(ModelError, match="not a loralib checkpoint"):
        load_loralib(tiny_model(), tmp_path / "nolora.bin", 16.0)
    save_loralib(trained_like(num_labels=3), tmp_path / "mnli.bin", 16.0)
    with pytest.raises(ModelError, match="another label count"):
        load_loralib(tiny_model(num_labels=2), tmp_path / "mnli.bin", 16.0)
    with pytest.raises(ModelError, match="does not exist"):
        load_loralib(tiny_model(), tmp_path / "missing.bin", 16.0)


@pytest.mark.parametrize("method, kwargs", [("adalora", {"lora_r": 6}), ("elalora", {"lora_r": 4}),
                                            ("sora", {"lora_r": 5}), ("lora", {"lora_r": 8})])
def test_init_from_reproduces_the_source_when_capacity_allows(method, kwargs, tmp_path):
    source = trained_like(lora_r=4)
    export_peft(source, tmp_path / "adapter")
    target = prepare_model(tiny_model(), MethodConfig(name=method, lora_alpha=8.0, **kwargs))
    done = init_adapters_from(target, tmp_path, lora_alpha=8.0, echo=None)  # a run directory with adapter/
    assert len(done["copied"]) == 4 and done["head"] == ["bert.pooler", "classifier"]
    torch.testing.assert_close(logits(target.model), logits(source.model), atol=1e-5, rtol=0)


def test_init_from_truncates_keeps_fresh_heads_and_rejects_full(tmp_path):
    source = trained_like(lora_r=4)
    export_peft(source, tmp_path / "adapter")
    target = prepare_model(tiny_model(num_labels=3), MethodConfig(name="lora", lora_r=2))
    lines = []
    done = init_adapters_from(target, tmp_path / "adapter", lora_alpha=16.0, echo=lines.append)
    assert len(done["truncated"]) == 4 and done["head_skipped"] == ["classifier"] and done["head"] == ["bert.pooler"]
    assert "best rank-k approximation" in lines[0] and "another label count" in lines[0]
    name = "bert.encoder.layer.0.attention.self.query"
    expected = torch.linalg.svd(source.adapters[name].delta_weight().double())[1][:2]
    got = torch.linalg.svd(target.adapters[name].delta_weight().double())[1][:2]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)  # ΔW is the best rank-2 approximation
    with pytest.raises(ConfigError, match="needs an adapter method"):
        init_adapters_from(prepare_model(tiny_model(), MethodConfig(name="full")), tmp_path, 16.0, echo=None)
    with pytest.raises(ConfigError, match="not a run directory"):
        init_adapters_from(target, tmp_path / "nowhere", 16.0, echo=None)


def test_loralib_checkpoint_evaluates_and_starts_a_run_from_the_command_line(tmp_path):
    model_dir = make_model_dir(tmp_path / "tiny")
    args = custom_task_args(tmp_path, model_dir, tmp_path / "run", n_train=32, n_eval=16)
    save_loralib(trained_like(lora_r=2), tmp_path / "x.bin", 16.0)
    data = [a for a in args if a.startswith("data.")]
    # fp32, as run-glue below keeps the official scripts' precision (auto would pick bf16 where native)
    result = runner.invoke(app, ["eval", str(model_dir), "--lora_path", str(tmp_path / "x.bin"), *data,
                                 "train.mixed_precision=no"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["ranks"] and 0 <= metrics["metrics"]["accuracy"] <= 1
    glue = (f"--model_name_or_path {model_dir} --train_file {data[1].split('=')[1]} --validation_file "
            f"{data[2].split('=')[1]} --max_seq_length 16 --apply_lora --lora_r 4 --lora_path {tmp_path / 'x.bin'}")
    evaluated = runner.invoke(app, ["run-glue", *shlex.split(glue + " --do_eval"), f"data.cache_dir={tmp_path / 'c'}"])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["metrics"] == metrics["metrics"]
    chained = runner.invoke(app, ["run-glue", *shlex.split(glue + f" --do_train --num_train_epochs 1 --output_dir "
                                                                 f"{tmp_path / 'chained'}"), "train.progress=false"])
    assert chained.exit_code == 0, chained.output
    assert "init_from" in chained.output and "copied 4 adapted matrices" in chained.output
