"""ElaLoRA: preallocated capacity, prune-and-grow rounds that conserve the total rank and leave the
optimizer and the lr schedule intact, export, and resume."""

from __future__ import annotations

import pytest
import torch

import rankadapt.methods.elalora  # noqa: F401  (registers "elalora")
from rankadapt.core.config import MethodConfig
from rankadapt.core.errors import ConfigError
from rankadapt.methods import StepContext
from rankadapt.methods.elalora import zero_slot_moments
from rankadapt.methods.adapting import prepare_model

from conftest import assert_stock_peft_matches, checkpoint_round_trip, restore_round_trip, tiny_batch, tiny_model

# T = 20, t_i = 3, t_f = 5, interval 2: rounds at t = 5, 7, 9, 11, 13 (t < 15).
T, TI, TF, K = 20, 3, 5, 1
ROUNDS = (5, 7, 9, 11, 13)


def make_run(**method):
    settings = dict(lora_r=2, lora_alpha=4, lora_module=["query", "value", "intermediate"], init_warmup=TI,
                    final_warmup=TF, mask_interval=2, b=3, k=K)
    torch.manual_seed(0)
    adapted = prepare_model(tiny_model("bert"), MethodConfig(name="elalora", **{**settings, **method}))
    optimizer = torch.optim.AdamW([p for p in adapted.model.parameters() if p.requires_grad], lr=2e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 1 - t / T)
    adapted.policy.setup(adapted.adapters, T)
    return adapted, optimizer, scheduler


def train_step(adapted, optimizer, scheduler, step: int, before_policy=None) -> bool:
    """One optimizer step in the order of docs/methods/README.md; ``before_policy`` sees the state the policy gets."""
    labels = torch.randint(0, 2, (4,), generator=torch.Generator().manual_seed(1000 + step))
    loss = adapted.model(**tiny_batch(batch=4, seed=step), labels=labels).loss
    (loss + adapted.policy.regularization(adapted.adapters)).backward()
    torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], 1.0)
    optimizer.step()
    scheduler.step()
    if before_policy is not None:
        before_policy()
    ctx = StepContext(step=step, total_steps=T, lr=scheduler.get_last_lr()[0], optimizer=optimizer)
    changed = adapted.policy.after_scheduler_step(adapted.adapters, ctx)
    optimizer.zero_grad(set_to_none=True)
    return changed


def snapshot(adapted, optimizer, scheduler) -> dict:
    """Copies of everything a round may touch or must leave alone."""
    layers = adapted.adapters
    return {"mask": {n: layer.rank_mask.clone() for n, layer in layers.items()},
            "tensors": {n: {f: getattr(layer, f).detach().clone() for f in ("lora_A", "lora_E", "lora_B")}
                        for n, layer in layers.items()},
            "delta": {n: layer.delta_weight() for n, layer in layers.items()},
            "scores": {n: adapted.policy.tracker.scores(n, layer).clone() for n, layer in layers.items()},
            "moments": {n: {f: {k: v.clone() for k, v in optimizer.state[getattr(layer, f)].items()}
                            for f in ("lora_A", "lora_E", "lora_B")} for n, layer in layers.items()},
            "params": [p for g in optimizer.param_groups for p in g["params"]],
            "last_epoch": scheduler.last_epoch, "lr": optimizer.param_groups[0]["lr"]}


# --------------------------------------------------------------------------------------------------
def test_preallocated_capacity_and_setup_checks():
    adapted = prepare_model(tiny_model("bert"), MethodConfig(name="elalora", lora_r=3))
    for layer in adapted.adapters.values():
        assert layer.capacity == 6 and layer.rank_mask.tolist() == [1, 1, 1, 0, 0, 0]
        assert layer.lora_E.abs().sum() == 0 and layer.lora_A.std() > 0
    assert sum(adapted.rank_pattern().values()) == 3 * len(adapted.adapters)
    wide = prepare_model(tiny_model("bert"), MethodConfig(name="elalora", lora_r=3, max_rank=40))
    with pytest.raises(ConfigError, match="method.max_rank=40 exceeds the smaller side"):
        wide.policy.setup(wide.adapters, 100)
    late = prepare_model(tiny_model("bert"), MethodConfig(name="elalora", init_warmup=50))
    with pytest.raises(ConfigError, match="method.init_warmup=50 .* train.epochs / train.max_steps"):
        late.policy.setup(late.adapters, 60)
    # ElaLoRA conserves the total rank, so a final-rank target would silently do nothing: refused.
    with pytest.raises(ValueError, match="method.name=elalora does not use target_rank"):
        MethodConfig(name="elalora", target_rank=2)


def test_moment_reset_handles_a_parameter_without_state():
    adapted = prepare_model(tiny_model("bert"), MethodConfig(name="elalora", lora_r=2))
    layer = next(iter(adapted.adapters.values()))
    optimizer = torch.optim.AdamW([layer.lora_A, layer.lora_B, layer.lora_E])
    zero_slot_moments(optimizer, layer, 2)
    assert len(optimizer.state) == 0  # nothing created


def check_round(scale: float, before: dict, after: dict) -> int:
    """Every invariant of one round, from snapshots taken around the policy call; returns ranks moved."""
    moved = 0
    assert sum(int(m.sum()) for m in before["mask"].values()) == sum(int(m.sum()) for m in after["mask"].values())
    for name, mask in after["mask"].items():
        old, new = before["tensors"][name], after["tensors"][name]
        A, E, B = new["lora_A"], new["lora_E"], new["lora_B"]
        fresh = (A != old["lora_A"]).any(dim=1)  # slots given new directions
        grown = torch.nonzero(fresh, as_tuple=False).flatten().tolist()
        pruned = [s for s in range(len(mask)) if before["mask"][name][s] and (not mask[s] or fresh[s])]
        moved += len(grown)
        assert len(grown) <= K and len(pruned) <= K and 1 <= int(mask.sum()) <= len(mask)
        assert all(mask[s] == 0 and E[s] == 0 for s in pruned if not fresh[s])
        for s in grown:
            others = (mask != 0) & (torch.arange(len(mask)) != s)
            assert mask[s] == 1 and E[s] == 0 and after["scores"][name][s] == 0
            assert abs(A[s].norm().item() - 1) < 1e-5 and (A[others] @ A[s]).abs().max() < 1e-5
            assert abs(B[:, s].norm().item() - 1) < 1e-5 and (B[:, others].t() @ B[:, s]).abs().max() < 1e-5
        # ΔW lost the pruned ranks and gained nothing from the grown ones (λ = 0).
        kept = before["mask"][name].bool() & ~fresh
        kept[pruned] = False
        expected = scale * (old["lora_B"][:, kept] * old["lora_E"][kept]) @ old["lora_A"][kept]
        torch.testing.assert_close(after["delta"][name], expected, atol=1e-7, rtol=0)
        # Adam state: the grown slots are zero, every other entry and "step" are bit-identical.
        for factor, moments in after["moments"][name].items():
            untouched = torch.ones_like(new[factor], dtype=torch.bool)
            if factor == "lora_B":
                untouched[:, grown] = False
            else:
                untouched[grown] = False
            assert moments.keys() == before["moments"][name][factor].keys() and "exp_avg" in moments
            for key, value in moments.items():
                old_value = before["moments"][name][factor][key]
                if key == "step":
                    assert torch.equal(value, old_value)
                else:
                    assert torch.equal(value[untouched], old_value[untouched]) and not value[~untouched].any()
    # The optimizer and the lr schedule carry on: the same Parameters, the same scheduler step and lr.
    assert after["params"] == before["params"]
    assert (after["last_epoch"], after["lr"]) == (before["last_epoch"], before["lr"])
    return moved


@pytest.fixture(scope="module")
def trained():
    """A full run with snapshots around every policy call and the masks and A after every step."""
    adapted, optimizer, scheduler = make_run()
    steps, history = [], []
    for t in range(T):
        before = {}
        changed = train_step(adapted, optimizer, scheduler, t,
                             before_policy=lambda: before.update(snapshot(adapted, optimizer, scheduler)))
        steps.append((before, snapshot(adapted, optimizer, scheduler), changed))
        history.append({n: (layer.rank_mask.clone(), layer.lora_A.detach().clone())
                        for n, layer in adapted.adapters.items()})
    return adapted, history, steps


def test_rounds_conserve_rank_move_at_most_k_and_keep_optimizer_state(trained):
    adapted, _, steps = trained
    scale, moved = next(iter(adapted.adapters.values())).scale, 0
    for t, (before, after, changed) in enumerate(steps):
        assert after["last_epoch"] == t + 1 and after["lr"] == pytest.approx(2e-2 * (1 - (t + 1) / T))
        if t in ROUNDS:
            rank_moves = check_round(scale, before, after)
            assert changed == (rank_moves > 0)
            moved += rank_moves
        else:
            assert not changed and all(torch.equal(before["mask"][n], m) for n, m in after["mask"].items())
    pattern = adapted.rank_pattern()
    assert moved >= 3 and sum(pattern.values()) == 2 * len(pattern) and set(pattern.values()) != {2}


def test_trained_elalora_exports_to_stock_peft(trained, tmp_path):
    adapted, _, _ = trained
    assert_stock_peft_matches(adapted, tmp_path / "adapter")


def test_state_round_trip_resumes_with_identical_rounds(trained):
    """Stop after step 6, save, rebuild fresh, load: the same prunes, growths and random directions."""
    _, reference, _ = trained
    first, optimizer, scheduler = make_run()
    for t in range(7):
        train_step(first, optimizer, scheduler, t)
    saved = checkpoint_round_trip(first.model, optimizer, scheduler, first.policy)
    resumed, optimizer, scheduler = make_run()
    resumed.policy.seed = 12345  # the checkpoint's seed and generator state win
    restore_round_trip(saved, resumed.model, optimizer, scheduler, resumed.policy)
    for t in range(7, T):
        train_step(resumed, optimizer, scheduler, t)
        for name, layer in resumed.adapters.items():
            mask, A = reference[t][name]
            assert torch.equal(layer.rank_mask, mask) and torch.equal(layer.lora_A, A)
