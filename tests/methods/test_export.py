"""Export to stock PEFT, loading back into rankadapt, merged export, and parity with PEFT's LoRA."""

from __future__ import annotations

import json

import peft
import pytest
import torch
from transformers import AutoModelForSequenceClassification

from rankadapt.core.config import MODULE_NAMES, MethodConfig
from rankadapt.methods.export import export_merged, export_peft, load_peft_adapter
from rankadapt.methods.adapting import prepare_model

from helpers import assert_adapter_gradients_match_peft, copy_adapters_into_peft, perturbed_as_if_trained
from conftest import tiny_batch, tiny_model


def logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


def trained_adapter(arch: str, **method):
    """A LoRA model whose adapters and head hold random (non-zero) values, as after training."""
    adapted = prepare_model(tiny_model(arch), MethodConfig(name="lora", lora_module=list(MODULE_NAMES), **method))
    return perturbed_as_if_trained(adapted)


def test_export_loads_in_stock_peft_with_equal_logits(arch, tmp_path):
    adapted = trained_adapter(arch, lora_r=4, lora_alpha=8)
    batch = tiny_batch()
    expected = logits(adapted.model, batch)
    export_peft(adapted, tmp_path / "adapter")
    peft_model = peft.PeftModel.from_pretrained(tiny_model(arch), tmp_path / "adapter").eval()
    torch.testing.assert_close(logits(peft_model, batch), expected, atol=1e-5, rtol=0)


def test_export_loads_back_into_rankadapt_and_merged_model_matches(arch, tmp_path):
    adapted = trained_adapter(arch, lora_r=4, lora_alpha=8)
    batch = tiny_batch()
    expected = logits(adapted.model, batch)
    export_peft(adapted, tmp_path / "adapter")
    loaded = load_peft_adapter(tiny_model(arch), tmp_path / "adapter")
    torch.testing.assert_close(logits(loaded.model, batch), expected, atol=1e-5, rtol=0)
    assert loaded.rank_pattern() == adapted.rank_pattern()
    export_merged(adapted, tmp_path / "merged")
    merged = AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged").eval()
    assert not any("lora" in k for k in merged.state_dict())
    torch.testing.assert_close(logits(merged, batch), expected, atol=1e-5, rtol=0)


def test_per_module_ranks_and_rank_zero_module_dropped(tmp_path):
    """Masked/gated ranks are dropped, per-module ranks go to rank_pattern, a rank-0 module vanishes."""
    adapted = trained_adapter("bert", lora_r=4, lora_alpha=8)
    names = list(adapted.adapters)
    with torch.no_grad():
        adapted.adapters[names[0]].rank_mask.zero_()            # rank 0: dropped
        adapted.adapters[names[1]].rank_mask[:2] = 0            # rank 2
        adapted.adapters[names[2]].lora_E[3] = 0.0               # rank 3 (a zero gate counts as pruned)
        adapted.adapters[names[3]].lora_E.mul_(torch.tensor([0.5, 2.0, -1.0, 3.0]))  # gate folded into A
    batch = tiny_batch()
    expected = logits(adapted.model, batch)
    export_peft(adapted, tmp_path / "a")
    config = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert names[0] not in config["target_modules"]
    assert config["r"] == 4 and config["rank_pattern"] == {names[1]: 2, names[2]: 3}
    assert config["alpha_pattern"] == {names[1]: 4.0, names[2]: 6.0}  # alpha'/r' = s = 2
    peft_model = peft.PeftModel.from_pretrained(tiny_model("bert"), tmp_path / "a").eval()
    torch.testing.assert_close(logits(peft_model, batch), expected, atol=1e-5, rtol=0)
    loaded = load_peft_adapter(tiny_model("bert"), tmp_path / "a")
    assert names[0] not in loaded.adapters and loaded.adapters[names[1]].capacity == 2
    torch.testing.assert_close(logits(loaded.model, batch), expected, atol=1e-5, rtol=0)


def test_parity_with_peft_lora_outputs_and_gradients():
    """Same A, B and head copied into stock PEFT: outputs and gradients match."""
    adapted = trained_adapter("bert", lora_r=4, lora_alpha=8)
    config = peft.LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=list(adapted.adapters),
                             modules_to_save=["pooler"])
    reference = peft.get_peft_model(tiny_model("bert"), config)
    copy_adapters_into_peft(adapted, reference)
    batch, labels = tiny_batch(), torch.tensor([0, 1, 0])
    adapted.model.eval(), reference.eval()  # no dropout anywhere; gradients flow in eval mode too
    ours = adapted.model(**batch, labels=labels)
    theirs = reference(**batch, labels=labels)
    torch.testing.assert_close(ours.logits, theirs.logits, atol=1e-6, rtol=0)
    ours.loss.backward()
    theirs.loss.backward()
    assert_adapter_gradients_match_peft(adapted, reference)


def test_loading_onto_the_wrong_model_is_a_clear_error(tmp_path):
    from rankadapt.core.errors import ModelError
    export_peft(trained_adapter("bert", lora_r=2), tmp_path / "a")
    with pytest.raises(ModelError, match="targets modules this model lacks"):
        load_peft_adapter(tiny_model("distilbert"), tmp_path / "a")
    with pytest.raises(ModelError, match="not an adapter directory"):
        load_peft_adapter(tiny_model("bert"), tmp_path)
