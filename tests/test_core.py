"""The shared adapter layer, its injection into every architecture, and parameter accounting."""

from __future__ import annotations

import pytest
import torch

from rankadapt.core.config import MODULE_NAMES, MethodConfig
from rankadapt.core.config_files import build_config
from rankadapt.core.errors import ConfigError, ModelError
from rankadapt.core.layer import AdapterLinear
from rankadapt.methods.adapting import prepare_model

from conftest import tiny_batch, tiny_model

# Written out by hand (not derived from rankadapt.core.targets) so the test can catch a wrong map.
EXPECTED = {
    "bert": {"query": "bert.encoder.layer.{i}.attention.self.query",
             "key": "bert.encoder.layer.{i}.attention.self.key",
             "value": "bert.encoder.layer.{i}.attention.self.value",
             "attention.output": "bert.encoder.layer.{i}.attention.output.dense",
             "intermediate": "bert.encoder.layer.{i}.intermediate.dense",
             "layer.output": "bert.encoder.layer.{i}.output.dense"},
    "roberta": {"query": "roberta.encoder.layer.{i}.attention.self.query",
                "key": "roberta.encoder.layer.{i}.attention.self.key",
                "value": "roberta.encoder.layer.{i}.attention.self.value",
                "attention.output": "roberta.encoder.layer.{i}.attention.output.dense",
                "intermediate": "roberta.encoder.layer.{i}.intermediate.dense",
                "layer.output": "roberta.encoder.layer.{i}.output.dense"},
    "distilbert": {"query": "distilbert.transformer.layer.{i}.attention.q_lin",
                   "key": "distilbert.transformer.layer.{i}.attention.k_lin",
                   "value": "distilbert.transformer.layer.{i}.attention.v_lin",
                   "attention.output": "distilbert.transformer.layer.{i}.attention.out_lin",
                   "intermediate": "distilbert.transformer.layer.{i}.ffn.lin1",
                   "layer.output": "distilbert.transformer.layer.{i}.ffn.lin2"},
    "deberta-v2": {"query": "deberta.encoder.layer.{i}.attention.self.query_proj",
                   "key": "deberta.encoder.layer.{i}.attention.self.key_proj",
                   "value": "deberta.encoder.layer.{i}.attention.self.value_proj",
                   "attention.output": "deberta.encoder.layer.{i}.attention.output.dense",
                   "intermediate": "deberta.encoder.layer.{i}.intermediate.dense",
                   "layer.output": "deberta.encoder.layer.{i}.output.dense"},
    "mpnet": {"query": "mpnet.encoder.layer.{i}.attention.attn.q",
              "key": "mpnet.encoder.layer.{i}.attention.attn.k",
              "value": "mpnet.encoder.layer.{i}.attention.attn.v",
              "attention.output": "mpnet.encoder.layer.{i}.attention.attn.o",
              "intermediate": "mpnet.encoder.layer.{i}.intermediate.dense",
              "layer.output": "mpnet.encoder.layer.{i}.output.dense"},
}
HEADS = {"bert": {"bert.pooler", "classifier"}, "roberta": {"classifier"},
         "distilbert": {"pre_classifier", "classifier"}, "deberta-v2": {"pooler", "classifier"},
         "mpnet": {"classifier"}}


def logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


@pytest.mark.parametrize("role", MODULE_NAMES)
def test_injection_finds_exactly_the_expected_modules(arch, role):
    adapted = prepare_model(tiny_model(arch), MethodConfig(name="lora", lora_r=2, lora_module=[role]))
    expected = {EXPECTED[arch][role].format(i=i) for i in range(2)}
    assert set(adapted.adapters) == expected
    assert all(isinstance(adapted.model.get_submodule(n), AdapterLinear) for n in expected)
    assert set(adapted.head_modules) == HEADS[arch]


def test_output_unchanged_at_init(arch):
    base = tiny_model(arch)
    batch = tiny_batch()
    before = logits(base, batch)
    adapted = prepare_model(base, MethodConfig(name="lora", lora_r=4, lora_module=list(MODULE_NAMES)))
    assert torch.equal(logits(adapted.model, batch), before)


def test_trainable_count_is_rank_times_dims_plus_head(arch):
    r = 3
    adapted = prepare_model(tiny_model(arch), MethodConfig(name="lora", lora_r=r, lora_module=list(MODULE_NAMES)))
    model = adapted.model
    expected_adapter = sum(r * (model.get_submodule(n).in_features + model.get_submodule(n).out_features)
                           for n in adapted.adapters)
    # Count the head by hand from the module tree rather than through AdaptedModel.head_parameters.
    head = sum(p.numel() for h in HEADS[arch] for p in model.get_submodule(h).parameters())
    assert adapted.trainable_parameters() == expected_adapter + head
    assert adapted.adapter_parameters() == expected_adapter
    assert "trainable parameters" in adapted.summary()


def test_after_a_step_only_adapters_and_head_changed(arch):
    adapted = prepare_model(tiny_model(arch), MethodConfig(name="lora", lora_r=2, lora_module=list(MODULE_NAMES)))
    model = adapted.model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):  # two steps: B moves at step 1, then A also receives gradient
        out = model(**tiny_batch(), labels=torch.tensor([0, 1, 1]))
        out.loss.backward()
        opt.step()
        opt.zero_grad()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    allowed = lambda k: ".lora_A" in k or ".lora_B" in k or any(k.startswith(h + ".") for h in HEADS[arch])
    assert changed and all(allowed(k) for k in changed), sorted(k for k in changed if not allowed(k))
    assert any(".lora_A" in k for k in changed) and any(".lora_B" in k for k in changed)


def test_layer_forward_matches_formula_and_merge_roundtrips():
    torch.manual_seed(0)
    base = torch.nn.Linear(6, 5)
    layer = AdapterLinear(base, capacity=4, scale=0.5, gate_trainable=True)
    with torch.no_grad():
        layer.lora_A.normal_()
        layer.lora_B.normal_()
        layer.lora_E.copy_(torch.tensor([1.0, -2.0, 0.0, 3.0]))
        layer.rank_mask.copy_(torch.tensor([1.0, 1.0, 1.0, 0.0]))
    x = torch.randn(3, 6)
    g = torch.tensor([1.0, -2.0, 0.0, 0.0])
    delta = 0.5 * layer.lora_B @ torch.diag(g) @ layer.lora_A
    expected = x @ (base.weight + delta).t() + base.bias
    torch.testing.assert_close(layer(x), expected)
    assert layer.active_rank() == 2  # slot 2 has g = 0, slot 3 is masked
    A, B = layer.export_factors()
    torch.testing.assert_close(0.5 * B @ A, delta)
    w0 = base.weight.clone()
    layer.merge()
    torch.testing.assert_close(layer(x), expected)
    layer.unmerge()
    torch.testing.assert_close(base.weight, w0)


def test_full_head_none_trainable_sets():
    model = tiny_model("bert")
    total = sum(p.numel() for p in model.parameters())
    assert prepare_model(model, MethodConfig(name="full")).trainable_parameters() == total
    head = prepare_model(tiny_model("bert"), MethodConfig(name="head"))
    assert head.trainable_parameters() == sum(p.numel() for h in HEADS["bert"]
                                              for p in head.model.get_submodule(h).parameters())
    assert prepare_model(tiny_model("bert"), MethodConfig(name="none")).trainable_parameters() == 0


def test_module_the_model_lacks_lists_its_linear_modules():
    with pytest.raises(ModelError, match=r"matches no linear module.*attention\.self\.query"):
        prepare_model(tiny_model("bert"), MethodConfig(name="lora", target_modules=[r"\.q_proj$"]))


def test_unknown_architecture_asks_for_target_modules():
    model = tiny_model("bert")
    model.config.model_type = "mystery"
    with pytest.raises(ModelError, match="target_modules"):
        prepare_model(model, MethodConfig(name="lora"))
    adapted = prepare_model(model, MethodConfig(name="lora", target_modules=[r"attention\.self\.query$"]))
    assert len(adapted.adapters) == 2


@pytest.mark.parametrize("override, message", [
    ("method.lora_r=0", "lora_r: Input should be greater than 0"),
    ("method.lora_alpha=-1", "lora_alpha: Input should be greater than 0"),
    ("method.name=dora", "method.name: Input should be"),
    ("method.lora_module=[query,values]", "did you mean 'value'"),
])
def test_bad_method_settings_get_clear_errors(override, message):
    from rankadapt.core.config_files import parse_overrides
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(".", r"\.")):
        build_config(parse_overrides([override]))
