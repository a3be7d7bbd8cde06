"""The policy interface: how a method drives the shared adapter layer.

A method is a small object with
- construction rules: capacity R, scale s, whether the gate g trains, and an init rule (``init_adapter``);
- an optional regularisation term added to the loss (``regularization``);
- hooks at fixed places of the optimizer step (docs/methods/README.md), called by the training loop in
  this order at every accumulation boundary::

      loss = task loss + policy.regularization(...)      # γ·orthogonal term, SoRA's L1
      loss.backward()
      policy.before_optimizer_step(...)                  # RM-LoRA gradient masks
      clip gradients; optimizer.step()
      policy.after_optimizer_step(...)                   # SoRA proximal step (uses the current lr)
      lr_scheduler.step()
      policy.after_scheduler_step(...)                   # AdaLoRA/ElaLoRA importance + rank decisions
      optimizer.zero_grad(); step += 1

- its own saved state (``state_dict``/``load_state_dict``), stored in the training checkpoint so
  that a resumed run makes the same rank decisions as an uninterrupted one;
- under DDP, ``broadcast_state`` after a rank decision: the trainer calls it on every process when
  ``after_scheduler_step`` returned True. It checks that every process decided the same
  (``decision_tensors``), then copies rank 0's ``shared_tensors`` everywhere (docs/methods/README.md).

Adding a method is one file with a subclass and ``@register_method``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..core import distributed
from ..core.config import MethodConfig
from ..core.errors import ConfigError
from ..core.layer import AdapterLinear

Adapters = dict[str, AdapterLinear]
"""Adapted layers by full module name, in model order."""


@dataclass
class StepContext:
    """What a hook knows about the optimizer step it is called at.

    ``step`` is t, the 0-based index of the optimizer step being taken (the number of optimizer
    steps completed before it), as the official AdaLoRA code and PEFT's ``update_and_allocate``
    count it. ``total_steps`` is T. ``lr`` is the learning rate the optimizer just used.
    """

    step: int
    total_steps: int
    lr: float
    optimizer: torch.optim.Optimizer | None = None


class MethodPolicy:
    """Base policy: plain LoRA behaviour, no regulariser, no-op hooks, no state."""

    name: ClassVar[str] = ""
    injects_adapters: ClassVar[bool] = True
    """False for the baselines that train (part of) the model itself."""
    trains_base: ClassVar[bool] = False
    trains_head: ClassVar[bool] = True
    gate_trainable: ClassVar[bool] = False
    rank_adaptive: ClassVar[bool] = False
    """True when the rank pattern changes during training (reported and logged)."""

    def __init__(self, config: MethodConfig) -> None:
        self.config = config
        self.total_steps: int | None = None

    # -- construction -----------------------------------------------------------------------------
    def capacity(self) -> int:
        """R, the slots allocated per matrix."""
        return self.config.lora_r

    def scale(self) -> float:
        """s = lora_alpha / lora_r, constant for the run (it does not follow the current rank)."""
        return self.config.lora_alpha / self.config.lora_r

    def init_adapter(self, layer: AdapterLinear) -> None:
        """LoRA's init (Hu et al. 2021, §4.1): A Kaiming-uniform (a = √5), B = 0, so ΔW = 0."""
        with torch.no_grad():
            nn.init.kaiming_uniform_(layer.lora_A, a=math.sqrt(5))
            nn.init.zeros_(layer.lora_B)

    # -- training ---------------------------------------------------------------------------------
    def setup(self, adapters: Adapters, total_steps: int) -> None:
        """Called once by the trainer when T is known, before the first step. Validate schedules here."""
        if total_steps <= 0:
            raise ConfigError(f"training has {total_steps} optimizer steps; raise train.epochs or train.max_steps")
        self.total_steps = total_steps

    def regularization(self, adapters: Adapters) -> torch.Tensor | None:
        return None

    def before_optimizer_step(self, adapters: Adapters, ctx: StepContext) -> None:
        return None

    def after_optimizer_step(self, adapters: Adapters, ctx: StepContext) -> None:
        return None

    def after_scheduler_step(self, adapters: Adapters, ctx: StepContext) -> bool:
        """Rank decisions. Returns True when the rank pattern changed at this step."""
        return False

    def rank_pattern(self, adapters: Adapters) -> dict[str, int]:
        """The rank each matrix is allocated now (what is reported and logged).

        Default: the slots switched on in the mask m. Policies whose rank decisions live in the gate
        (AdaLoRA's zeroed λ, SoRA's zero gates) override this. Export does not use it: it keeps the
        slots that contribute to ΔW (m ≠ 0 and g ≠ 0), which is what gives identical logits.
        """
        return {name: int(layer.rank_mask.count_nonzero()) for name, layer in adapters.items()}

    # -- state ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} keeps no state but the checkpoint holds {sorted(state)}")

    # -- several processes -------------------------------------------------------------------------
    def decision_tensors(self, adapters: Adapters) -> list[torch.Tensor]:
        """What a rank decision is, as tensors every process must agree on bit for bit.

        Default: per matrix, the active slots (m ≠ 0) and the pruned gates (g = 0). The gate values
        themselves are not compared: they are floats that rank 0's broadcast overwrites anyway.
        """
        return [t for layer in adapters.values() for t in (layer.rank_mask != 0, layer.lora_E == 0)]

    def shared_tensors(self, adapters: Adapters) -> list[torch.Tensor]:
        """The tensors a rank decision writes, overwritten with rank 0's after a decision: m and g."""
        return [t for layer in adapters.values() for t in (layer.rank_mask, layer.lora_E)]

    def broadcast_state(self, adapters: Adapters) -> None:
        """Make a rank decision identical on every process: check that all decided the same (raising
        :class:`~rankadapt.core.errors.TrainingError` if not), then rank 0's tensors win. Under DDP the
        gradients are all-reduced, so the processes should agree; the broadcast keeps float-level
        drift from ever accumulating. A collective: every process calls it. No-op single-process."""
        if not distributed.is_distributed() or not adapters:
            return
        device = next(iter(adapters.values())).lora_A.device
        distributed.assert_identical(f"the {self.name} rank decisions", self.decision_tensors(adapters), device,
                                     hint="the processes computed different importance scores or gates; check "
                                          "that every process runs the same versions on the same data")
        distributed.broadcast_(self.shared_tensors(adapters))


_REGISTRY: dict[str, type[MethodPolicy]] = {}


def register_method(cls: type[MethodPolicy]) -> type[MethodPolicy]:
    """Class decorator: make ``method.name: <cls.name>`` build this policy."""
    if not cls.name:
        raise TypeError(f"{cls.__name__} needs a name")
    _REGISTRY[cls.name] = cls
    return cls


def build_policy(config: MethodConfig) -> MethodPolicy:
    if config.name not in _REGISTRY:
        raise ConfigError(f"unknown method {config.name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[config.name](config)


def available_methods() -> list[str]:
    return sorted(_REGISTRY)
