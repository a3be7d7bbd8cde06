"""SoRA: the soft-threshold, the gate, the proximal step in a real optimizer loop, and export."""

from __future__ import annotations

import json
import math

import peft
import pytest
import torch

import rankadapt.methods.sora  # noqa: F401  (registers "sora")
from rankadapt.core.config import MODULE_NAMES, MethodConfig
from rankadapt.methods.export import export_peft
from rankadapt.methods import StepContext
from rankadapt.methods.sora import SoRA, soft_threshold
from rankadapt.methods.adapting import prepare_model

from conftest import tiny_batch, tiny_model


def sora_model(**method):
    method = {"lora_r": 4, "lora_alpha": 8, "lora_module": list(MODULE_NAMES), **method}
    return prepare_model(tiny_model("bert"), MethodConfig(name="sora", **method))


# -- the pure operator ----------------------------------------------------------------------------
def test_soft_threshold_on_hand_values():
    g = torch.tensor([0.5, -0.5, 0.15, -0.15, 0.1, -0.1, 0.05, -0.05, 0.0, 2.0])
    out = soft_threshold(g, 0.1)
    # ξ < |g| < 2ξ is shrunk (the official three in-place updates would zero 0.15); |g| ≤ ξ is zeroed.
    expected = torch.tensor([0.4, -0.4, 0.05, -0.05, 0.0, 0.0, 0.0, 0.0, 0.0, 1.9])
    torch.testing.assert_close(out, expected, atol=1e-7, rtol=0)
    assert out[2] > 0 and out[3] < 0
    assert torch.equal(g[0], torch.tensor(0.5))  # the input is not modified
    torch.testing.assert_close(soft_threshold(g, 0.0), g)
    with pytest.raises(ValueError, match="non-negative"):
        soft_threshold(g, -0.1)


# -- the gate and the layer -----------------------------------------------------------------------
def test_gate_init_and_scale():
    adapted = sora_model()
    layer = next(iter(adapted.adapters.values()))
    assert isinstance(layer.lora_E, torch.nn.Parameter) and layer.lora_E.requires_grad
    assert layer.scale == 2.0 and layer.capacity == 4
    assert torch.count_nonzero(layer.lora_B) == 0
    gates = torch.cat([lay.lora_E.detach() for lay in adapted.adapters.values()])
    assert not torch.all(gates == 1.0) and 0.5 < gates.std() < 1.5      # N(0, 1), the default
    ones = sora_model(gate_init="ones")
    assert all(torch.all(lay.lora_E == 1.0) for lay in ones.adapters.values())


def test_forward_puts_the_gate_between_A_and_B():
    adapted = sora_model()
    layer = next(iter(adapted.adapters.values()))
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(5, layer.in_features)
    s, g = layer.scale, layer.lora_E.detach()
    expected = x @ layer.base.weight.t() + layer.base.bias + s * ((x @ layer.lora_A.t()) * g) @ layer.lora_B.t()
    with torch.no_grad():
        torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)


def test_l1_regularization_value_is_divided_by_the_number_of_gates():
    assert sora_model().policy.regularization(sora_model().adapters) is None  # sparse_lambda = 0
    adapted = sora_model(sparse_lambda=0.5)
    with torch.no_grad():
        for layer in adapted.adapters.values():
            layer.lora_E.copy_(torch.tensor([1.0, -2.0, 0.0, 0.25]))
    # The official trainer: λ · Σ|g| / (number of gate entries); here every matrix has the same 4 gates.
    expected = 0.5 * (1.0 + 2.0 + 0.0 + 0.25) / 4
    assert adapted.policy.regularization(adapted.adapters).item() == pytest.approx(expected)
    assert official_l1(adapted.model, 0.5).item() == pytest.approx(expected)


def test_official_threshold_is_xi_per_step_whatever_the_lr():
    adapted = sora_model(sparse_lambda_2=0.1)
    first = next(iter(adapted.adapters))
    with torch.no_grad():
        for layer in adapted.adapters.values():
            layer.lora_E.copy_(torch.tensor([0.15, -0.3, 0.05, 1.0]))
    for lr in (0.5, 1e-4):
        assert adapted.policy.threshold(lr) == 0.1
    adapted.policy.after_optimizer_step(adapted.adapters, StepContext(step=0, total_steps=10, lr=1e-4))
    torch.testing.assert_close(adapted.adapters[first].lora_E.detach(), torch.tensor([0.05, -0.2, 0.0, 0.9]))


def test_paper_threshold_uses_the_current_lr_and_reports_rank_changes():
    adapted = sora_model(sparse_lambda_2=0.2, prox_threshold="lr_xi")
    policy, adapters = adapted.policy, adapted.adapters
    first = next(iter(adapters))
    with torch.no_grad():
        for layer in adapters.values():
            layer.lora_E.copy_(torch.tensor([0.15, -0.3, 0.05, 1.0]))
    ctx = StepContext(step=0, total_steps=10, lr=0.5)                       # threshold η·ξ = 0.1
    policy.before_optimizer_step(adapters, ctx)
    policy.after_optimizer_step(adapters, ctx)
    torch.testing.assert_close(adapters[first].lora_E.detach(), torch.tensor([0.05, -0.2, 0.0, 0.9]))
    assert policy.after_scheduler_step(adapters, ctx) is True
    assert policy.rank_pattern(adapters)[first] == 3
    policy.before_optimizer_step(adapters, ctx)
    policy.after_optimizer_step(adapters, StepContext(step=1, total_steps=10, lr=0.01))  # threshold 0.002
    assert policy.after_scheduler_step(adapters, ctx) is False


# -- a real loop, in the order of docs/methods/README.md ------------------------------------------------
def train(adapted, steps: int, lr: float) -> list[bool]:
    """Manual training loop; returns after_scheduler_step's 'ranks changed' flag per step."""
    policy, adapters, model = adapted.policy, adapted.adapters, adapted.model
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0, end_factor=0.5, total_iters=steps)
    policy.setup(adapters, steps)
    batch, labels = tiny_batch(), torch.tensor([0, 1, 0])
    changed = []
    for step in range(steps):
        loss = model(**batch, labels=labels).loss + policy.regularization(adapters)
        loss.backward()
        ctx = StepContext(step, steps, lr=optimizer.param_groups[0]["lr"], optimizer=optimizer)
        policy.before_optimizer_step(adapters, ctx)
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        policy.after_optimizer_step(adapters, ctx)
        scheduler.step()
        changed.append(policy.after_scheduler_step(adapters, ctx))
        optimizer.zero_grad(set_to_none=True)
    return changed


def test_large_xi_prunes_gates_and_export_drops_them(tmp_path):
    # τ = ξ = 0.1 per step: far above Adam's per-step move of a zeroed gate
    # (≤ η(1−β1)/√(1−β2) ≈ 0.03), so pruned gates stay at exactly 0; gates at 3 survive 8 steps.
    adapted = sora_model(gate_init="ones", sparse_lambda=0.01, sparse_lambda_2=0.1)
    names = list(adapted.adapters)
    with torch.no_grad():
        for layer in adapted.adapters.values():
            layer.lora_E.fill_(3.0)
        adapted.adapters[names[0]].lora_E.fill_(0.15)           # every rank pruned: module dropped
        adapted.adapters[names[1]].lora_E[:2] = -0.15           # two ranks pruned
    assert isinstance(adapted.policy, SoRA) and adapted.rank_pattern()[names[0]] == 4

    changed = train(adapted, steps=8, lr=1e-2)

    expected = {name: 4 for name in names} | {names[0]: 0, names[1]: 2}
    assert adapted.rank_pattern() == expected
    assert torch.count_nonzero(adapted.adapters[names[0]].lora_E) == 0
    assert torch.equal(adapted.adapters[names[1]].lora_E[:2], torch.zeros(2))
    assert changed == [False, True] + [False] * 6               # 0.15 → 0.05 → 0: reported at step 1
    assert any(torch.count_nonzero(layer.lora_B) for layer in adapted.adapters.values())  # really trained
    batch = tiny_batch()
    with torch.no_grad():
        ours = adapted.model(**batch).logits
    export_peft(adapted, tmp_path / "a")
    config = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert names[0] not in config["target_modules"] and len(config["target_modules"]) == len(names) - 1
    assert config["r"] == 4 and config["rank_pattern"] == {names[1]: 2}
    assert config["alpha_pattern"] == {names[1]: 4.0}           # alpha'/r' = s = 2
    reference = peft.PeftModel.from_pretrained(tiny_model("bert"), tmp_path / "a").eval()
    with torch.no_grad():
        torch.testing.assert_close(reference(**batch).logits, ours, atol=1e-5, rtol=0)
    assert not math.isnan(ours.sum().item())


# -- against the official operator -----------------------------------------------------------------
def official_sparse_step(gates: torch.Tensor, xi: float) -> torch.Tensor:
    """TsinghuaC3I/SoRA's ``SparseAdamW`` threshold after its Adam step: three in-place updates, the
    third on values the first two have already shrunk."""
    p = gates.clone()
    p[p > xi] -= xi
    p[p < -xi] += xi
    p[abs(p) < xi] = 0.0
    return p


def official_l1(model, sparse_lambda: float) -> torch.Tensor:
    """TsinghuaC3I/SoRA's ``compute_loss`` L1 term: λ · Σ|g| / Σ numel over every gate parameter."""
    gates = [p for n, p in model.named_parameters() if n.endswith("lora_E")]
    return sparse_lambda * sum(g.abs().sum() for g in gates) / sum(g.numel() for g in gates)


def test_against_the_official_operator_on_a_tiny_model():
    """Same model, batches and AdamW step; at every step the official three-line threshold and ours are
    applied to the same gates. They agree exactly except where the official defect bites (ξ < |g| < 2ξ
    before the step: official zeroes, ours keeps sign(g)(|g| − ξ)); the official L1 term equals ours."""
    xi, sparse_lambda, steps = 0.05, 0.5, 30
    adapted = sora_model(sparse_lambda=sparse_lambda, sparse_lambda_2=xi)
    policy, adapters, model = adapted.policy, adapted.adapters, adapted.model
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    policy.setup(adapters, steps)
    defects = 0
    for step in range(steps):
        batch, labels = tiny_batch(seed=step), torch.tensor([0, 1, step % 2])
        reg = policy.regularization(adapters)
        torch.testing.assert_close(reg, official_l1(model, sparse_lambda))
        (model(**batch, labels=labels).loss + reg).backward()
        optimizer.step()
        before = {n: layer.lora_E.detach().clone() for n, layer in adapters.items()}
        policy.after_optimizer_step(adapters, StepContext(step, steps, lr=1e-2 * (1 - step / steps)))
        optimizer.zero_grad(set_to_none=True)
        for name, layer in adapters.items():
            official, ours = official_sparse_step(before[name], xi), layer.lora_E.detach()
            window = (before[name].abs() > xi) & (before[name].abs() < 2 * xi)
            assert torch.equal(ours[~window], official[~window])
            assert torch.all(official[window] == 0)
            torch.testing.assert_close(ours[window], before[name][window] - xi * before[name][window].sign())
            defects += int(window.sum())
    pruned = sum(int((layer.lora_E == 0).sum()) for layer in adapters.values())
    assert defects > 0 and pruned > 0   # both cases were exercised
