"""The shared rank-allocation engine, as pure functions: schedules, importance, selection, rounds."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from rankadapt.core.errors import ConfigError
from rankadapt.core.layer import AdapterLinear
from rankadapt.methods.allocation import (ImportanceTracker, Phase, budget_schedule, is_mask_step, is_round_step,
                                          orthogonal_unit_vector, plan_round, resolve_schedule, round_size,
                                          select_to_keep, update_importance)

# T = 100, t_i = 10, t_f = 30: the budgeting phase is 10 < t <= 70, its length 60.
T, TI, TF = 100, 10, 30


@pytest.mark.parametrize("step, budget, phase", [
    (0, 48, Phase.WARMUP),
    (10, 48, Phase.WARMUP),
    (11, 46, Phase.BUDGETING),   # 24 + 24·(59/60)³ = 46.82 -> 46 (truncated, not rounded)
    (20, 37, Phase.BUDGETING),   # 24 + 24·(5/6)³ = 37.89 -> 37
    (25, 34, Phase.BUDGETING),   # 24 + 24·0.75³ = 34.125 -> 34
    (40, 27, Phase.BUDGETING),   # 24 + 24·0.5³ = 27 exactly
    (55, 24, Phase.BUDGETING),   # 24 + 24·0.25³ = 24.375 -> 24
    (70, 24, Phase.BUDGETING),   # t = T - t_f: still budgeting, b = b(T)
    (71, 24, Phase.FINAL),
    (99, 24, Phase.FINAL),
])
def test_budget_schedule_hand_table(step, budget, phase):
    assert budget_schedule(step, T, TI, TF, initial_budget=48, target_budget=24) == (budget, phase)


def test_mask_steps_count_from_zero_and_force_the_final_decision():
    steps = [t for t in range(T) if is_mask_step(t, T, TI, TF, mask_interval=8)]
    assert steps == [16, 24, 32, 40, 48, 56, 64, 70]  # t % 8 == 0 inside (10, 70], plus t = 70


@pytest.mark.parametrize("step, b, size", [
    (5, 4, 4),     # before t_i: p clipped to 0
    (10, 4, 4),
    (25, 4, 4),    # 4·(1 - 0.25³) = 3.94 -> 4
    (55, 4, 2),    # 4·(1 - 0.75³) = 2.31 -> 2
    (60, 4, 2),    # 4·(1 - (5/6)³) = 1.69 -> 2
    (64, 4, 1),    # 4·(1 - 0.9³) = 1.08 -> 1
    (70, 4, 0),    # p = 1
    (90, 4, 0),    # p clipped to 1
    (40, 12, 10),  # 12·0.875 = 10.5 -> 10: Python's round, halves to even
])
def test_elalora_round_size_hand_table(step, b, size):
    assert round_size(step, T, TI, TF, b) == size
    assert round_size(step, T, TI, TF, b, enable_scheduler=False) == b


def test_round_steps():
    steps = [t for t in range(T) if is_round_step(t, T, TI, TF, mask_interval=15)]
    assert steps == [25, 40, 55]  # t > t_i, (t - t_i) % 15 == 0, t < T - t_f (70 excluded)


def test_schedule_defaults_and_rejection():
    assert resolve_schedule(None, None, 50) == resolve_schedule(5, 15, 50)
    assert resolve_schedule(None, None, 3).final_warmup == 1  # 30% of 3 floors to 0; at least 1
    with pytest.raises(ConfigError, match=r"method.init_warmup=40 \+ method.final_warmup=15 \(default\).*"
                                          r"train.epochs / train.max_steps"):
        resolve_schedule(40, None, 50)


# --------------------------------------------------------------------------------------------------
def test_importance_update_uses_the_updated_mean():
    # Ī = 0.5·2 + 0.5·6 = 4;  Ū = 0.75·1 + 0.25·|6 - 4| = 1.25 (1.75 if the old Ī were used)
    ipt_avg, unc_avg = update_importance(torch.tensor(2.0), torch.tensor(1.0), torch.tensor(6.0), 0.5, 0.75)
    assert ipt_avg.item() == 4.0 and unc_avg.item() == 1.25


def hand_layer() -> AdapterLinear:
    layer = AdapterLinear(nn.Linear(2, 2), capacity=2, scale=1.0, gate_trainable=True)
    with torch.no_grad():
        layer.lora_A.copy_(torch.tensor([[1.0, -2.0], [0.5, 0.0]]))
        layer.lora_E.copy_(torch.tensor([3.0, -1.0]))
        layer.lora_B.copy_(torch.tensor([[1.0, 0.0], [-1.0, 2.0]]))
    layer.lora_A.grad = torch.tensor([[2.0, 1.0], [4.0, -3.0]])   # I_A = [[2, 2], [2, 0]]
    layer.lora_E.grad = torch.tensor([1.0, 2.0])                  # I_E = [3, 2]
    layer.lora_B.grad = torch.tensor([[0.5, 1.0], [2.0, 0.25]])   # I_B = [[0.5, 0], [2, 0.5]]
    return layer


def test_importance_and_rank_score_by_hand():
    layer, tracker = hand_layer(), ImportanceTracker(beta1=0.5, beta2=0.75)
    tracker.update({"m": layer})
    # Step 1 from zero EMAs: Ī = 0.5·I, Ū = 0.25·|I - Ī| = 0.125·I, s = Ī·Ū = 0.0625·I².
    I_A = torch.tensor([[2.0, 2.0], [2.0, 0.0]])
    I_E = torch.tensor([3.0, 2.0])
    I_B = torch.tensor([[0.5, 0.0], [2.0, 0.5]])
    assert torch.equal(tracker.ipt_avg["m"]["lora_A"], 0.5 * I_A)
    assert torch.equal(tracker.unc_avg["m"]["lora_E"], 0.125 * I_E)
    # s_E = [0.5625, 0.25]; s_A rows [0.25, 0.25], [0.25, 0]; s_B columns [0.015625, 0.25], [0, 0.015625]
    # S_0 = 0.5625 + 0.25 + 0.1328125 = 0.9453125;  S_1 = 0.25 + 0.125 + 0.0078125 = 0.3828125
    assert tracker.scores("m", layer).tolist() == [0.9453125, 0.3828125]
    # Step 2 with zero gradients: Ī = 0.25·I, Ū = 0.75·0.125·I + 0.25·0.25·I = 0.15625·I.
    for p in (layer.lora_A, layer.lora_E, layer.lora_B):
        p.grad.zero_()
    tracker.update({"m": layer})
    assert torch.equal(tracker.ipt_avg["m"]["lora_B"], 0.25 * I_B)
    assert torch.equal(tracker.unc_avg["m"]["lora_B"], 0.15625 * I_B)


def test_tracker_reset_and_state_round_trip():
    layer, tracker = hand_layer(), ImportanceTracker(0.85, 0.85)
    tracker.update({"m": layer})
    copy = ImportanceTracker(0.5, 0.5)
    copy.load_state_dict(tracker.state_dict())
    assert torch.equal(copy.scores("m", layer), tracker.scores("m", layer)) and copy.beta1 == 0.85
    tracker.reset_slots("m", [1])
    assert tracker.scores("m", layer)[1] == 0 and tracker.scores("m", layer)[0] > 0
    assert tracker.ipt_avg["m"]["lora_B"][:, 1].abs().sum() == 0 and copy.scores("m", layer)[1] > 0


# --------------------------------------------------------------------------------------------------
def test_select_keeps_exactly_the_budget_with_ties():
    scores = torch.tensor([0.3, 0.1, 0.3, 0.2, 0.3])
    assert select_to_keep(scores, 2).tolist() == [True, False, True, False, False]  # ties -> lower index
    assert select_to_keep(scores, 0).sum() == 0 and select_to_keep(scores, 9).all()
    # PEFT's rule masks every score <= the (n - b)-th smallest: here all ties, so nothing is kept.
    threshold = torch.kthvalue(scores, k=5 - 2).values
    assert (scores > threshold).sum() == 0
    # Without ties the two rules agree.
    distinct = torch.tensor([0.5, 0.1, 0.4, 0.2, 0.3])
    assert torch.equal(select_to_keep(distinct, 2), distinct > torch.kthvalue(distinct, k=3).values)


def test_round_plan_by_hand_skips_a_full_matrix_and_shrinks_to_conserve():
    scores = [torch.tensor([0.1, 0.2, 0.9, 0.0]), torch.tensor([0.8, 0.95]),
              torch.tensor([0.5, 0.6, 0.0, 0.0]), torch.tensor([0.99, 0.0, 0.0, 0.0])]
    active = [torch.tensor([1, 1, 1, 0]).bool(), torch.tensor([1, 1]).bool(),
              torch.tensor([1, 1, 0, 0]).bool(), torch.tensor([1, 0, 0, 0]).bool()]
    capacity = [4, 2, 4, 4]
    # Candidates (k = 2): m0 -> 0.1, 0.2; m1 -> 0.8 (it keeps one); m2 -> 0.5; m3 (one rank) -> none.
    # b_t = 2: prune 0.1, 0.2 and grow the owners of 0.8 (m1: full, skipped) and 0.5 (m2): only one
    # owner can grow, so the round moves one rank: prune m0's slot 0, grow m2.
    plan = plan_round(scores, active, capacity, k=2, budget=2)
    assert plan.prune == [[0], [], [], []] and plan.grow == [0, 0, 1, 0]
    # With room in m1 both strongest owners grow and both weakest ranks go.
    plan = plan_round(scores, active, [4, 4, 4, 4], k=2, budget=2)
    assert plan.prune == [[0, 1], [], [], []] and plan.grow == [0, 1, 1, 0]
    # Fewer than 2·b_t candidates: n = ⌊4/2⌋ = 2 moves at most.
    assert plan_round(scores, active, [4, 4, 4, 4], k=2, budget=5).moved == 2
    assert plan_round(scores, active, capacity, k=2, budget=0).moved == 0


def test_round_plan_invariants_on_random_cases():
    rng = random.Random(0)
    for _ in range(300):
        n, k, budget = rng.randint(1, 6), rng.randint(1, 3), rng.randint(0, 6)
        capacity = [rng.randint(1, 6) for _ in range(n)]
        counts = [rng.randint(1, c) for c in capacity]
        active = [torch.randperm(c) < a for c, a in zip(capacity, counts)]
        scores = [torch.rand(c) if rng.random() < 0.7 else torch.zeros(c) for c in capacity]  # some ties
        plan = plan_round(scores, active, capacity, k, budget)
        assert sum(len(p) for p in plan.prune) == sum(plan.grow) <= budget
        for mask, cap, count, pruned, gained in zip(active, capacity, counts, plan.prune, plan.grow):
            assert all(mask[s] for s in pruned) and len(set(pruned)) == len(pruned)
            assert len(pruned) <= k and gained <= k
            assert 1 <= count - len(pruned) + gained <= cap and count - len(pruned) >= 1


# --------------------------------------------------------------------------------------------------
def test_orthogonal_unit_vector():
    gen = torch.Generator().manual_seed(0)
    rows = torch.randn(5, 16, generator=gen)
    rows[4] = rows[0] + 1e-9  # (nearly) dependent rows are fine
    v = orthogonal_unit_vector(rows, gen)
    assert abs(v.norm().item() - 1) < 1e-6 and (rows @ v).abs().max() < 1e-5
    assert abs(orthogonal_unit_vector(rows[:0], gen).norm().item() - 1) < 1e-6
    with pytest.raises(ValueError, match="span the whole"):
        orthogonal_unit_vector(torch.randn(16, 16, generator=gen), gen)
    again = orthogonal_unit_vector(rows, torch.Generator().manual_seed(0))
    assert torch.equal(again, orthogonal_unit_vector(rows, torch.Generator().manual_seed(0)))
