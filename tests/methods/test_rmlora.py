"""RM-LoRA: index draws, gradient masks (v1/v2), the head, reproducibility, resume, the regulariser."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

import rankadapt.methods.rmlora  # noqa: F401  (registers "rmlora")
from rankadapt.core.config import MODULE_NAMES, MethodConfig
from rankadapt.core.layer import AdapterLinear
from rankadapt.methods import StepContext
from rankadapt.methods.rmlora import RMLoRA, draw_rank_indices
from rankadapt.methods.adapting import prepare_model

from conftest import tiny_batch, tiny_model

R, K = 4, 2


def rmlora_model(lora_type: str = "v1", seed: int = 0, steps: int = 20):
    config = MethodConfig(name="rmlora", lora_r=R, lora_alpha=8, random_rank=K, lora_type=lora_type,
                          lora_module=list(MODULE_NAMES))
    adapted = prepare_model(tiny_model("bert"), config)
    adapted.policy.seed = seed
    adapted.policy.setup(adapted.adapters, steps)
    return adapted


def kept(layer: AdapterLinear) -> tuple[list[int], list[int]]:
    """Rows of ∂L/∂A and columns of ∂L/∂B that still carry gradient."""
    rows = torch.nonzero(layer.lora_A.grad.abs().sum(1)).flatten().tolist()
    cols = torch.nonzero(layer.lora_B.grad.abs().sum(0)).flatten().tolist()
    return rows, cols


def mask_ones(adapted, step: int) -> dict[str, tuple[list[int], list[int]]]:
    """Give every A and B a gradient of ones, apply the policy's mask, return what it kept."""
    for layer in adapted.adapters.values():
        layer.lora_A.grad = torch.ones_like(layer.lora_A)
        layer.lora_B.grad = torch.ones_like(layer.lora_B)
    adapted.policy.before_optimizer_step(adapted.adapters, StepContext(step, 20, lr=1e-3))
    return {name: kept(layer) for name, layer in adapted.adapters.items()}


def mask_sequence(adapted, steps: int, start: int = 0) -> list[dict]:
    return [mask_ones(adapted, t) for t in range(start, start + steps)]


# -- the pure draw --------------------------------------------------------------------------------
def test_draw_rank_indices():
    idx = draw_rank_indices(torch.Generator().manual_seed(0), 8, 3)
    assert idx.dtype == torch.int64 and idx.numel() == 3 and len(set(idx.tolist())) == 3
    assert torch.equal(idx, idx.sort().values) and 0 <= idx.min() and idx.max() < 8
    assert torch.equal(idx, draw_rank_indices(torch.Generator().manual_seed(0), 8, 3))
    assert draw_rank_indices(torch.Generator(), 4, 4).tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="random_rank"):
        draw_rank_indices(torch.Generator(), 4, 5)


# -- init -----------------------------------------------------------------------------------------
def test_init_is_lora_with_gaussian_A():
    adapted = rmlora_model()
    A = torch.cat([layer.lora_A.detach().flatten() for layer in adapted.adapters.values()])
    assert 0.018 < A.std() < 0.022 and abs(A.mean()) < 0.003
    for layer in adapted.adapters.values():
        assert torch.count_nonzero(layer.lora_B) == 0 and layer.scale == 2.0
        assert not isinstance(layer.lora_E, nn.Parameter) and torch.all(layer.lora_E == 1)


# -- masks on real gradients ----------------------------------------------------------------------
def backward(adapted) -> dict[str, torch.Tensor]:
    """One backward with B ≠ 0 (as after training, so A has gradient); returns the unmasked grads."""
    torch.manual_seed(5)
    with torch.no_grad():
        for layer in adapted.adapters.values():
            layer.lora_B.normal_(std=0.1)
    adapted.model.zero_grad(set_to_none=True)
    loss = adapted.model(**tiny_batch(), labels=torch.tensor([0, 1, 0])).loss
    (loss + adapted.policy.regularization(adapted.adapters)).backward()
    return {n: p.grad.clone() for n, p in adapted.model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("lora_type", ["v1", "v2"])
def test_exactly_random_rank_directions_keep_their_gradient_and_the_head_is_untouched(lora_type):
    adapted = rmlora_model(lora_type)
    params = dict(adapted.model.named_parameters())
    head = [n for n in params if n.startswith(tuple(h + "." for h in adapted.head_modules))]
    assert head and all(params[n].requires_grad for n in head)
    differed = False
    for step in range(4):
        unmasked = backward(adapted)
        adapted.policy.before_optimizer_step(adapted.adapters, StepContext(step, 20, lr=1e-3))
        for name, layer in adapted.adapters.items():
            rows, cols = kept(layer)
            assert len(rows) == K and len(cols) == K
            differed |= rows != cols
            torch.testing.assert_close(layer.lora_A.grad[rows], unmasked[f"{name}.lora_A"][rows], atol=0, rtol=0)
            torch.testing.assert_close(layer.lora_B.grad[:, cols], unmasked[f"{name}.lora_B"][:, cols], atol=0, rtol=0)
        for n in head:
            torch.testing.assert_close(params[n].grad, unmasked[n], atol=0, rtol=0)
    # v1 uses the same directions for A's rows and B's columns; v2 draws them independently.
    assert differed == (lora_type == "v2")


def test_same_seed_same_masks_different_seed_different_masks():
    first = mask_sequence(rmlora_model(seed=7), 5)
    assert mask_sequence(rmlora_model(seed=7), 5) == first
    assert mask_sequence(rmlora_model(seed=8), 5) != first
    assert len({str(step) for step in first}) > 1          # a fresh draw every step


def test_state_dict_round_trip_continues_the_index_sequence():
    adapted = rmlora_model("v2", seed=3)
    mask_sequence(adapted, 3)
    buffer = io.BytesIO()
    torch.save(adapted.policy.state_dict(), buffer)          # as the training checkpoint stores it
    uninterrupted = mask_sequence(adapted, 4, start=3)

    resumed = rmlora_model("v2", seed=99)                     # the checkpoint's seed and state win
    buffer.seek(0)
    resumed.policy.load_state_dict(torch.load(buffer, weights_only=True))
    assert resumed.policy.seed == 3
    assert mask_sequence(resumed, 4, start=3) == uninterrupted


def test_masking_before_setup_is_an_error():
    adapted = prepare_model(tiny_model("bert"), MethodConfig(name="rmlora", lora_r=R, random_rank=K))
    with pytest.raises(RuntimeError, match="setup"):
        adapted.policy.before_optimizer_step(adapted.adapters, StepContext(0, 1, lr=1e-3))


# -- the orthogonal regulariser -------------------------------------------------------------------
def hand_layer(A: list[list[float]], B: list[list[float]]) -> AdapterLinear:
    layer = AdapterLinear(nn.Linear(3, 3), capacity=2, scale=1.0)
    with torch.no_grad():
        layer.lora_A.copy_(torch.tensor(A))
        layer.lora_B.copy_(torch.tensor(B))
    return layer


def test_orthogonal_regularizer_against_a_hand_computation():
    policy = RMLoRA(MethodConfig(name="rmlora", lora_r=2, random_rank=1, reg_orth_coef=0.1))
    adapters = {"a": hand_layer([[1, 0, 1], [0, 2, 0]], [[1, 0], [0, 1], [1, 1]]),
                "b": hand_layer([[1, 0, 0], [0, 1, 0]], [[0, 0], [0, 0], [0, 0]])}
    # a: AAᵀ = [[1+0+1, 0], [0, 0+4+0]] = [[2, 0], [0, 4]]  →  AAᵀ − I = [[1, 0], [0, 3]], norm √(1 + 9)
    #    BᵀB = [[1+0+1, 0+0+1], [0+0+1, 0+1+1]] = [[2, 1], [1, 2]]  →  BᵀB − I = [[1, 1], [1, 1]], norm √4
    # b: AAᵀ = I  →  0;   BᵀB = 0  →  BᵀB − I = −I, norm √2
    term_a = math.sqrt(1 + 9) + math.sqrt(1 + 1 + 1 + 1)
    term_b = 0.0 + math.sqrt(1 + 1)
    expected = 0.1 * (term_a + term_b) / 4   # the official normalisation: 2 matrices, 4 tensors A and B
    assert policy.regularization(adapters).item() == pytest.approx(expected, rel=1e-6)
    off = RMLoRA(MethodConfig(name="rmlora", lora_r=2, random_rank=1, reg_orth_coef=0.0))
    assert off.regularization(adapters) is None
