"""AdaLoRA (Zhang et al., ICLR 2023, arXiv 2303.10512; docs/methods/adalora.md).

SVD-form adapters ΔW = s · B · diag(λ) · A with λ trainable (init 0), A, B ~ N(0, 0.02), R = lora_r
slots and s = lora_alpha / lora_r constant; m ≡ 1 (ranks are removed by zeroing λ). The loss carries
γ · Σ over matrices of (‖AAᵀ − I‖_F + ‖BᵀB − I‖_F) / 2L, un-squared (the paper prints squares), the
official code's and PEFT's normalisation (:mod:`.regularizers`).

After every optimizer step (and the lr-scheduler step, before zero_grad, §7), the policy updates the
importance EMAs (paper §3.2) and, every ``mask_interval`` steps of the budgeting phase, keeps the b(t)
highest-scored ranks and sets the λ of the others to 0 in place (paper §3.3). A, B and the optimizer
state are kept, so a masked λ keeps training and the rank may revive at a later mask step. From
t = T − t_f on the pattern is final: decided at T − t_f with b(T) from the scores of steps t < T − t_f
(as PEFT and the official RankAllocator: no importance update at T − t_f itself), re-applied at every
later step. The schedule and the engine live in :mod:`.allocation`.

Budgets: b(0) = Σ initial ranks = lora_r × matrices; b(T) = ``target_total_rank`` or
``target_rank`` × matrices, with ``target_rank`` defaulting to max(1, ⌊lora_r / 2⌋) (the official
configs halve the rank, r 2 → 1); ``init_warmup``/``final_warmup`` default to 10% / 30% of T.

Where this implementation and stock PEFT (0.21, ``AdaLoraModel``/``RankAllocator``) differ, on purpose
(``tests/methods/test_adalora.py::test_parity_with_peft_adalora`` checks against PEFT, with the same
``orth_reg_weight``, that the losses, every decided pattern and the logits agree, so that without ties
point 1 changes nothing; ``tests/methods/test_allocation.py`` shows point 1 with ties):

1. **Tied scores.** PEFT masks every rank scoring ``<= kthvalue(S, b(0) − b(t))``: ties at the
   threshold are all masked (fewer than b(t) remain) and b(t) = b(0) crashes (k = 0). We keep exactly
   b(t), ties to the lower index (``select_to_keep``). Without ties both keep the same ranks.
2. **Not a departure: the step index.** PEFT's ``global_step`` is our 0-based ``StepContext.step``;
   the same mask steps (t % ΔT == 0, counted from step 0, plus the forced final mask at T − t_f),
   the same ⌊·⌋ budget formula, and importance updates only while t < T − t_f, as PEFT and the
   official RankAllocator (an earlier rankadapt also updated at t = T − t_f, which changed the final
   pattern of most runs).
3. **Scale.** PEFT multiplies by lora_alpha / (ranknum + 1e-5) with ranknum = r; we use exactly
   lora_alpha / r (the spec's constant s). The adapter output differs by the factor r / (r + 1e-5).
4. **Not a departure: regulariser normalisation.** As PEFT and the official ``compute_orth_regu``, the
   sum of norms is divided by the number of A *and* B tensors (2 × matrices), so γ equals PEFT's
   ``orth_reg_weight``. PEFT adds the term inside its forward when labels are passed; here the
   training loop adds ``policy.regularization``.
5. **``final_warmup = 0`` is rejected.** The budget reaches b(T) only at t = T − t_f; with t_f = 0 that
   is step T, which never runs, so the run would end above its target rank (PEFT's default tfinal=0
   does exactly that).
6. PEFT empties its EMAs when the pattern is frozen; we keep them (unused) for logs and checkpoints.

Several processes (docs/methods/adalora.md): the gradients are all-reduced, so every process computes the
same scores and the same pattern. After each decision :meth:`AdaLoRA.broadcast_state` checks that the
decided patterns are identical (a :class:`~rankadapt.core.errors.TrainingError` otherwise) and copies rank
0's λ and pattern to every process.

Between mask steps a masked λ trains away from 0 (as in PEFT and the official code), so
:meth:`AdaLoRA.rank_pattern` reports the decided pattern, while export keeps the slots that contribute
to ΔW; the two agree from T − t_f on, where the pattern is re-applied after every step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from ..core import distributed
from ..core.errors import ConfigError
from .allocation import Phase, budget_schedule, is_mask_step, select_to_keep
from .base import Adapters, MethodPolicy, StepContext, register_method
from .budget_plans import BudgetPlan, Shape, round_half_up, smallest_full_rank
from .importance import ImportancePolicy, ImportanceSettings


INITIAL_RANK_RATIO = 1.5
"""method.budget sets the initial rank to 1.5 x the final one: the paper's ratio (AdaLoRA §4, r 3 → 2)."""


class AdaLoRASettings(ImportanceSettings):
    """AdaLoRA's keys (docs/methods/adalora.md); ``lora_r`` is the initial rank of every matrix."""

    name: Literal["adalora"] = "adalora"
    target_rank: int | None = Field(None, gt=0)
    """Average final rank per matrix; the final budget b(T) is target_rank x number of matrices
    (default max(1, lora_r // 2), the official configs' halving)."""
    target_total_rank: int | None = Field(None, gt=0)
    """Final total rank b(T) over all matrices (overrides target_rank)."""

    @model_validator(mode="after")
    def _final_rank_within_initial(self) -> AdaLoRASettings:
        if self.target_rank and self.target_rank > self.lora_r:
            raise ValueError(f"method.target_rank={self.target_rank} exceeds the initial rank method.lora_r={self.lora_r}; "
                             "AdaLoRA only removes ranks")
        return self


@register_method
class AdaLoRA(ImportancePolicy):
    name = "adalora"
    settings = AdaLoRASettings
    report_keys = ("lora_r", "target_rank", "target_total_rank")
    glue_flags = MethodPolicy.glue_flags + ("target_rank", "target_total_rank", *ImportanceSettings.glue_keys)
    glue_selectors = ("apply_adalora",)

    @classmethod
    def plan_budget(cls, budget: int, shapes: Sequence[Shape], explicit: dict[str, int]) -> BudgetPlan:
        """Ranks are allocated per matrix, so the final total rank T is the finer knob:
        ``target_total_rank`` T = round(N / (S/M)) (N over the mean cost of one rank), and ``lora_r`` =
        ⌈1.5·T/M⌉ unless given. The achieved count lies between T·min(d_in+d_out) and T·max(d_in+d_out),
        depending on which matrices keep their ranks."""
        matrices = len(shapes)
        costs = [d_in + d_out for d_in, d_out in shapes]
        mean_cost = sum(costs) / matrices
        total = round_half_up(budget / mean_cost)
        if total < 1:
            raise ConfigError(f"method.budget={budget:,} is below one rank of an adapted matrix; the minimum for "
                              f"adalora here is {min(costs):,} (one rank of the smallest matrix)")
        lora_r = explicit.get("lora_r")
        initial = lora_r if lora_r is not None else max(1, math.ceil(INITIAL_RANK_RATIO * total / matrices))
        if initial * matrices < total:
            raise ConfigError(f"method.budget={budget:,} needs a final total rank of {total}, above the initial "
                              f"{initial} x {matrices} matrices; raise method.lora_r to at least "
                              f"{math.ceil(total / matrices)} or remove it (the budget then sets it)")
        full = smallest_full_rank(shapes)
        if initial > full:
            raise ConfigError(f"method.budget={budget:,} needs an initial rank of {initial}, above full rank ({full}) "
                              "of the smallest adapted matrix; lower the budget")
        notes = [f"the final count lies between {total * min(costs):,} and {total * max(costs):,}, depending on "
                 "which matrices keep their ranks"] if len(set(costs)) > 1 else []
        return BudgetPlan("adalora", budget, {"target_total_rank": total, "lora_r": initial},
                          round_half_up(total * mean_cost), round_half_up(mean_cost), notes)

    def __init__(self, config) -> None:
        super().__init__(config)
        self.initial_budget: int | None = None
        self.target_budget: int | None = None
        self.keep: dict[str, torch.Tensor] = {}
        """The decided pattern: per matrix, which slots keep their λ (bool, on CPU)."""

    # -- setup ------------------------------------------------------------------------------------
    def setup(self, adapters: Adapters, total_steps: int) -> None:
        """Resolve t_i, t_f and the budgets b(0), b(T) for T = ``total_steps``; validate them."""
        super().setup(adapters, total_steps)
        if self.schedule.final_warmup < 1:
            raise ConfigError("method.final_warmup=0 leaves no step at which AdaLoRA reaches its final rank "
                              "budget; set method.final_warmup to at least 1 (default: 30% of the steps)")
        self.initial_budget = sum(layer.capacity for layer in adapters.values())
        self.target_budget = self._target_budget(len(adapters))
        for name, layer in adapters.items():
            self.keep.setdefault(name, torch.ones(layer.capacity, dtype=torch.bool))

    def _target_budget(self, matrices: int) -> int:
        cfg = self.config
        if cfg.target_total_rank is not None:
            target, key = cfg.target_total_rank, f"method.target_total_rank={cfg.target_total_rank}"
        else:
            per_matrix = cfg.target_rank if cfg.target_rank is not None else max(1, cfg.lora_r // 2)
            target, key = per_matrix * matrices, f"method.target_rank={per_matrix} x {matrices} matrices"
        if target > self.initial_budget:
            raise ConfigError(f"{key} = {target} exceeds the initial total rank {self.initial_budget} "
                              f"(lora_r={cfg.lora_r} x {matrices} matrices); AdaLoRA only removes ranks, lower it")
        return target

    # -- the step ---------------------------------------------------------------------------------
    def after_scheduler_step(self, adapters: Adapters, ctx: StepContext) -> bool:
        """Importance update (while t < T − t_f, as PEFT), then masking. True when the decided pattern changed."""
        s = self._checked_schedule(ctx)
        if ctx.step < s.budget_end:
            self.tracker.update(adapters)
        budget, phase = budget_schedule(ctx.step, s.total_steps, s.init_warmup, s.final_warmup,
                                        self.initial_budget, self.target_budget)
        if phase is Phase.FINAL:
            self._apply(adapters)  # the frozen pattern, every step: masked λ would otherwise train back
            return False
        if not is_mask_step(ctx.step, s.total_steps, s.init_warmup, s.final_warmup, self.config.mask_interval):
            return False
        changed = self._decide(adapters, budget)
        self._apply(adapters)
        return changed

    def _decide(self, adapters: Adapters, budget: int) -> bool:
        """Keep the ``budget`` best ranks over all matrices."""
        scores = torch.cat([self.tracker.scores(name, layer).cpu() for name, layer in adapters.items()])
        keep = select_to_keep(scores, budget).split([layer.capacity for layer in adapters.values()])
        changed = any(not torch.equal(self.keep[name], k) for name, k in zip(adapters, keep))
        self.keep.update(zip(adapters, keep))
        return changed

    @torch.no_grad()
    def _apply(self, adapters: Adapters) -> None:
        """λ ← 0 outside the decided pattern, in place (the Parameter and its optimizer state stay)."""
        for name, layer in adapters.items():
            layer.lora_E.masked_fill_(~self.keep[name].to(layer.lora_E.device), 0.0)

    # -- reporting and state ----------------------------------------------------------------------
    def rank_pattern(self, adapters: Adapters) -> dict[str, int]:
        """The decided rank per matrix (lora_r everywhere before the first mask step)."""
        return {name: int(self.keep[name].sum()) if name in self.keep else layer.capacity
                for name, layer in adapters.items()}

    def state_dict(self) -> dict[str, Any]:
        return {**self._schedule_state(), "keep": {n: k.clone() for n, k in self.keep.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._load_schedule_state(state)
        self.keep = {n: k.clone().bool().cpu() for n, k in state["keep"].items()}

    def decision_tensors(self, adapters: Adapters) -> list[torch.Tensor]:
        """The decided pattern (``keep``) of every matrix, besides the zeroed λ and the masks."""
        return [self.keep[name] for name in adapters if name in self.keep] + super().decision_tensors(adapters)

    def broadcast_state(self, adapters: Adapters) -> None:
        """Check the decision, then rank 0's λ and decided pattern everywhere, so the pattern
        re-applied at every step of the final phase cannot drift."""
        super().broadcast_state(adapters)
        if not distributed.is_distributed():
            return
        for name, layer in adapters.items():
            flags = self.keep[name].to(layer.lora_E.device, torch.float32)
            distributed.broadcast_([flags])
            self.keep[name] = flags.bool().cpu()
