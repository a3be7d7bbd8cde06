"""ElaLoRA (Chang et al. 2025, arXiv 2504.00254; docs/methods/elalora.md): ranks move between matrices.

The parameterisation, regulariser and importance scores are AdaLoRA's (:class:`.importance.ImportancePolicy`):
ΔW = s · B · diag(λ ⊙ m) · A, λ init 0, A, B ~ N(0, 0.02), s = lora_alpha / lora_r constant, loss
term γ · Σ over matrices of (‖AAᵀ − I‖_F + ‖BᵀB − I‖_F) / 2L over the active slots only. Each matrix
holds R = ``max_rank`` slots (default 2 × lora_r); the first lora_r start active (m = 1).

At round steps (t > t_i, (t − t_i) % ``mask_interval`` == 0, t < T − t_f) the b_t = round(b(1 − p³))
weakest candidate ranks anywhere are pruned and the matrices owning the strongest candidates grow
(:func:`.allocation.plan_round` defines the round exactly). The total active rank is
conserved, so the final pattern's size is lora_r × matrices.

- **Prune** a slot: m_i = 0, λ_i = 0. Its A row, B column and optimizer moments are left as they are;
  with m_i = 0 they do not reach ΔW, and they are overwritten if the slot is grown again.
- **Grow** into the lowest free slot: its A row is a random unit vector orthogonal to the active rows of
  A, its B column likewise against the active columns of B, λ = 0 (ΔW unchanged at insertion); its
  importance EMAs and its Adam moments (``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``: every state
  tensor shaped like the parameter) are zeroed at that row / column / entry only.

Choices and departures:

- Capacity by preallocation, never by replacing Parameters: the optimizer, every other entry's Adam
  state, the lr schedule and weight decay carry on. The official code rebuilds the optimizer each round,
  which drops all Adam state and restarts the schedule; we do not copy that.
- The per-parameter Adam ``step`` is kept, so a grown entry's first update is not bias-corrected as a
  fresh parameter's would be: it is about (1 − β1)/√(1 − β2) ≈ 3.2 × lr in size for AdamW's defaults.
- A grown vector has unit norm, as the spec says, while the initial rows have norm ≈ 0.02·√d; the
  orthogonal regulariser pulls both towards unit norm.
- Random directions come from a ``torch.Generator`` seeded with ``self.seed`` (the trainer sets it to
  ``train.seed`` before ``setup``) and saved in the policy state, so every process draws the same
  vectors and a resumed run draws what the uninterrupted one would have.
- Under DDP (docs/methods/README.md) the all-reduced gradients give every process the same scores, hence the
  same round. After each round :meth:`ElaLoRA.broadcast_state` checks that every process pruned and
  grew the same slots, then copies rank 0's A, B, λ and m everywhere: the grown directions are then
  identical even if a process's generator or orthogonalisation had rounded differently. Parameters
  are edited in place, never replaced, so DDP's bucketed all-reduce and the optimizer keep working.
- Importance is updated at every step t < T − t_f (from step 0, as AdaLoRA); later steps hold no round.
- ``setup`` rejects ``max_rank`` above the smallest side of an adapted matrix: a full matrix would have
  no orthogonal direction left to grow into.
- ``target_rank``/``target_total_rank`` are not used: ElaLoRA conserves the initial total rank.
- γ is normalised as in the official code and PEFT (sum of the A and B terms over 2L,
  :mod:`.regularizers`), so an official ``reg_orth_coef`` runs at its official strength.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from ..core.errors import ConfigError
from ..core.layer import AdapterLinear
from .allocation import is_round_step, orthogonal_unit_vector, plan_round, round_size
from .base import Adapters, MethodPolicy, StepContext, register_method
from .budget_plans import BudgetPlan, Shape, smallest_full_rank, uniform_plan
from .importance import ImportancePolicy, ImportanceSettings

DEFAULT_SEED = 0


def zero_slot_moments(optimizer: torch.optim.Optimizer, layer: AdapterLinear, slot: int) -> None:
    """Zero the optimizer's per-entry state of one slot: row ``slot`` of A, entry of λ, column of B.

    Every state tensor shaped like its parameter (Adam's moments) is edited in place; scalars such as
    ``step`` and every other entry stay untouched. A parameter with no state yet is skipped (its
    moments start at zero anyway).
    """
    for param, index in ((layer.lora_A, (slot,)), (layer.lora_E, (slot,)), (layer.lora_B, (slice(None), slot))):
        for value in optimizer.state.get(param, {}).values():
            if torch.is_tensor(value) and value.shape == param.shape:
                value[index] = 0


class ElaLoRASettings(ImportanceSettings):
    """ElaLoRA's keys (docs/methods/elalora.md). ``b`` and ``k`` keep the single letters of the official
    scripts' flags (``--b``, ``--k``), so their commands paste unchanged."""

    name: Literal["elalora"] = "elalora"
    b: int = Field(4, gt=0)
    """b: ranks moved per round (pruned in one place, grown in another), before the schedule shrinks it."""
    k: int = Field(2, gt=0)
    """k: most ranks one matrix gains or loses in a round."""
    enable_scheduler: bool = True
    """Shrink the round size as b_t = round(b (1 - p^3)), p the progress through the budgeting phase."""
    max_rank: int | None = Field(None, gt=0)
    """R: slots preallocated per matrix, the most rank one matrix can grow to (default 2 x lora_r)."""

    @model_validator(mode="after")
    def _capacity_holds_the_initial_rank(self) -> ElaLoRASettings:
        if self.max_rank is not None and self.max_rank < self.lora_r:
            raise ValueError(f"method.max_rank={self.max_rank} is below method.lora_r={self.lora_r}; raise max_rank")
        return self


@register_method
class ElaLoRA(ImportancePolicy):
    name = "elalora"
    settings = ElaLoRASettings
    report_keys = ("lora_r", "max_rank", "b", "k")
    glue_flags = MethodPolicy.glue_flags + (*ImportanceSettings.glue_keys, "b", "k", "enable_scheduler")
    glue_selectors = ("apply_elalora",)
    glue_ignored = {flag: "ElaLoRA keeps the initial total rank (docs/methods/elalora.md)"
                    for flag in ("target_rank", "target_total_rank")}

    @classmethod
    def plan_budget(cls, budget: int, shapes: Sequence[Shape], explicit: dict[str, int]) -> BudgetPlan:
        """The total active rank r·M is conserved while ranks move, so r = round(N / S) as for LoRA; the
        final count moves with the allocation (it is r·S at the start)."""
        plan = uniform_plan(cls.name, budget, shapes)
        rank, full = plan.settings["lora_r"], smallest_full_rank(shapes)
        if "max_rank" not in explicit and 2 * rank > full:
            plan.settings["max_rank"] = full  # the default 2·r slots would exceed the smallest matrix's rank
        plan.notes.append("ElaLoRA conserves the total rank; the final count moves with the allocation")
        return plan

    def __init__(self, config) -> None:
        super().__init__(config)
        self.seed = DEFAULT_SEED
        self.generator: torch.Generator | None = None

    # -- construction -----------------------------------------------------------------------------
    def capacity(self) -> int:
        return self.config.max_rank or 2 * self.config.lora_r

    def init_adapter(self, layer: AdapterLinear) -> None:
        """SVD-form init on all R slots; only the first lora_r are active."""
        super().init_adapter(layer)
        with torch.no_grad():
            layer.rank_mask[self.config.lora_r:] = 0

    def setup(self, adapters: Adapters, total_steps: int) -> None:
        """Resolve t_i, t_f for T = ``total_steps``, check capacities, seed the direction generator."""
        super().setup(adapters, total_steps)
        for name, layer in adapters.items():
            if layer.capacity > min(layer.in_features, layer.out_features):
                raise ConfigError(f"method.max_rank={layer.capacity} exceeds the smaller side of {name} "
                                  f"({layer.out_features} x {layer.in_features}); lower method.max_rank")
        if self.generator is None:
            self.generator = torch.Generator().manual_seed(self.seed)

    # -- the step ---------------------------------------------------------------------------------
    def after_scheduler_step(self, adapters: Adapters, ctx: StepContext) -> bool:
        """Importance update, then a prune-and-grow round at round steps. True when ranks moved."""
        s = self._checked_schedule(ctx)
        if ctx.step < s.budget_end:
            self.tracker.update(adapters)
        if not is_round_step(ctx.step, s.total_steps, s.init_warmup, s.final_warmup, self.config.mask_interval):
            return False
        size = round_size(ctx.step, s.total_steps, s.init_warmup, s.final_warmup, self.config.b,
                          self.config.enable_scheduler)
        layers = list(adapters.values())
        plan = plan_round([self.tracker.scores(n, layer).cpu() for n, layer in adapters.items()],
                          [layer.rank_mask.cpu() != 0 for layer in layers],
                          [layer.capacity for layer in layers], self.config.k, size)
        if not plan.moved:
            return False
        if ctx.optimizer is None:
            raise RuntimeError("ElaLoRA grows ranks and must reset their optimizer moments: pass the optimizer "
                               "in StepContext(optimizer=...)")
        for (name, layer), slots, gained in zip(adapters.items(), plan.prune, plan.grow):
            self._prune(layer, slots)
            for _ in range(gained):
                self._grow(name, layer, ctx.optimizer)
        return True

    @torch.no_grad()
    def _prune(self, layer: AdapterLinear, slots: list[int]) -> None:
        layer.rank_mask[slots] = 0
        layer.lora_E[slots] = 0

    @torch.no_grad()
    def _grow(self, name: str, layer: AdapterLinear, optimizer: torch.optim.Optimizer) -> None:
        """Activate the lowest free slot with fresh orthogonal directions and λ = 0 (ΔW unchanged)."""
        slot = int(torch.nonzero(layer.rank_mask == 0, as_tuple=False)[0])
        active = layer.rank_mask != 0
        layer.lora_A[slot] = orthogonal_unit_vector(layer.lora_A[active], self.generator)
        layer.lora_B[:, slot] = orthogonal_unit_vector(layer.lora_B[:, active].t(), self.generator)
        layer.lora_E[slot] = 0
        layer.rank_mask[slot] = 1
        self.tracker.reset_slots(name, [slot])
        zero_slot_moments(optimizer, layer, slot)

    def shared_tensors(self, adapters: Adapters) -> list[torch.Tensor]:
        """m and λ, and A and B: a round writes fresh random directions into the grown slots."""
        return super().shared_tensors(adapters) + [t for layer in adapters.values()
                                                   for t in (layer.lora_A, layer.lora_B)]

    # -- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        generator = None if self.generator is None else self.generator.get_state()
        return {**self._schedule_state(), "seed": self.seed, "generator": generator}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._load_schedule_state(state)
        self.seed = state["seed"]
        self.generator = torch.Generator().manual_seed(self.seed)
        if state["generator"] is not None:
            self.generator.set_state(state["generator"])
