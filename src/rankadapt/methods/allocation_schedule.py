"""The schedules of the rank-allocation engine shared by AdaLoRA and ElaLoRA (docs/methods/adalora.md,
elalora.md): when ranks may move and how many, as pure functions of the step.

- :class:`Schedule`, :func:`resolve_schedule` — T, t_i and t_f of a run, with the warmup defaults;
- :func:`budget_schedule` — AdaLoRA's cubic budget b(t) and its three :class:`Phase` s (AdaLoRA paper §3.3);
- :func:`is_mask_step` — when AdaLoRA re-masks; :func:`round_size`, :func:`is_round_step` — ElaLoRA's
  rounds and their shrinking size b_t.

:mod:`.allocation` re-exports every name here; its docstring lists the choices where the spec leaves
room (the warmup defaults, the rounding of the round size).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ..core.errors import ConfigError


class Phase(str, Enum):
    WARMUP = "warmup"        # t ≤ t_i: no rank changes
    BUDGETING = "budgeting"  # t_i < t ≤ T − t_f: ranks move
    FINAL = "final"          # t > T − t_f: pattern frozen


@dataclass(frozen=True)
class Schedule:
    """T, t_i and t_f of a run, resolved from the config and the trainer's step count."""

    total_steps: int
    init_warmup: int
    final_warmup: int

    @property
    def budget_end(self) -> int:
        """T − t_f: the last step of the budgeting phase."""
        return self.total_steps - self.final_warmup


def resolve_schedule(init_warmup: int | None, final_warmup: int | None, total_steps: int) -> Schedule:
    """Fill in the warmup defaults (10% / 30% of T) and reject t_i + t_f ≥ T."""
    t_i = total_steps // 10 if init_warmup is None else init_warmup
    t_f = max(1, 3 * total_steps // 10) if final_warmup is None else final_warmup
    if t_i + t_f >= total_steps:
        raise ConfigError(
            f"method.init_warmup={_shown(t_i, init_warmup)} + method.final_warmup={_shown(t_f, final_warmup)} "
            f"must be below the {total_steps} optimizer steps of this run, so that some steps are left to move "
            "ranks; lower method.init_warmup and/or method.final_warmup, or raise train.epochs / train.max_steps")
    return Schedule(total_steps, t_i, t_f)


def _shown(value: int, given: int | None) -> str:
    return str(value) if given is not None else f"{value} (default)"


def budget_schedule(step: int, total_steps: int, init_warmup: int, final_warmup: int,
                    initial_budget: int, target_budget: int) -> tuple[int, Phase]:
    """AdaLoRA's total-rank budget at step t (AdaLoRA paper §3.3) and the phase t is in.

    t ≤ t_i: b(0); t > T − t_f: b(T); in between
    b(t) = ⌊b(T) + (b(0) − b(T)) · (1 − (t − t_i)/(T − t_f − t_i))³⌋ (``int`` truncation, as PEFT).
    """
    if step <= init_warmup:
        return initial_budget, Phase.WARMUP
    if step > total_steps - final_warmup:
        return target_budget, Phase.FINAL
    progress = (step - init_warmup) / (total_steps - final_warmup - init_warmup)
    return int(target_budget + (initial_budget - target_budget) * (1 - progress) ** 3), Phase.BUDGETING


def is_mask_step(step: int, total_steps: int, init_warmup: int, final_warmup: int, mask_interval: int) -> bool:
    """AdaLoRA masks in the budgeting phase when t % ΔT == 0 (official code and PEFT count from step 0,
    not from t_i), and always at t = T − t_f, where b(t) = b(T) and the final pattern is decided
    (as PEFT's forced mask at that step)."""
    in_budgeting = init_warmup < step <= total_steps - final_warmup
    return in_budgeting and (step % mask_interval == 0 or step == total_steps - final_warmup)


def round_size(step: int, total_steps: int, init_warmup: int, final_warmup: int, b: int,
               enable_scheduler: bool = True) -> int:
    """ElaLoRA's ranks moved per round: b_t = round(b · (1 − p³)), p = clip((t − t_i)/(T − t_f − t_i), 0, 1);
    b without the scheduler (docs/methods/elalora.md)."""
    if not enable_scheduler:
        return b
    p = min(max((step - init_warmup) / (total_steps - final_warmup - init_warmup), 0.0), 1.0)
    return round(b * (1 - p ** 3))


def is_round_step(step: int, total_steps: int, init_warmup: int, final_warmup: int, mask_interval: int) -> bool:
    """ElaLoRA rounds: t > t_i, (t − t_i) % interval == 0 and t < T − t_f (docs/methods/elalora.md)."""
    return init_warmup < step < total_steps - final_warmup and (step - init_warmup) % mask_interval == 0
