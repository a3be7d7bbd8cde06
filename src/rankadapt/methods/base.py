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

Adding a method is one file: its settings (a subclass of
:class:`~rankadapt.methods.settings.AdapterSettings` with the method's own keys, docstrings and checks),
a policy subclass whose ``settings`` names it, and ``@register_method``. The policy also says how
``method.budget`` maps onto its rank settings (:meth:`MethodPolicy.plan_budget`), which settings the
report shows (``report_keys``) and which official ``run_glue.py`` flags select it (``glue_selectors``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..core import distributed
from ..core.config import MethodSettings, register_method_settings
from ..core.errors import ConfigError
from ..core.layer import AdapterLinear
from .budget_plans import BudgetPlan, Shape, uniform_plan

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
    settings: ClassVar[type[MethodSettings]]
    """The method's settings model: what ``method:`` holds when ``method.name`` is this method."""
    injects_adapters: ClassVar[bool] = True
    """False for the baselines that train (part of) the model itself."""
    trains_base: ClassVar[bool] = False
    trains_head: ClassVar[bool] = True
    gate_trainable: ClassVar[bool] = False
    rank_adaptive: ClassVar[bool] = False
    """True when the rank pattern changes during training (reported and logged)."""
    report_keys: ClassVar[tuple[str, ...]] = ("lora_r",)
    """Settings the report's settings table shows for this method (lora_alpha and budget follow)."""
    glue_flags: ClassVar[tuple[str, ...]] = ("lora_r", "lora_alpha", "lora_dropout")
    """Settings the official run_glue.py scripts pass as ``--<key> value`` for this method."""
    glue_selectors: ClassVar[tuple[str, ...]] = ()
    """Boolean flags of the official run_glue.py scripts that select this method (``apply_adalora``)."""
    glue_fallback: ClassVar[bool] = False
    """Selected by its flags only when no other method's flags are given (plain LoRA: ``--apply_lora``
    also appears in the official AdaLoRA and ElaLoRA commands)."""
    glue_ignored: ClassVar[dict[str, str]] = {}
    """run_glue.py value flags the official script of this method accepts and ignores: flag -> why."""

    def __init__(self, config: MethodSettings) -> None:
        self.config = config
        self.total_steps: int | None = None

    # -- settings a run derives from others ----------------------------------------------------------
    @classmethod
    def plan_budget(cls, budget: int, shapes: Sequence[Shape], explicit: dict[str, int]) -> BudgetPlan:
        """The rank settings that make this method end with about ``budget`` adapter parameters on
        matrices of ``shapes`` ((d_in, d_out) each). ``explicit`` holds the rank keys the user set.
        Default: a uniform ``lora_r`` (docs/methods/README.md, budget matching); methods without
        adapters have no budget."""
        if not cls.injects_adapters:
            adapters = ", ".join(n for n, c in _REGISTRY.items() if c.injects_adapters)
            raise ConfigError(f"method.budget applies to adapter methods ({adapters}), not {cls.name}; remove method.budget")
        return uniform_plan(cls.name, budget, shapes)

    @classmethod
    def selected_by_glue(cls, given: dict[str, Any], flags: dict[str, bool | None]) -> bool:
        """Whether an official run_glue.py command line (value flags ``given``, booleans ``flags``) asks
        for this method."""
        return any(flags.get(flag) or (flag not in flags and given.get(flag)) for flag in cls.glue_selectors)

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
    """Class decorator: make ``method.name: <cls.name>`` validate with ``cls.settings`` and build this
    policy. Works from outside the package too (a plug-in module imported before the config is read)."""
    if not cls.name:
        raise TypeError(f"{cls.__name__} needs a name")
    settings = getattr(cls, "settings", None)
    if settings is None or settings.model_fields["name"].default != cls.name:
        raise TypeError(f"{cls.__name__}.settings must be a MethodSettings subclass with "
                        f"name: Literal[{cls.name!r}] = {cls.name!r}")
    register_method_settings(cls.name, settings)
    _REGISTRY[cls.name] = cls
    return cls


def policy_class(name: str) -> type[MethodPolicy]:
    if name not in _REGISTRY:
        raise ConfigError(f"unknown method {name!r}; available: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def build_policy(config: MethodSettings) -> MethodPolicy:
    return policy_class(config.name)(config)


def available_methods() -> list[str]:
    return sorted(_REGISTRY)


def registered_policies() -> dict[str, type[MethodPolicy]]:
    """Every registered policy class by name, in registration order."""
    return dict(_REGISTRY)
