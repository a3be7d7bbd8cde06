"""SoRA: sparse low-rank adaptation (Ding et al., EMNLP 2023, arXiv 2311.11696; docs/methods/sora.md).

A LoRA adapter with a trainable gate g (R = r) between the down- and the up-projection,

    ΔW = s · B · diag(g) · A,        s = lora_alpha / lora_r  (constant),

trained by proximal gradient descent on an L1 penalty of the gate (paper §3, eqs. 3–4): after each
optimizer step,

    g ← prox_{τ ‖·‖₁}(g) = sign(g) · max(|g| − τ, 0),

    τ = ξ      (``prox_threshold: xi``, the default: the official SparseAdamW), or
    τ = η · ξ  (``prox_threshold: lr_xi``: the paper's update, η the learning rate just used),

with ξ = ``sparse_lambda_2``. The official ξ = 0.005 therefore means 0.005 per step, as in the official
code; under the η·ξ reading the same number is 1/η times weaker (2,000 times at η = 5e-4). To move an
η·ξ setting to the default, use ξ·η_peak (the same threshold at the peak learning rate).

A rank whose gate is exactly 0 contributes nothing to ΔW: it is pruned, counted as removed by
:meth:`SoRA.rank_pattern` and dropped on export (the layer's ``export_factors`` keeps only slots with
g ≠ 0). Optionally, ``sparse_lambda`` adds λ · Σ|g| / N to the loss, N the number of gate entries over
all matrices, as the official trainer's ``compute_loss`` (a subgradient term; default 0).

Choices and departures from the official code (TsinghuaC3I/SoRA, ``SparseAdamW``):

- **The real proximal operator.** The official optimizer applies three in-place updates after the
  Adam step: ``p[p > λ] -= λ; p[p < −λ] += λ; p[|p| < λ] = 0``. The third line runs on the values
  the first two have already shrunk, so a gate with ξ < |g| < 2ξ is first shrunk into (0, ξ) and then
  zeroed: it is pruned where the soft-threshold would keep sign(g)(|g| − ξ). :func:`soft_threshold`
  applies sign(g)·max(|g| − τ, 0) in one pass: the official threshold, without the defect.
- **Gate init.** ``gate_init: normal`` (the default) draws g ~ N(0, 1) as the official code does, so
  that runs reproduce the published setting; ``ones`` opens every rank fully (s·g = s, LoRA's
  scale) so that no rank starts near the threshold by chance. With B = 0 both give ΔW = 0 at step 0.
- **Pruning is a state, not an event.** Once a gate is exactly 0 its own gradient is generally
  non-zero (∂L/∂g_i = s·Σ_n (x_n Aᵀ)_i (δ_n B)_i carries no factor g_i), so Adam may move it away at
  the next step; the proximal step re-zeroes it whenever |g| ≤ τ after that step. This is the
  behaviour of proximal gradient descent itself: a rank stays pruned while the optimizer's step on
  its gate stays within τ (for Adam, whose step is about η·|m̂/√v̂|, while η·|m̂/√v̂| ≤ τ).
  A and B are kept, so a revived rank resumes where it was.
- **Rank-change reports.** The pattern may change at any step, so :meth:`SoRA.before_optimizer_step`
  records it and :meth:`SoRA.after_scheduler_step` reports whether it changed, for the trainer's
  rank log and, under DDP, for :meth:`~rankadapt.methods.base.MethodPolicy.broadcast_state`: every
  process checks that all pruned the same gates, then takes rank 0's gates.
- **No weight decay on g** (the trainer exempts ``lora_E``): decay would be a second shrinkage
  mechanism beside the proximal step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from pydantic import Field

from ..core.layer import AdapterLinear
from .base import Adapters, MethodPolicy, StepContext, register_method
from .budget_plans import BudgetPlan, Shape, uniform_plan
from .settings import AdapterSettings


def soft_threshold(g: torch.Tensor, threshold: float) -> torch.Tensor:
    """The proximal operator of τ‖·‖₁: sign(g) · max(|g| − τ, 0), elementwise, as a new tensor.

    Entries with |g| ≤ τ become exactly 0; the others move τ towards 0 and keep their sign.
    """
    if threshold < 0:
        raise ValueError(f"the soft-threshold must be non-negative, got {threshold}")
    return torch.sign(g) * torch.clamp(g.abs() - threshold, min=0.0)


def gate_l1(adapters: Adapters) -> torch.Tensor:
    """Σ |g| / N over the N gate entries of every adapted matrix: the mean |g| (paper eq. 3's ‖g‖₁,
    divided by N as the official trainer does, so λ does not grow with the number of matrices)."""
    gates = torch.cat([layer.lora_E.reshape(-1) for layer in adapters.values()])
    return gates.abs().sum() / gates.numel()


class SoRASettings(AdapterSettings):
    """SoRA's keys (docs/methods/sora.md); ``lora_r`` is the rank every gate starts from."""

    name: Literal["sora"] = "sora"
    sparse_lambda: float = Field(0.0, ge=0.0)
    """Weight of an optional L1 term on the gates in the loss: sparse_lambda x mean |g| over every gate
    entry (the official code's sum divided by the number of gate entries)."""
    sparse_lambda_2: float = Field(1e-3, ge=0.0)
    """xi, the proximal threshold: g <- sign(g) max(|g| - tau, 0) after every optimizer step, with
    tau = xi (``prox_threshold: xi``, the official code) or lr x xi (``lr_xi``, the paper's reading)."""
    prox_threshold: Literal["xi", "lr_xi"] = "xi"
    """SoRA's per-step threshold tau: xi itself, as the official SparseAdamW (default), or the current
    learning rate times xi, as the paper's proximal-gradient update writes it."""
    gate_init: Literal["normal", "ones"] = "normal"
    """The gates' start: N(0, 1) draws as the official code (normal), or all ones (LoRA's scale)."""


@register_method
class SoRA(MethodPolicy):
    """LoRA with a trainable gate g, sparsified by a proximal step after every optimizer step."""

    name = "sora"
    settings = SoRASettings
    report_keys = ("lora_r", "sparse_lambda_2")
    glue_flags = MethodPolicy.glue_flags + ("sparse_lambda", "sparse_lambda_2")
    glue_selectors = ("train_sparse",)
    gate_trainable = True
    rank_adaptive = True

    @classmethod
    def plan_budget(cls, budget: int, shapes: Sequence[Shape], explicit: dict[str, int]) -> BudgetPlan:
        """A uniform starting rank, as LoRA's; the proximal step prunes gates, so N is an upper bound."""
        plan = uniform_plan(cls.name, budget, shapes)
        plan.notes.append("SoRA prunes gates during training, so this is the starting count and an upper bound")
        return plan

    def __init__(self, config) -> None:
        super().__init__(config)
        self._pattern_before: dict[str, int] | None = None

    def init_adapter(self, layer: AdapterLinear) -> None:
        """LoRA's A (Kaiming-uniform) and B = 0, then the gate per ``gate_init``."""
        super().init_adapter(layer)
        with torch.no_grad():
            if self.config.gate_init == "normal":
                torch.nn.init.normal_(layer.lora_E, mean=0.0, std=1.0)
            else:
                torch.nn.init.ones_(layer.lora_E)

    def regularization(self, adapters: Adapters) -> torch.Tensor | None:
        """``sparse_lambda`` · Σ|g| / N, or None when the optional L1 term is off."""
        if not adapters or self.config.sparse_lambda == 0:
            return None
        return self.config.sparse_lambda * gate_l1(adapters)

    def before_optimizer_step(self, adapters: Adapters, ctx: StepContext) -> None:
        self._pattern_before = self.rank_pattern(adapters)

    @torch.no_grad()
    def after_optimizer_step(self, adapters: Adapters, ctx: StepContext) -> None:
        """g ← sign(g) · max(|g| − τ, 0), τ = :meth:`threshold` at this step."""
        threshold = self.threshold(ctx.lr)
        for layer in adapters.values():
            layer.lora_E.copy_(soft_threshold(layer.lora_E, threshold))

    def threshold(self, lr: float) -> float:
        """τ: ξ (official, ``prox_threshold: xi``) or η·ξ with η = ``lr``, the lr just used (paper)."""
        xi = self.config.sparse_lambda_2
        return xi if self.config.prox_threshold == "xi" else lr * xi

    def after_scheduler_step(self, adapters: Adapters, ctx: StepContext) -> bool:
        """True when this step's optimizer and proximal updates changed the rank pattern."""
        before, self._pattern_before = self._pattern_before, None
        return before is not None and before != self.rank_pattern(adapters)

    def rank_pattern(self, adapters: Adapters) -> dict[str, int]:
        """Ranks with m ≠ 0 and g ≠ 0 per matrix: a zero gate is a pruned rank."""
        return {name: layer.active_rank() for name, layer in adapters.items()}
