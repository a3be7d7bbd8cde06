"""RM-LoRA: regularized and masked LoRA (Mao et al., arXiv 2407.12074; docs/methods/rmlora.md).

A LoRA adapter (R = r, g ≡ 1, m ≡ 1, s = lora_alpha / lora_r) with A ~ N(0, 0.02) and B = 0, trained
with two additions:

- the orthogonal regulariser γ · Σ over matrices of (‖AAᵀ − I‖_F + ‖BᵀB − I‖_F) / 2L, γ =
  ``reg_orth_coef`` (:func:`~rankadapt.methods.regularizers.orthogonal_penalty`: un-squared norms and
  the 2L normalisation of AdaLoRA's and PEFT's code);
- random gradient masking: at every optimizer step, before ``optimizer.step()``, only ``random_rank``
  randomly chosen rank directions of each adapter keep their gradient. For drawn index sets I_A, I_B,

      ∂L/∂A[i, :] ← 0 for i ∉ I_A,      ∂L/∂B[:, j] ← 0 for j ∉ I_B,

  with I_A = I_B (``lora_type: v1``) or two independent draws (``v2``). Each adapter gets its own
  draw, every step a fresh one; the draws are uniform without replacement (:func:`draw_rank_indices`).

Choices and departures from the official code:

- **Only A and B are masked.** The official code also zeroes the classifier's gradient, by accident
  (docs/methods/rmlora.md); here the freshly initialised head always trains, as with every other method.
- **A dedicated, seeded generator.** Indices come from a CPU ``torch.Generator`` seeded from the run
  seed (``policy.seed``, set by the trainer before :meth:`RMLoRA.setup`; default 0), not from the
  global RNG: drawing them does not perturb dropout or data order, every process under DDP draws the
  same indices (same seed, the same draws at every optimizer step, a CPU generator whatever the
  device), and the generator's state is saved in :meth:`RMLoRA.state_dict`, so a resumed run
  continues the same sequence. On resume the checkpoint's seed and state win over ``policy.seed``.
  Under DDP every step checks that all processes drew the same indices (one all-reduce of a digest,
  :func:`rankadapt.core.distributed.assert_identical`) and stops with a ``TrainingError`` if not: masking
  different rows on different processes would make the replicas drift apart silently.
- **Masking the gradient is not freezing.** The mask acts on gradients (docs/methods/rmlora.md), so under
  AdamW a masked row still moves by its first-moment momentum and by weight decay; only its fresh
  gradient is dropped. The mask comes before gradient clipping (§7), so the clipping norm is that of
  the gradient actually applied.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from ..core import distributed
from ..core.layer import AdapterLinear
from .base import Adapters, MethodPolicy, StepContext, register_method
from .budget_plans import BudgetPlan, Shape, uniform_plan
from .regularizers import orthogonal_regularization
from .settings import AdapterSettings


def draw_rank_indices(generator: torch.Generator, capacity: int, k: int) -> torch.Tensor:
    """k distinct slots out of ``capacity``, uniformly without replacement, sorted (int64, CPU)."""
    if not 0 < k <= capacity:
        raise ValueError(f"cannot draw {k} of {capacity} rank directions; need 0 < random_rank <= lora_r")
    return torch.randperm(capacity, generator=generator)[:k].sort().values


def keep_rank_gradients(layer: AdapterLinear, rows: torch.Tensor, cols: torch.Tensor) -> None:
    """Zero ∂L/∂A outside the rows ``rows`` and ∂L/∂B outside the columns ``cols``, in place."""
    A, B = layer.lora_A, layer.lora_B
    if A.grad is not None:
        A.grad.mul_(_slot_mask(rows, layer.capacity, A.grad)[:, None])
    if B.grad is not None:
        B.grad.mul_(_slot_mask(cols, layer.capacity, B.grad)[None, :])


def _slot_mask(indices: torch.Tensor, capacity: int, like: torch.Tensor) -> torch.Tensor:
    """A 0/1 vector over the R slots, ones at ``indices``, in ``like``'s dtype and device."""
    mask = torch.zeros(capacity, dtype=like.dtype, device=like.device)
    mask[indices.to(like.device)] = 1
    return mask


class RMLoRASettings(AdapterSettings):
    """RM-LoRA's keys (docs/methods/rmlora.md)."""

    name: Literal["rmlora"] = "rmlora"
    random_rank: int = Field(2, gt=0)
    """Rank directions of each adapter that receive gradient at a step."""
    lora_type: Literal["v1", "v2"] = "v1"
    """v1: same random indices for A's rows and B's columns; v2: independent ones."""
    reg_orth_coef: float = Field(0.1, ge=0.0)
    """gamma, weight of the orthogonal regulariser: gamma times the sum of the A and B terms over 2 x
    matrices, as the official code and PEFT's orth_reg_weight."""

    @model_validator(mode="after")
    def _draws_fit_the_rank(self) -> RMLoRASettings:
        if self.random_rank > self.lora_r:
            raise ValueError(f"method.random_rank={self.random_rank} exceeds method.lora_r={self.lora_r}; lower random_rank")
        return self


@register_method
class RMLoRA(MethodPolicy):
    """LoRA with the orthogonal regulariser and random per-step gradient masks on A and B."""

    name = "rmlora"
    settings = RMLoRASettings
    report_keys = ("lora_r", "random_rank", "lora_type")
    glue_flags = MethodPolicy.glue_flags + ("random_rank", "reg_orth_coef")

    @classmethod
    def selected_by_glue(cls, given: dict[str, Any], flags: dict[str, bool | None]) -> bool:
        """The official RM-LoRA script is selected by its masking flags: ``--random_rank`` or
        ``--lora_type v1|v2``."""
        return "random_rank" in given or given.get("lora_type") in ("v1", "v2")

    @classmethod
    def plan_budget(cls, budget: int, shapes: Sequence[Shape], explicit: dict[str, int]) -> BudgetPlan:
        """A uniform rank, as LoRA's; random_rank follows a rank below its default 2."""
        plan = uniform_plan(cls.name, budget, shapes)
        rank = plan.settings["lora_r"]
        if "random_rank" not in explicit and rank < 2:
            plan.settings["random_rank"] = rank  # the default random_rank (2) may not exceed the rank
        return plan

    def __init__(self, config) -> None:
        super().__init__(config)
        self.seed: int = 0
        """Seed of the index generator; the trainer sets the run seed here before ``setup``."""
        self.generator: torch.Generator | None = None

    def init_adapter(self, layer: AdapterLinear) -> None:
        """A ~ N(0, 0.02), B = 0 (docs/methods/rmlora.md), so ΔW = 0 at step 0."""
        with torch.no_grad():
            torch.nn.init.normal_(layer.lora_A, mean=0.0, std=0.02)
            torch.nn.init.zeros_(layer.lora_B)

    def regularization(self, adapters: Adapters) -> torch.Tensor | None:
        """γ · Σ over matrices of (‖AAᵀ − I‖_F + ‖BᵀB − I‖_F) / 2L, or None when γ = 0."""
        return orthogonal_regularization(adapters, self.config.reg_orth_coef)

    def setup(self, adapters: Adapters, total_steps: int) -> None:
        super().setup(adapters, total_steps)
        self.generator = torch.Generator().manual_seed(self.seed)

    def before_optimizer_step(self, adapters: Adapters, ctx: StepContext) -> None:
        """Keep the gradients of ``random_rank`` random rank directions per adapter, zero the rest."""
        if self.generator is None:
            raise RuntimeError("RMLoRA.setup(adapters, total_steps) must be called before training")
        k = self.config.random_rank
        drawn = []
        for layer in adapters.values():
            rows = draw_rank_indices(self.generator, layer.capacity, k)
            cols = rows if self.config.lora_type == "v1" else draw_rank_indices(self.generator, layer.capacity, k)
            keep_rank_gradients(layer, rows, cols)
            drawn += [rows, cols]
        if drawn:
            distributed.assert_identical(f"RM-LoRA's random rank indices at optimizer step {ctx.step}", drawn,
                                         next(iter(adapters.values())).lora_A.device,
                                         hint="every process must start from the same train.seed")

    # -- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "generator": None if self.generator is None else self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seed = state["seed"]
        self.generator = None
        if state["generator"] is not None:
            self.generator = torch.Generator()
            self.generator.set_state(state["generator"])
