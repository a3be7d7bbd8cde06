"""Budget plans: what ``method.budget`` sets for one method, and the uniform-rank plan most methods use.

An adapted matrix W (d_out × d_in) at rank r costs r·(d_in + d_out) adapter parameters (the exported
LoRA, gates folded into A). With M adapted matrices and S = Σ (d_in + d_out), one rank on every matrix
costs S, so a fixed uniform rank r = round(N / S) lands within S/2 of a budget N: one rank of every
matrix is the finest step a uniform rank allows. Each method's policy maps the budget onto its own
rank settings (:meth:`rankadapt.methods.base.MethodPolicy.plan_budget`); :mod:`.budget` applies it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..core.errors import ConfigError

Shape = tuple[int, int]
"""(d_in, d_out) of one adapted matrix."""


@dataclass(frozen=True)
class BudgetPlan:
    """What ``method.budget`` sets for one method on one model, and what it expects to achieve."""

    method: str
    requested: int
    settings: dict[str, int]
    """Method keys to set (``lora_r``, ``target_total_rank`` ...)."""
    expected: int
    """Adapter parameters the plan expects at the end of training."""
    step: int
    """Parameters one unit of the matched setting is worth (S, or S/M for AdaLoRA's total rank)."""
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        keys = ", ".join(f"method.{k}={v}" for k, v in self.settings.items())
        text = (f"method.budget={self.requested:,} → {keys}: {self.expected:,} adapter parameters expected "
                f"({self.expected - self.requested:+,}; one step of the setting is {self.step:,})")
        return text + "".join(f"; {note}" for note in self.notes)


def round_half_up(x: float) -> int:
    """Round half up (Python's round() sends halves to the even integer, which reads as arbitrary)."""
    return int(math.floor(x + 0.5))


def uniform_plan(method: str, budget: int, shapes: Sequence[Shape]) -> BudgetPlan:
    """r = round(N / S) on every matrix; an error names the limit when no rank fits."""
    unit = sum(d_in + d_out for d_in, d_out in shapes)
    rank = round_half_up(budget / unit)
    if rank < 1:
        raise ConfigError(f"method.budget={budget:,} is below what {method} can reach on these {len(shapes)} matrices: "
                          f"the minimum is {unit:,} (rank 1 on each); raise the budget or adapt fewer modules")
    full = smallest_full_rank(shapes)
    if rank > full:
        raise ConfigError(f"method.budget={budget:,} needs rank {rank} per matrix, above full rank ({full}) of the "
                          f"smallest adapted matrix; the most {method} can use here is {full * unit:,}")
    return BudgetPlan(method, budget, {"lora_r": rank}, rank * unit, unit)


def smallest_full_rank(shapes: Sequence[Shape]) -> int:
    return min(min(shape) for shape in shapes)
