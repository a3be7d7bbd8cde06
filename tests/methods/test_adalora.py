"""AdaLoRA: setup validation, masking to the budget, the frozen final pattern, parity with stock PEFT,
export, and resume."""

from __future__ import annotations

import peft
import pytest
import torch

import rankadapt.methods.adalora  # noqa: F401  (registers "adalora")
from rankadapt.core.config import MODULE_NAMES, MethodConfig
from rankadapt.core.errors import ConfigError, TrainingError
from rankadapt.methods import StepContext
from rankadapt.methods.allocation import budget_schedule, select_to_keep
from rankadapt.methods.adapting import prepare_model

from conftest import assert_stock_peft_matches, checkpoint_round_trip, restore_round_trip, tiny_batch, tiny_model

# T = 20, t_i = 3, t_f = 6: warmup t <= 3, budgeting 3 < t <= 14, final t >= 15.
T, TI, TF = 20, 3, 6


def make_run(lr: float = 2e-2, **method):
    settings = dict(lora_r=4, lora_alpha=8, target_rank=1, init_warmup=TI, final_warmup=TF, mask_interval=2)
    torch.manual_seed(0)
    adapted = prepare_model(tiny_model("bert"), MethodConfig(name="adalora", **{**settings, **method}))
    params = [p for p in adapted.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 1 - t / T)
    adapted.policy.setup(adapted.adapters, T)
    return adapted, optimizer, scheduler


def data(step: int):
    labels = torch.randint(0, 2, (4,), generator=torch.Generator().manual_seed(1000 + step))
    return tiny_batch(batch=4, seed=step), labels


def train_step(adapted, optimizer, scheduler, step: int) -> bool:
    """One optimizer step in the order of docs/methods/README.md."""
    batch, labels = data(step)
    loss = adapted.model(**batch, labels=labels).loss + adapted.policy.regularization(adapted.adapters)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], 1.0)
    optimizer.step()
    scheduler.step()
    ctx = StepContext(step=step, total_steps=T, lr=scheduler.get_last_lr()[0], optimizer=optimizer)
    changed = adapted.policy.after_scheduler_step(adapted.adapters, ctx)
    optimizer.zero_grad(set_to_none=True)
    return changed


def nonzero_gates(adapted) -> dict[str, list[bool]]:
    return {n: (layer.lora_E != 0).tolist() for n, layer in adapted.adapters.items()}


def budget(adapted, step):
    p = adapted.policy
    return budget_schedule(step, T, TI, TF, p.initial_budget, p.target_budget)[0]


# --------------------------------------------------------------------------------------------------
def test_setup_resolves_defaults_and_rejects_impossible_schedules():
    adapted = prepare_model(tiny_model("bert"), MethodConfig(name="adalora", lora_r=5))
    adapted.policy.setup(adapted.adapters, 50)
    s = adapted.policy.schedule
    assert (s.init_warmup, s.final_warmup) == (5, 15)                      # 10% and 30% of T
    assert adapted.policy.initial_budget == 20 and adapted.policy.target_budget == 8  # 4 x 5 -> 4 x ⌊5/2⌋
    assert adapted.policy.rank_pattern(adapted.adapters) == dict.fromkeys(adapted.adapters, 5)
    cases = [(dict(init_warmup=30, final_warmup=20), r"method.init_warmup=30 \+ method.final_warmup=20 .*train.epochs"),
             (dict(final_warmup=0), "final_warmup=0"),
             (dict(target_total_rank=99), "target_total_rank=99 = 99 exceeds the initial total rank 20")]
    for method, message in cases:
        policy = prepare_model(tiny_model("bert"), MethodConfig(name="adalora", lora_r=5, **method))
        with pytest.raises(ConfigError, match=message):
            policy.policy.setup(policy.adapters, 50)


def test_tied_scores_still_keep_exactly_the_budget():
    """All scores 0 (no gradients yet): PEFT's ``<=`` threshold would mask every rank; we keep b(t)."""
    adapted, _, _ = make_run()
    with torch.no_grad():
        for layer in adapted.adapters.values():
            layer.lora_E.fill_(1.0)
    ctx = StepContext(step=6, total_steps=T, lr=0.0)
    assert adapted.policy.after_scheduler_step(adapted.adapters, ctx)
    kept = [bit for bits in nonzero_gates(adapted).values() for bit in bits]
    assert kept == [True] * budget(adapted, 6) + [False] * (16 - budget(adapted, 6))  # ties -> model order


def test_masking_keeps_the_budget_revives_only_while_budgeting_and_freezes_the_final_pattern():
    adapted, optimizer, scheduler = make_run()
    policy, tracker = adapted.policy, adapted.policy.tracker
    boosted = final = frozen_tracker = None
    for t in range(T):
        changed = train_step(adapted, optimizer, scheduler, t)
        keep = {n: k.tolist() for n, k in policy.keep.items()}
        if t <= TI:
            assert not changed and all(all(k) for k in keep.values())
        if t in (4, 6, 8, 10, 12, 14):  # mask steps: exactly b(t) ranks decided, exactly those λ ≠ 0
            assert sum(policy.rank_pattern(adapted.adapters).values()) == budget(adapted, t)
            assert nonzero_gates(adapted) == keep
        if t == 4:  # make a masked rank the most important one: it must come back at the next mask step
            boosted = next((n, k.index(False)) for n, k in keep.items() if not all(k))
            tracker.ipt_avg[boosted[0]]["lora_E"][boosted[1]] = 1e3
            tracker.unc_avg[boosted[0]]["lora_E"][boosted[1]] = 1e3
        if t == 5:  # between mask steps a masked λ trains on (only mask steps and the final phase zero it)
            assert sum(map(sum, nonzero_gates(adapted).values())) > budget(adapted, 4)
        if t == 6:
            assert keep[boosted[0]][boosted[1]] and adapted.adapters[boosted[0]].lora_E[boosted[1]] != 0
        if t == 14:
            final = keep
        if t == 15:  # in the final phase, scores neither update nor matter: boost a masked rank again
            name, slot = next((n, k.index(False)) for n, k in keep.items() if not all(k))
            tracker.ipt_avg[name]["lora_E"][slot] = tracker.unc_avg[name]["lora_E"][slot] = 1e3
            frozen_tracker = tracker.state_dict()
        if t >= 15:
            assert not changed and keep == final and nonzero_gates(adapted) == final
    assert sum(policy.rank_pattern(adapted.adapters).values()) == policy.target_budget == 4
    for name, avg in frozen_tracker["ipt_avg"].items():
        assert all(torch.equal(avg[f], tracker.ipt_avg[name][f]) for f in avg)


# --------------------------------------------------------------------------------------------------
def test_parity_with_peft_adalora():
    """Same initial A, λ, B and head in stock PEFT's AdaLoRA; same batches, AdamW, clipping and schedule,
    through all three phases: the same rank pattern at every decision and the same logits.

    How PEFT relates to rankadapt (see the account in ``rankadapt.methods.adalora``):
    - step index: PEFT's ``update_and_allocate(global_step)`` takes the 0-based index of the step just
      taken, our ``StepContext.step``; its mask steps are ``global_step % deltaT == 0`` inside the
      budgeting phase plus a forced mask at T − t_f, as ours; its budget is the same ⌊·⌋ formula.
    - scale: PEFT uses lora_alpha / (ranknum + 1e-5); we use lora_alpha / r. Checked below, then
      neutralised by setting ranknum = r − 1e-5 (so ranknum + 1e-5 == r in float32).
    - orthogonal term: PEFT adds ``orth_reg_weight`` × Σ norms / (2 × matrices) to the loss in its
      forward (labels given); ours is the same with γ = ``orth_reg_weight``, and the losses match.
    - last importance update: both update the scores only while t < T − t_f, so the final patterns
      are equal; one more update at T − t_f (an earlier rankadapt's rule) would give another final
      pattern here, which the test checks so that it would catch that rule coming back.
    - ties: PEFT's ``<=`` threshold would drop all tied ranks; here no scores tie (checked), so the
      exact-budget rule and PEFT's keep the same ranks.
    Tolerances: losses 1e-5 and logits 1e-5 (the two layers order their float ops differently).
    """
    gamma, interval = 0.1, 3
    adapted, optimizer, scheduler = make_run(lora_module=list(MODULE_NAMES), target_rank=2, mask_interval=interval,
                                             reg_orth_coef=gamma)
    config = peft.AdaLoraConfig(task_type="SEQ_CLS", init_r=4, target_r=2, lora_alpha=8, tinit=TI, tfinal=TF,
                                deltaT=interval, total_step=T, orth_reg_weight=gamma, beta1=0.85, beta2=0.85,
                                target_modules=list(adapted.adapters), modules_to_save=["pooler"])
    reference = peft.get_peft_model(tiny_model("bert"), config)
    inner, allocator = reference.base_model.model, reference.base_model.rankallocator
    with torch.no_grad():
        for name, layer in adapted.adapters.items():
            module = inner.get_submodule(name)
            for factor in ("lora_A", "lora_B"):
                getattr(module, factor)["default"].copy_(getattr(layer, factor))
            module.lora_E["default"].copy_(layer.lora_E.view(-1, 1) + 0.5)  # λ ≠ 0 to compare the scales
            stock = module.get_delta_weight("default")
            module.lora_E["default"].zero_()                                # the paper's init, as ours
            module.ranknum["default"].fill_(4 - 1e-5)
            assert (module.ranknum["default"] + 1e-5).item() == 4.0
            layer.lora_E.add_(0.5)
            torch.testing.assert_close(stock, layer.delta_weight() * 4 / (4 + 1e-5), atol=1e-9, rtol=1e-6)
            layer.lora_E.zero_()
        for head in adapted.head_modules:
            theirs = inner.get_submodule(head).modules_to_save["default"]
            theirs.load_state_dict(adapted.model.get_submodule(head).state_dict())
    params = [p for p in reference.parameters() if p.requires_grad]
    assert sum(p.numel() for p in params) == sum(p.numel() for g in optimizer.param_groups for p in g["params"])
    ref_optimizer = torch.optim.AdamW(params, lr=2e-2, weight_decay=0.01)
    ref_scheduler = torch.optim.lr_scheduler.LambdaLR(ref_optimizer, lambda t: 1 - t / T)
    decisions = 0
    for t in range(T):
        batch, labels = data(t)
        theirs = reference(**batch, labels=labels).loss
        theirs.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        ref_optimizer.step()
        ref_scheduler.step()
        if t == T - TF:  # what one more importance update would decide (on a copy of PEFT's EMAs)
            saved = {k: dict(v) for k, v in ((k, getattr(allocator, k)) for k in ("ipt", "exp_avg_ipt", "exp_avg_unc"))}
            allocator.update_ipt(inner)
            one_more = torch.cat([_peft_scores(allocator, name) for name in adapted.adapters])
            for k, v in saved.items():
                setattr(allocator, k, v)
        reference.base_model.update_and_allocate(t)
        ref_optimizer.zero_grad()
        ours = _loss(adapted, batch, labels)
        train_step(adapted, optimizer, scheduler, t)
        torch.testing.assert_close(ours, theirs.detach(), atol=1e-5, rtol=0)
        pattern = config.rank_pattern
        if TI < t <= T - TF and (t % interval == 0 or t == T - TF):
            decisions += 1
            ours_keep = torch.cat([adapted.policy.keep[n] for n in adapted.adapters])
            assert ours_keep.tolist() == sum((pattern[f"{n}.lora_E.default"] for n in adapted.adapters), [])
            if t == T - TF:
                assert not torch.equal(select_to_keep(one_more, adapted.policy.target_budget), ours_keep)
            else:
                scores = torch.cat([_peft_scores(allocator, n) for n in adapted.adapters])
                assert scores.unique().numel() == scores.numel()  # no ties
        assert nonzero_gates(adapted) == {n: (inner.get_submodule(n).lora_E["default"].view(-1) != 0).tolist()
                                          for n in adapted.adapters}
    assert decisions == 4 and sum(adapted.policy.rank_pattern(adapted.adapters).values()) == 24
    batch = tiny_batch(batch=4, seed=99)
    with torch.no_grad():
        torch.testing.assert_close(adapted.model(**batch).logits, reference(**batch).logits, atol=1e-5, rtol=0)


def _loss(adapted, batch, labels) -> torch.Tensor:
    with torch.no_grad():
        return adapted.model(**batch, labels=labels).loss + adapted.policy.regularization(adapted.adapters)


def _peft_scores(allocator, name: str) -> torch.Tensor:
    """PEFT's triplet score for one matrix, from its allocator's EMAs (as its ``mask_to_budget``)."""
    s = {f: allocator._element_score(f"{name}.{f}.default") for f in ("lora_A", "lora_E", "lora_B")}
    return allocator._combine_ipt(s["lora_E"], torch.cat([s["lora_A"].mean(1, keepdim=True),
                                                          s["lora_B"].mean(0).view(-1, 1)], dim=1))


# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained():
    """An uninterrupted run through all three phases, with the decided pattern after every step."""
    adapted, optimizer, scheduler = make_run()
    history = []
    for t in range(T):
        train_step(adapted, optimizer, scheduler, t)
        history.append({n: k.clone() for n, k in adapted.policy.keep.items()})
    return adapted, history


def test_trained_adalora_exports_to_stock_peft(trained, tmp_path):
    adapted, _ = trained
    pattern = adapted.rank_pattern()
    assert sum(pattern.values()) == 4 and {layer.active_rank() for layer in adapted.adapters.values()} != {4}
    assert {n: layer.active_rank() for n, layer in adapted.adapters.items()} == pattern
    assert_stock_peft_matches(adapted, tmp_path / "adapter")


def test_state_round_trip_resumes_with_identical_decisions(trained):
    """Stop after step 6 (between mask steps), save, rebuild everything fresh, load, continue."""
    adapted, reference = trained
    first, optimizer, scheduler = make_run()
    for t in range(7):
        train_step(first, optimizer, scheduler, t)
    saved = checkpoint_round_trip(first.model, optimizer, scheduler, first.policy)
    resumed, optimizer, scheduler = make_run()
    restore_round_trip(saved, resumed.model, optimizer, scheduler, resumed.policy)
    for t in range(7, T):
        train_step(resumed, optimizer, scheduler, t)
        assert all(torch.equal(resumed.policy.keep[n], reference[t][n]) for n in reference[t])
    for name, layer in adapted.adapters.items():
        assert torch.equal(resumed.adapters[name].lora_E, layer.lora_E)
    other = prepare_model(tiny_model("bert"), MethodConfig(name="adalora", lora_r=4, init_warmup=TI, final_warmup=TF))
    other.policy.setup(other.adapters, T + 1)
    with pytest.raises(TrainingError, match="rank schedule and the checkpoint's differ"):
        other.policy.load_state_dict(saved["policy"])
