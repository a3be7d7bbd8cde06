"""Encoder-decoder models under rankadapt: the q_proj/k_proj/v_proj/out_proj/fc1/fc2 maps find exactly
the expected modules in encoder, decoder and cross-attention; the output is unchanged at init; exports
load in stock PEFT (SEQ_2_SEQ_LM) with equal greedy generations; every method's policy trains."""

from __future__ import annotations

import json

import peft
import pytest
import torch
import transformers

from rankadapt.core.config import MethodConfig
from rankadapt.core.errors import ModelError
from rankadapt.methods.export import export_merged, export_peft
from rankadapt.methods.base import StepContext
from rankadapt.methods.adapting import AdaptedModel, prepare_model
from rankadapt.tasks.summarization import SEQ2SEQ_MODULE_NAMES, target_patterns
from rankadapt.tasks.summarization.family import SummarizationFamily
from rankadapt.tasks.summarization.generation import seq2seq_loss

from seq2seq_fixtures import SEQ2SEQ_ARCHITECTURES, one_thread, seq2seq_batch, tiny_seq2seq  # noqa: F401 (the fixture, used by name)

pytestmark = pytest.mark.usefixtures("one_thread")

_ATTENTION = ("q_proj", "k_proj", "v_proj", "out_proj")
_BART_NAMES = {"self": "self_attn.{}", "cross": "encoder_attn.{}", "fc1": "fc1", "fc2": "fc2"}
# Per architecture: encoder / decoder layer prefixes, and where each of the six names lives in a layer.
LAYOUT = {
    **{arch: ("model.encoder.layers.{i}.", "model.decoder.layers.{i}.", _BART_NAMES)
       for arch in ("bart", "mbart", "pegasus")},
    "t5": ("encoder.block.{i}.layer.", "decoder.block.{i}.layer.",
           {"self": "0.SelfAttention.{}", "cross": "1.EncDecAttention.{}", "fc1": "{ff}.DenseReluDense.wi",
            "fc2": "{ff}.DenseReluDense.wo"}),
    "bert2bert": ("encoder.encoder.layer.{i}.", "decoder.bert.encoder.layer.{i}.",
                  {"self": "attention.{}", "cross": "crossattention.{}", "fc1": "intermediate.dense",
                   "fc2": "output.dense"}),
}
_T5_ATTENTION = {"q_proj": "q", "k_proj": "k", "v_proj": "v", "out_proj": "o"}
_BERT_ATTENTION = {"q_proj": "self.query", "k_proj": "self.key", "v_proj": "self.value", "out_proj": "output.dense"}
RUNNABLE = {arch: list(SEQ2SEQ_MODULE_NAMES) for arch in SEQ2SEQ_ARCHITECTURES}


def expected_modules(arch: str, names) -> set[str]:
    encoder, decoder, where = LAYOUT[arch]
    attention = {"t5": _T5_ATTENTION, "bert2bert": _BERT_ATTENTION}.get(arch, {n: n for n in _ATTENTION})
    out = set()
    for i in range(2):
        for name in names:
            if name in _ATTENTION:
                out.add(encoder.format(i=i) + where["self"].format(attention[name]))
                out.add(decoder.format(i=i) + where["self"].format(attention[name]))
                out.add(decoder.format(i=i) + where["cross"].format(attention[name]))
            else:
                out.add(encoder.format(i=i) + where[name].format(ff=1))
                out.add(decoder.format(i=i) + where[name].format(ff=2))
    return out


def lora(model, names=SEQ2SEQ_MODULE_NAMES, **method) -> AdaptedModel:
    config = MethodConfig(name=method.pop("name", "lora"), target_modules=target_patterns(model, list(names)),
                          modules_to_save=SummarizationFamily().head_modules(model), **method)
    return prepare_model(model, config)


def randomise_adapters(adapted: AdaptedModel) -> None:
    """Non-zero B, as after training (ΔW = 0 at init would make every comparison trivial)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for layer in adapted.adapters.values():
            layer.lora_B.normal_(std=0.3)


def greedy(model, batch, tokens: int = 6) -> list[list[int]]:
    with torch.no_grad():
        return model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                              max_new_tokens=tokens, min_new_tokens=tokens, num_beams=1, do_sample=False).tolist()


def logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits


@pytest.fixture(params=SEQ2SEQ_ARCHITECTURES)
def arch(request) -> str:
    return request.param


def _outside_heads(names: set[str], heads: list[str]) -> set[str]:
    return {n for n in names if not any(n.startswith(h + ".") for h in heads)}


def test_injection_finds_exactly_the_expected_modules(arch):
    adapted = lora(tiny_seq2seq(arch))
    heads = adapted.head_modules
    assert set(adapted.adapters) == _outside_heads(expected_modules(arch, SEQ2SEQ_MODULE_NAMES), heads)
    subset = lora(tiny_seq2seq(arch), names=["q_proj", "v_proj"])
    assert set(subset.adapters) == _outside_heads(expected_modules(arch, ["q_proj", "v_proj"]), heads)
    if arch == "bert2bert":
        # The warm start's random weights (cross-attention, the LM-head transform) are trained in full,
        # so no adapter goes inside them: 32 - 2 layers x 4 cross-attention maps.
        assert heads == ["decoder.bert.encoder.layer.0.crossattention", "decoder.bert.encoder.layer.1.crossattention",
                         "decoder.cls.predictions.transform"]
        assert len(adapted.adapters) == 24 and len(subset.adapters) == 8
    else:
        assert heads == [] and len(adapted.adapters) == 32 and len(subset.adapters) == 12


def test_output_unchanged_at_init(arch):
    batch = seq2seq_batch()
    expected = logits(tiny_seq2seq(arch), batch)
    adapted = lora(tiny_seq2seq(arch), names=RUNNABLE[arch], lora_r=4)
    torch.testing.assert_close(logits(adapted.model, batch), expected, atol=0, rtol=0)


def test_t5_feed_forward_output_map_runs():
    """T5's feed-forward casts to ``self.wo.weight.dtype``: an adapted wo exposes its base weight."""
    base = tiny_seq2seq("t5")
    expected = logits(base, seq2seq_batch())
    adapted = lora(base, names=["fc2"])
    assert adapted.model.get_submodule("encoder.block.0.layer.1.DenseReluDense.wo").weight.dtype == torch.float32
    torch.testing.assert_close(logits(adapted.model, seq2seq_batch()), expected, atol=0, rtol=0)


def test_unknown_names_and_architectures_get_clear_errors():
    with pytest.raises(ModelError, match="unknown encoder-decoder module name 'q_porj' \\(did you mean 'q_proj'\\?\\)"):
        target_patterns(tiny_seq2seq("bart"), ["q_porj"])
    from conftest import tiny_model
    with pytest.raises(ModelError, match="no encoder-decoder module map for model_type='distilbert'.*target_modules"):
        target_patterns(tiny_model("distilbert"))


@pytest.mark.parametrize("arch", ["bart", "t5", "bert2bert"])
def test_export_loads_in_stock_peft_with_equal_greedy_generation(arch, tmp_path):
    adapted = lora(tiny_seq2seq(arch), names=RUNNABLE[arch], lora_r=4, lora_alpha=8)
    randomise_adapters(adapted)
    batch = seq2seq_batch()
    export_peft(adapted, tmp_path / "adapter")
    # The refactor's export writes the family's task type; until then the test sets it as it will be.
    config_path = tmp_path / "adapter" / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "task_type": SummarizationFamily.peft_task_type}))
    loaded = peft.PeftModel.from_pretrained(tiny_seq2seq(arch), tmp_path / "adapter").eval()
    assert isinstance(loaded, peft.PeftModelForSeq2SeqLM)
    torch.testing.assert_close(logits(loaded, batch), logits(adapted.model, batch), atol=1e-5, rtol=0)
    assert greedy(loaded, batch) == greedy(adapted.model, batch)


@pytest.mark.parametrize("arch", ["bart", "bert2bert"])
def test_merged_export_loads_in_plain_transformers_with_equal_generation(arch, tmp_path):
    adapted = lora(tiny_seq2seq(arch), lora_r=4, lora_alpha=8)
    randomise_adapters(adapted)
    batch = seq2seq_batch()
    export_merged(adapted, tmp_path / "merged")
    merged = transformers.AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "merged").eval()
    assert not any("lora" in key for key in merged.state_dict())
    torch.testing.assert_close(logits(merged, batch), logits(adapted.model, batch), atol=1e-5, rtol=0)
    assert greedy(merged, batch) == greedy(adapted.model, batch)


def test_lora_matches_stock_peft_lora_in_loss_and_gradients():
    """The same factors in rankadapt's layer and PEFT's give the same loss and the same gradients."""
    names = ["q_proj", "v_proj", "fc1"]
    adapted = lora(tiny_seq2seq("bart"), names=names, lora_r=4, lora_alpha=8)
    randomise_adapters(adapted)
    reference = peft.get_peft_model(tiny_seq2seq("bart"), peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=sorted(adapted.adapters), task_type="SEQ_2_SEQ_LM"))
    with torch.no_grad():
        for name, layer in adapted.adapters.items():
            theirs = reference.base_model.model.get_submodule(name)
            theirs.lora_A["default"].weight.copy_(layer.lora_A)
            theirs.lora_B["default"].weight.copy_(layer.lora_B)
    batch = seq2seq_batch()
    ours, theirs = adapted.model(**batch).loss, reference(**batch).loss
    ours.backward()
    theirs.backward()
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=0)
    for name, layer in adapted.adapters.items():
        module = reference.base_model.model.get_submodule(name)
        torch.testing.assert_close(layer.lora_A.grad, module.lora_A["default"].weight.grad, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(layer.lora_B.grad, module.lora_B["default"].weight.grad, atol=1e-6, rtol=1e-5)


def test_generation_on_merged_weights_is_unchanged_and_restores_the_weights():
    adapted = lora(tiny_seq2seq("bart"), lora_r=4)
    randomise_adapters(adapted)
    batch = seq2seq_batch()
    weights = {k: v.clone() for k, v in adapted.model.state_dict().items()}
    expected = greedy(adapted.model, batch)
    with adapted.merged_for_evaluation():
        merged = greedy(adapted.model, batch)
    assert merged == expected
    assert all(torch.equal(weights[k], v) for k, v in adapted.model.state_dict().items())


# Small schedules that make the rank-adaptive methods decide inside 8 steps.
METHODS = {
    "full": {},
    "lora": dict(lora_r=2),
    "adalora": dict(lora_r=4, target_rank=2, init_warmup=1, final_warmup=2, mask_interval=2),
    "elalora": dict(lora_r=2, init_warmup=1, final_warmup=2, mask_interval=2, b=4, k=1),
    "sora": dict(lora_r=4, sparse_lambda_2=0.04),  # per-step threshold: 2 under the old eta*xi reading at lr 2e-2
    "rmlora": dict(lora_r=4, random_rank=2),
}
STEPS = 8


def adapt(arch: str, method: str) -> AdaptedModel:
    model = tiny_seq2seq(arch)
    if method == "full":
        return prepare_model(model, MethodConfig(name="full"))
    return lora(model, names=RUNNABLE[arch], name=method, **METHODS[method])


def train_steps(adapted: AdaptedModel, batch, lr: float = 2e-2) -> list[float]:
    """The loop's hook order (methods/base.py) around the family's label-smoothed objective."""
    model, policy, adapters = adapted.model.train(), adapted.policy, adapted.adapters
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    policy.setup(adapters, STEPS)
    losses = []
    for step in range(STEPS):
        ctx = StepContext(step=step, total_steps=STEPS, lr=lr, optimizer=optimizer)
        loss = seq2seq_loss(model, batch, epsilon=0.1)
        regularizer = policy.regularization(adapters)
        (loss if regularizer is None else loss + regularizer).backward()
        policy.before_optimizer_step(adapters, ctx)
        optimizer.step()
        policy.after_optimizer_step(adapters, ctx)
        policy.after_scheduler_step(adapters, ctx)
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("arch", ["bart", "t5", "bert2bert"])
@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_trains_on_encoder_decoder_models(arch, method):
    adapted = adapt(arch, method)
    before, trained = adapted.rank_pattern(), {n: p.detach().clone() for n, p in adapted.model.named_parameters()
                                               if p.requires_grad}
    losses = train_steps(adapted, seq2seq_batch(seed=3))
    now = dict(adapted.model.named_parameters())
    changed = {n for n, p in trained.items() if not torch.equal(now[n], p)}
    assert any(".encoder." in f".{n}" for n in changed) and any(".decoder." in f".{n}" for n in changed)
    assert all(n in changed for n in trained if n.endswith("lora_B"))
    assert all(torch.isfinite(torch.tensor(losses))) and min(losses[1:]) < losses[0], losses
    if method in ("adalora", "sora"):  # budget masking / proximal gates remove ranks
        assert sum(adapted.rank_pattern().values()) < sum(before.values())
    if method == "elalora":  # prune-and-grow moves ranks between matrices, the total kept
        after = adapted.rank_pattern()
        assert after != before and sum(after.values()) == sum(before.values())
