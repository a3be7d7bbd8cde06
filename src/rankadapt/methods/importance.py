"""What AdaLoRA and ElaLoRA share: settings (warmups, EMA factors, γ) and a policy base class with the
SVD-form init, the orthogonal regulariser, the importance tracker and the warmup schedule
(docs/methods/adalora.md, docs/methods/elalora.md). The rank dynamics themselves are pure functions in
:mod:`.allocation`.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, ClassVar

import torch
from pydantic import Field

from ..core.errors import TrainingError
from ..core.layer import AdapterLinear
from .allocation import ImportanceTracker, Schedule, resolve_schedule
from .base import Adapters, MethodPolicy, StepContext
from .regularizers import orthogonal_regularization
from .settings import AdapterSettings


class ImportanceSettings(AdapterSettings):
    """Keys of the importance-scored methods (AdaLoRA, ElaLoRA)."""

    glue_keys: ClassVar[tuple[str, ...]] = ("init_warmup", "final_warmup", "mask_interval", "beta1", "beta2",
                                            "reg_orth_coef")
    """These keys are also flags of the official AdaLoRA and ElaLoRA run_glue.py scripts."""

    init_warmup: int | None = Field(None, ge=0)
    """t_i: optimizer steps before any rank change (default 10% of the total steps)."""
    final_warmup: int | None = Field(None, ge=0)
    """t_f: last optimizer steps with the rank pattern frozen (default 30% of the total steps)."""
    mask_interval: int = Field(10, gt=0)
    """ΔT: steps between two budget/masking (AdaLoRA) or prune-and-grow (ElaLoRA) decisions."""
    beta1: float = Field(0.85, gt=0.0, lt=1.0)
    """β1: EMA factor of the sensitivity Ī = β1 Ī + (1 − β1) I (AdaLoRA paper eq. 9)."""
    beta2: float = Field(0.85, gt=0.0, lt=1.0)
    """β2: EMA factor of the uncertainty Ū = β2 Ū + (1 − β2) |I − Ī| (AdaLoRA paper eq. 10)."""
    reg_orth_coef: float = Field(0.1, ge=0.0)
    """gamma, weight of the orthogonal regulariser: gamma times the sum of the A and B terms over 2 x
    matrices, as the official code and PEFT's orth_reg_weight."""



def init_svd_factors(layer: AdapterLinear) -> None:
    """AdaLoRA's init (paper §3.1 and PEFT): A, B ~ N(0, 0.02), λ = 0, so ΔW = 0 at step 0."""
    with torch.no_grad():
        torch.nn.init.normal_(layer.lora_A, mean=0.0, std=0.02)
        torch.nn.init.normal_(layer.lora_B, mean=0.0, std=0.02)
        torch.nn.init.zeros_(layer.lora_E)


class ImportancePolicy(MethodPolicy):
    """SVD-form adapters (trainable λ, s = lora_alpha / lora_r constant), the orthogonal regulariser
    γ·R(A, B), importance EMAs and the warmup schedule; subclasses decide what the scores do."""

    gate_trainable = True
    rank_adaptive = True

    def __init__(self, config) -> None:
        super().__init__(config)
        self.tracker = ImportanceTracker(config.beta1, config.beta2)
        self.schedule: Schedule | None = None

    def init_adapter(self, layer: AdapterLinear) -> None:
        init_svd_factors(layer)

    def regularization(self, adapters: Adapters) -> torch.Tensor | None:
        """γ · mean over matrices of (‖AAᵀ − I‖_F + ‖BᵀB − I‖_F), un-squared (see ``orthogonal_penalty``)."""
        return orthogonal_regularization(adapters, self.config.reg_orth_coef)

    def setup(self, adapters: Adapters, total_steps: int) -> None:
        super().setup(adapters, total_steps)
        self._adopt_schedule(resolve_schedule(self.config.init_warmup, self.config.final_warmup, total_steps))

    def _adopt_schedule(self, schedule: Schedule) -> None:
        """Take a schedule from ``setup`` or a checkpoint; the second one must agree with the first."""
        if self.schedule is not None and self.schedule != schedule:
            raise TrainingError(f"this run's rank schedule and the checkpoint's differ ({asdict(self.schedule)} vs "
                                f"{asdict(schedule)}); resume with the run's own config (same epochs, max_steps, "
                                "batch size, grad_accum and warmups)")
        self.schedule = schedule

    def _checked_schedule(self, ctx: StepContext) -> Schedule:
        if self.schedule is None:
            raise RuntimeError(f"{type(self).__name__}.setup(adapters, total_steps) must be called before training")
        if ctx.total_steps != self.schedule.total_steps:
            raise RuntimeError(f"the step context says T={ctx.total_steps}, "
                               f"setup was given T={self.schedule.total_steps}")
        return self.schedule

    def _schedule_state(self) -> dict[str, Any]:
        return {"schedule": None if self.schedule is None else asdict(self.schedule),
                "importance": self.tracker.state_dict()}

    def _load_schedule_state(self, state: dict[str, Any]) -> None:
        if state["schedule"] is not None:
            self._adopt_schedule(Schedule(**state["schedule"]))
        self.tracker.load_state_dict(state["importance"])
