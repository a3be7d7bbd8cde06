"""A method defined outside the rankadapt package, as a user would write one: LoRA with an L2 penalty on
its factors ("l2lora"). One module and one registration (CONTRIBUTING.md): its settings with docstrings
and a check, its policy (init, loss term, saved state), its report keys and its run-glue flag; the budget
plan is LoRA's uniform rank, inherited."""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from rankadapt.methods import AdapterSettings, MethodPolicy, register_method


class L2LoRASettings(AdapterSettings):
    """The keys of l2lora: LoRA's, plus the penalty and the init scale."""

    name: Literal["l2lora"] = "l2lora"
    l2_weight: float = Field(1e-3, ge=0.0)
    """λ: weight of the penalty λ · Σ (‖A‖² + ‖B‖²) over the adapted matrices."""
    init_std: float = Field(0.02, gt=0.0)
    """Standard deviation of A's normal init (B starts at 0, so ΔW = 0 at step 0)."""

    @model_validator(mode="after")
    def _init_below_one(self) -> L2LoRASettings:
        if self.init_std >= 1.0:
            raise ValueError(f"method.init_std={self.init_std} would start A far from small; use a value below 1")
        return self


@register_method
class L2LoRA(MethodPolicy):
    name = "l2lora"
    settings = L2LoRASettings
    report_keys = ("lora_r", "l2_weight")
    glue_selectors = ("apply_l2lora",)

    def __init__(self, config: L2LoRASettings) -> None:
        super().__init__(config)
        self.steps_taken = 0
        """Optimizer steps seen: state that a resumed run must continue from."""

    def init_adapter(self, layer) -> None:
        with torch.no_grad():
            torch.nn.init.normal_(layer.lora_A, std=self.config.init_std)
            torch.nn.init.zeros_(layer.lora_B)

    def regularization(self, adapters) -> torch.Tensor | None:
        if not adapters or self.config.l2_weight == 0:
            return None
        return self.config.l2_weight * sum(layer.lora_A.square().sum() + layer.lora_B.square().sum()
                                           for layer in adapters.values())

    def after_optimizer_step(self, adapters, ctx) -> None:
        self.steps_taken += 1

    def state_dict(self) -> dict[str, Any]:
        return {"steps_taken": self.steps_taken}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps_taken = state["steps_taken"]
