"""Fast dropout (rankadapt.core.dropout): the masks' distribution, the scaling, the gradient, the adapter's
folded scale, the written-out attention against a hand computation and against SDPA, and the
swap-and-restore on every architecture."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_batch, tiny_model
from torch import nn

from rankadapt.core.config import MethodConfig
from rankadapt.core.dropout import (ATTENTION_IMPLEMENTATION, FastDropout, _attention_with_fast_dropout, drop_threshold,
                                    dropout, fast_dropout, keep_mask, keep_scale, keep_values, uses_fast_path)
from rankadapt.core.layer import AdapterLinear
from rankadapt.methods.adapting import prepare_model


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_rate_is_one_minus_quantised_p_in_every_16_bit_lane(p):
    """Each 64-bit draw feeds four elements; a biased lane (e.g. a sign bit that is always 0)
    would show up as one of the four columns keeping at another rate."""
    torch.manual_seed(0)
    n = 1 << 22
    mask = keep_mask((n,), p)
    expected = 1 - drop_threshold(p) / 65536
    sigma = math.sqrt(expected * (1 - expected) / (n / 4))
    lanes = mask.view(-1, 4).double().mean(0)
    assert torch.all((lanes - expected).abs() < 6 * sigma), (lanes, expected)
    # independent neighbours: both kept with probability (1 - p)^2
    both = (mask[0::2] & mask[1::2]).double().mean().item()
    assert abs(both - expected ** 2) < 6 * math.sqrt(expected ** 2 * (1 - expected ** 2) / (n / 2))


def test_threshold_rounds_p_to_a_multiple_of_2_to_the_minus_16_and_scale_keeps_the_mean():
    assert drop_threshold(0.1) == 6554
    assert keep_scale(0.1) == 65536 / (65536 - 6554)
    assert abs(keep_scale(0.1) - 1 / 0.9) < 1e-5
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        drop_threshold(1.0)


def test_dropout_scales_kept_elements_zeroes_the_rest_and_is_unbiased():
    torch.manual_seed(1)
    x = torch.full((1 << 20,), 2.0)
    y = dropout(x, 0.25)
    kept = y != 0
    assert torch.all(y[kept] == 2.0 * keep_scale(0.25))
    assert abs(y.mean().item() - 2.0) < 6 * 2.0 * math.sqrt(0.25 / 0.75 / x.numel())


def test_masks_follow_the_seed():
    torch.manual_seed(3)
    first = keep_mask((1000,), 0.3)
    torch.manual_seed(3)
    assert torch.equal(first, keep_mask((1000,), 0.3))
    assert not torch.equal(first, keep_mask((1000,), 0.3))


def test_keep_values_are_the_boolean_mask_as_numbers():
    """Same draws as ``keep_mask``; 0/1, or 0/c with ``scaled``, in the requested dtype."""
    torch.manual_seed(3)
    mask = keep_mask((50, 40), 0.3)
    for dtype, scaled in [(torch.float32, False), (torch.float32, True), (torch.bfloat16, False)]:
        torch.manual_seed(3)
        values = keep_values((50, 40), 0.3, dtype, scaled=scaled)
        assert values.dtype == dtype
        expected = mask.to(dtype) * (keep_scale(0.3) if scaled else 1.0)
        assert torch.equal(values, expected)


def test_bf16_dropout_scales_in_fp32_like_torch():
    """In bf16 the 1/(1-p) scale is applied as an fp32 scalar, not rounded to bf16 first (1/0.9 would
    become 1.109375, a 0.16% bias): kept elements equal torch's bf16 rounding of x · c."""
    torch.manual_seed(2)
    x = torch.randn(4096, dtype=torch.bfloat16)
    y = dropout(x, 0.1)
    kept = y != 0
    assert torch.equal(y[kept], (x[kept].float() * keep_scale(0.1)).to(torch.bfloat16))


def test_gradient_is_the_same_mask_and_scale():
    torch.manual_seed(4)
    x = torch.randn(64, 32, requires_grad=True)
    grad = torch.randn(64, 32)
    y = dropout(x, 0.3)
    y.backward(grad)
    kept = y.detach() != 0
    torch.testing.assert_close(x.grad, grad * kept * keep_scale(0.3))
    torch.testing.assert_close(y.detach(), x.detach() * kept * keep_scale(0.3))


def test_identity_in_eval_mode_and_torch_dropout_off_cpu():
    x = torch.randn(8, 8)
    layer = FastDropout(0.5).eval()
    assert torch.equal(layer(x), x)
    assert torch.equal(dropout(x, 0.0), x)
    assert not uses_fast_path(torch.empty(2, device="meta"), 0.5, True)  # CUDA etc.: torch's own dropout
    assert uses_fast_path(x, 0.5, True)


def test_adapter_folds_the_keep_scale_into_its_rank_product():
    """y = x Wᵀ + b + s · ((x ⊙ m) Aᵀ · c) Bᵀ with c = 1 / (1 - t/65536), computed by hand."""
    torch.manual_seed(5)
    layer = AdapterLinear(nn.Linear(16, 12), capacity=4, scale=2.0, dropout=0.2)
    nn.init.normal_(layer.lora_A)
    nn.init.normal_(layer.lora_B)
    layer.dropout = FastDropout(0.2)
    layer.train()
    x = torch.randn(10, 16)
    torch.manual_seed(6)
    y = layer(x)
    torch.manual_seed(6)
    m = keep_mask(x.shape, 0.2)
    expected = layer.base(x) + 2.0 * keep_scale(0.2) * ((x * m) @ layer.lora_A.t()) @ layer.lora_B.t()
    torch.testing.assert_close(y, expected)


def test_attention_matches_a_hand_computation_with_the_same_mask():
    torch.manual_seed(7)
    q, k, v = (torch.randn(2, 3, 5, 4) for _ in range(3))
    allowed = torch.ones(2, 1, 5, 5, dtype=torch.bool)
    allowed[1, :, :, 3:] = False  # the second sequence has two padding positions
    module = nn.Module().train()
    torch.manual_seed(8)
    out, _ = _attention_with_fast_dropout(module, q, k, v, allowed, dropout=0.4, scaling=0.5)
    torch.manual_seed(8)
    scores = (q @ k.transpose(-1, -2)) * 0.5
    probs = torch.softmax(scores.masked_fill(~allowed, float("-inf")), -1)
    probs = probs * keep_mask(probs.shape, 0.4) * keep_scale(0.4)
    torch.testing.assert_close(out, (probs @ v).transpose(1, 2))


def test_attention_without_dropout_is_transformers_sdpa():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    torch.manual_seed(9)
    q, k, v = (torch.randn(2, 3, 5, 4) for _ in range(3))
    module = nn.Module()
    module.is_causal = False
    for training in (True, False):  # models pass dropout=0 in eval mode
        ours, _ = _attention_with_fast_dropout(module.train(training), q, k, v, None, dropout=0.0)
        reference, _ = sdpa_attention_forward(module, q, k, v, None, dropout=0.0)
        assert torch.equal(ours, reference)


def _set_p(model: nn.Module, p: float) -> None:
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = p


def test_fast_dropout_trains_like_the_model_on_every_architecture_and_restores_it(arch):
    """With p so small that no element is dropped (t = 0), a training-mode forward through the swapped
    dropouts and attention must equal the stock model's eval-mode forward: the written-out attention
    and the masks' plumbing are right for each architecture's layout and padding mask."""
    model = tiny_model(arch)
    adapted = prepare_model(model, MethodConfig(name="lora", lora_r=4, lora_dropout=0.1))
    nn.init.normal_(next(a for a in adapted.adapters.values()).lora_B)
    batch = tiny_batch()
    reference = model.eval()(**batch).logits
    implementation = model.config._attn_implementation
    with fast_dropout(model) as swapped:
        assert swapped == sum(1 for m in model.modules() if isinstance(m, FastDropout))
        assert swapped > 0
        if implementation == "sdpa":
            assert model.config._attn_implementation == ATTENTION_IMPLEMENTATION
        _set_p(model, 1e-6)  # 1e-6 * 65536 rounds to 0: every element kept, scale exactly 1
        torch.testing.assert_close(model.train()(**batch).logits, reference, rtol=1e-5, atol=1e-5)
        _set_p(model, 0.5)
        assert not torch.allclose(model(**batch).logits, reference)  # the masks do act
    assert not any(isinstance(m, FastDropout) for m in model.modules())
    assert model.config._attn_implementation == implementation


def test_fast_dropout_restores_the_model_after_an_error():
    model = tiny_model("bert")
    with pytest.raises(RuntimeError, match="boom"):
        with fast_dropout(model):
            raise RuntimeError("boom")
    assert type(model.bert.embeddings.dropout) is nn.Dropout
    assert model.config._attn_implementation == "sdpa"


def test_attention_under_bf16_autocast_is_as_close_to_fp32_as_sdpa():
    """The softmax runs in fp32 under autocast (SDPA's CPU kernels accumulate in fp32 too)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    torch.manual_seed(10)
    q, k, v = (torch.randn(2, 3, 50, 16) for _ in range(3))
    module = nn.Module().train()
    module.is_causal = False
    reference, _ = sdpa_attention_forward(module, q, k, v, None, dropout=0.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours, _ = _attention_with_fast_dropout(module, q, k, v, None, dropout=1e-6)  # t = 0: nothing dropped
        theirs, _ = sdpa_attention_forward(module, q, k, v, None, dropout=0.0)
    assert ours.dtype == torch.bfloat16
    assert (ours.float() - reference).abs().max() <= 2 * (theirs.float() - reference).abs().max()


def test_importing_the_command_line_does_not_load_the_compiler():
    """``torch._dynamo`` costs 1.2–1.8 s of every command's start-up; the fast masks keep out of
    compiled graphs by checking the compiling flag instead of importing it (issue 22)."""
    import subprocess
    import sys

    probe = "import sys, rankadapt.cli, rankadapt.recipes.finetune; print('torch._dynamo' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_compiled_graphs_draw_the_same_distribution():
    """Under tracing the halves come from randint: uniform on the same int16 range, int32-typed."""
    from rankadapt.core import dropout as fast

    torch.manual_seed(0)
    halves = torch.compile(lambda: fast._random_halves((4096,), "cpu") + 0, backend="eager")()
    assert halves.dtype == torch.int32
    assert -32768 <= int(halves.min()) and int(halves.max()) <= 32767
    assert abs(float(halves.float().mean())) < 0.05 * 32768
