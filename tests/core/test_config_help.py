"""Every configuration key is documented where it is defined, and ``config show --help-keys`` prints each
key with its default, allowed values and meaning (the method's own keys, or every method's with --all)."""

from __future__ import annotations

import pytest

import rankadapt  # noqa: F401  (registers the methods)
from rankadapt.core.config import (DataConfig, ModelConfig, RunConfig, TrainConfig, method_names,
                                   registered_task_options, settings_class)
from rankadapt.core.config_help import key_help

from test_cli import invoke

SECTIONS = [ModelConfig, DataConfig, TrainConfig, RunConfig]


TASK_OPTIONS = list(dict.fromkeys(s for s in registered_task_options().values() if s is not None))


@pytest.mark.parametrize("model", SECTIONS + [settings_class(name) for name in method_names()] + TASK_OPTIONS,
                         ids=lambda m: m.__name__)
def test_every_key_has_a_meaning(model):
    undocumented = [row.key for row in key_help(model) if not row.meaning]
    assert not undocumented, f"{model.__name__}: add a docstring under {undocumented}"


def test_help_keys_prints_default_allowed_values_and_meaning_of_the_methods_keys():
    result = invoke("config", "show", "--help-keys", "method.name=elalora")
    assert result.exit_code == 0, result.output
    text = result.output
    assert "method.b  (default 4; int > 0)" in text and "ranks moved per round" in text
    assert "method.k  (default 2; int > 0)" in text
    assert "train.eval_strategy  (default epoch; steps | epoch | no)" in text
    assert "method.lora_module  (default [query,value]; list of str)" in text
    assert "method.target_rank" not in text, "only the selected method's keys"
    every = invoke("config", "show", "--help-keys", "--all").output
    assert "method (method.name=adalora)" in every and "method.target_rank" in every and "method.sparse_lambda_2" in every


def test_help_keys_lists_the_task_families_options():
    text = invoke("config", "show", "--help-keys", "data.task=xsum").output
    assert "task_options (data.task=xsum)" in text and "task_options.num_beams  (default 6; int > 0)" in text
    assert "task_options.protocol" not in text, "only the configured task's family"
    assert "task_options" not in invoke("config", "show", "--help-keys", "data.task=sst2").output.split("run:")[0]
    every = invoke("config", "show", "--help-keys", "--all").output
    assert "task_options (data.task=imagefolder)" in every and "task_options.image_size" in every
    assert "task_options (data.task=summarization | xsum" in every
