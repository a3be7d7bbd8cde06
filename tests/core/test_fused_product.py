"""The adapter layer's fused autograd function (``rankadapt.core.layer._AdapterProduct``).

It must compute exactly what the same formula computes as separate autograd operations (the layer's
``_composed_forward``), with the gradients of the docstring: checked by finite differences
(gradcheck, float64) and against the composed path for every setting a method uses.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rankadapt.core.dropout import FastDropout, keep_values
from rankadapt.core.layer import AdapterLinear, _AdapterProduct


def make_layer(dropout: float = 0.0, gate_trainable: bool = True, bias: bool = True,
               dtype: torch.dtype = torch.float32) -> AdapterLinear:
    torch.manual_seed(0)
    layer = AdapterLinear(nn.Linear(16, 12, bias=bias).to(dtype), capacity=4, scale=2.0, dropout=dropout,
                          gate_trainable=gate_trainable)
    nn.init.normal_(layer.lora_A)
    nn.init.normal_(layer.lora_B)
    with torch.no_grad():
        layer.lora_E.copy_(torch.tensor([1.0, -2.0, 0.5, 3.0]))
        layer.rank_mask[2] = 0.0  # a masked slot, as ElaLoRA leaves them
    if dropout:
        layer.dropout = FastDropout(dropout)
    return layer.train()


def forward_backward(layer: AdapterLinear, x: torch.Tensor, fused: bool, autocast: bool = False) -> dict:
    layer.fused_product = fused
    layer.zero_grad()
    x = x.detach().clone().requires_grad_(x.requires_grad)
    torch.manual_seed(1)  # the same dropout mask for both paths
    with torch.autocast("cpu", torch.bfloat16, enabled=autocast):
        y = layer(x)
    (y.float() ** 2).sum().backward()
    grads = {name: p.grad.clone() for name, p in layer.named_parameters() if p.grad is not None}
    if x.grad is not None:
        grads["x"] = x.grad
    return {"y": y.detach(), **grads}


def test_gradients_match_finite_differences():
    torch.manual_seed(2)
    x = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    keep = keep_values(x.shape, 0.3, torch.float64)
    W, b = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    A = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    B = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    w = torch.tensor([0.5, -1.5, 0.0], dtype=torch.float64, requires_grad=True)
    for mask in (None, keep):
        assert torch.autograd.gradcheck(lambda x, A, B, w: _AdapterProduct.apply(x, mask, W, b, A, B, w), (x, A, B, w))


def test_forward_matches_the_formula():
    """y = x Wᵀ + b + ((x ⊙ k) Aᵀ ⊙ w) Bᵀ, by hand."""
    torch.manual_seed(3)
    x, keep = torch.randn(6, 5), (torch.rand(6, 5) > 0.3).float()
    W, b, A, B, w = torch.randn(4, 5), torch.randn(4), torch.randn(3, 5), torch.randn(4, 3), torch.randn(3)
    expected = x @ W.t() + b + (((x * keep) @ A.t()) * w) @ B.t()
    torch.testing.assert_close(_AdapterProduct.apply(x, keep, W, b, A, B, w), expected)


@pytest.mark.parametrize("dropout", [0.0, 0.3])
@pytest.mark.parametrize("gate_trainable", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_fused_equals_composed(dropout, gate_trainable, bias):
    layer = make_layer(dropout, gate_trainable, bias)
    x = torch.randn(3, 7, 16, requires_grad=True)
    fused, composed = forward_backward(layer, x, True), forward_backward(layer, x, False)
    assert fused.keys() == composed.keys() and "x" in fused and "lora_A" in fused
    assert ("lora_E" in fused) == gate_trainable
    for name in fused:
        torch.testing.assert_close(fused[name], composed[name], msg=name)


def test_bf16_autocast_is_as_accurate_as_the_composed_path():
    """Under autocast both paths compute in bf16; against an fp32 reference the fused one (one
    rounding of the summed products) is no worse than the composed one (two rounded tensors added)."""
    layer = make_layer(dropout=0.2)
    x = torch.randn(4, 9, 16, requires_grad=True)
    reference = forward_backward(layer, x, False)
    fused, composed = forward_backward(layer, x, True, autocast=True), forward_backward(layer, x, False, autocast=True)
    assert fused["y"].dtype == composed["y"].dtype == torch.bfloat16
    for name in reference:
        if name != "y":
            assert fused[name].dtype == reference[name].dtype, name  # gradients keep their inputs' dtype
        scale = reference[name].abs().max()
        fused_error = (fused[name].float() - reference[name]).abs().max() / scale
        composed_error = (composed[name].float() - reference[name]).abs().max() / scale
        assert fused_error < 2e-2 and fused_error <= 2 * composed_error + 1e-3, (name, fused_error, composed_error)


def test_frozen_input_inference_and_eval():
    layer = make_layer(dropout=0.5)
    x = torch.randn(5, 16)  # no gradient wanted: the first adapted layer after frozen embeddings
    got = forward_backward(layer, x, True)
    assert "x" not in got and "lora_B" in got
    layer.eval()
    expected = layer.base(x) + ((x @ layer.lora_A.t()) * layer.rank_weights()) @ layer.lora_B.t()
    with torch.no_grad():
        torch.testing.assert_close(layer(x), expected)  # eval: no dropout, no graph


def test_a_trainable_base_takes_the_composed_path():
    """The fused function returns no gradient for W and b; a caller that unfreezes them still gets one."""
    layer = make_layer()
    layer.base.weight.requires_grad_(True)
    layer(torch.randn(2, 16)).sum().backward()
    assert layer.base.weight.grad is not None and layer.lora_B.grad is not None


def test_evaluation_merge_restores_the_weights_bit_for_bit():
    """``merged_for_evaluation`` evaluates W + ΔW and then puts back W exactly (a copy, not W + ΔW − ΔW)."""
    from conftest import tiny_batch, tiny_model

    from rankadapt.core.config import MethodConfig
    from rankadapt.methods.adapting import prepare_model

    torch.manual_seed(0)
    adapted = prepare_model(tiny_model("bert"), MethodConfig(name="adalora", lora_r=4, target_rank=2))
    for layer in adapted.adapters.values():
        nn.init.normal_(layer.lora_B, std=0.5)
        nn.init.normal_(layer.lora_E)
    before = {k: v.clone() for k, v in adapted.model.state_dict().items()}
    batch = {k: v for k, v in tiny_batch().items() if k != "labels"}
    adapted.model.eval()
    with torch.no_grad():
        unmerged = adapted.model(**batch).logits
        with adapted.merged_for_evaluation():
            assert all(layer.merged for layer in adapted.adapters.values())
            merged = adapted.model(**batch).logits
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=1e-5)
    assert not any(layer.merged for layer in adapted.adapters.values())
    after = adapted.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
