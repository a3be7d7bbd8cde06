"""The importance and rank-allocation engine shared by AdaLoRA and ElaLoRA (docs/methods/adalora.md, elalora.md).

Rank dynamics are pure functions of tensors and a step, so they are tested
without a model:

- :func:`budget_schedule` — AdaLoRA's cubic budget b(t) and its three phases (AdaLoRA paper §3.3);
- :func:`is_mask_step` — when AdaLoRA re-masks; :func:`round_size`, :func:`is_round_step` — ElaLoRA's
  rounds and their shrinking size b_t;
- :func:`element_importance`, :func:`update_importance`, :func:`rank_scores` — sensitivity I = |w·∂L/∂w|,
  its smoothed value Ī and uncertainty Ū, and the score of a rank (AdaLoRA paper §3.2);
- :func:`select_to_keep` — the ranks that survive a budget, exactly b(t) of them;
- :func:`plan_round` — ElaLoRA's prune-and-grow decision for one round;
- :func:`orthogonal_unit_vector` — the direction a grown rank starts from.

The schedules (the first two items, with :class:`Schedule` and :func:`resolve_schedule`) live in
:mod:`.allocation_schedule` and are re-exported here, so both methods import the engine from one place.

:class:`ImportanceTracker` holds the EMAs Ī and Ū of every entry of A, λ and B; what both methods
share as policies and settings (the SVD-form init, the orthogonal regulariser, the tracker, the warmup
schedule t_i, t_f, T) is :mod:`.importance`.

Choices where the spec leaves room, or where we depart from the official code / PEFT:

- **Exact budget.** PEFT masks every score ``<= kthvalue(scores, b(0) − b(t))``; with tied scores that
  masks all tied ranks and leaves fewer than b(t) (and ``k = 0`` raises). :func:`select_to_keep` keeps
  exactly b(t): the highest scores, ties broken towards the lower index in model order (adapters in
  model order, slots in index order). Without ties the two rules keep the same ranks.
- **Warmup defaults.** ``init_warmup`` None → ⌊T/10⌋, ``final_warmup`` None → max(1, ⌊3T/10⌋) (the
  floor of 30%, at least one step so that AdaLoRA's final budget is reached at a real step).
- **Round size.** b_t = round(b·(1 − p³)) uses Python's ``round`` (halves go to the even integer).
- **Rounds with few candidates** (:func:`plan_round`): the number moved is n = min(b_t, ⌊C/2⌋) for C
  candidates, so the pruned set (the n lowest) and the growing set (drawn from the rest, highest first)
  never share a rank. A matrix with no free slot after the round's pruning is skipped for growth and
  the next-highest candidate's owner grows instead; if fewer than n owners can grow, n is lowered
  until prunes and growths match. The total active rank is therefore always conserved.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..core.layer import AdapterLinear
from .allocation_schedule import (Phase, Schedule, budget_schedule, is_mask_step,  # noqa: F401  (re-exported)
                                  is_round_step, resolve_schedule, round_size)
from .base import Adapters

FACTORS = ("lora_A", "lora_E", "lora_B")
"""The parameters whose entries carry importance: A (R × d_in), λ (R), B (d_out × R)."""


# ==================================================================================================
# Importance
# ==================================================================================================

def element_importance(param: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
    """Sensitivity I = |w · ∂L/∂w| per entry (AdaLoRA paper §3.2). No gradient means no sensitivity."""
    if grad is None:
        return torch.zeros_like(param)
    return (param * grad).abs()


def update_importance(ipt_avg: torch.Tensor, unc_avg: torch.Tensor, ipt: torch.Tensor,
                      beta1: float, beta2: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Ī ← β1·Ī + (1−β1)·I;  Ū ← β2·Ū + (1−β2)·|I − Ī|, with the Ī just updated (AdaLoRA §3.2)."""
    ipt_avg = beta1 * ipt_avg + (1 - beta1) * ipt
    unc_avg = beta2 * unc_avg + (1 - beta2) * (ipt - ipt_avg).abs()
    return ipt_avg, unc_avg


def rank_scores(score_A: torch.Tensor, score_E: torch.Tensor, score_B: torch.Tensor) -> torch.Tensor:
    """S_i = s(λ_i) + mean_j s(A_ij) + mean_j s(B_ji), with s = Ī·Ū per entry (AdaLoRA §3.2).

    Summed as s(λ) + (mean A + mean B), PEFT's order, so that equal EMAs give bit-equal scores.
    """
    return score_E.view(-1) + (score_A.mean(dim=1) + score_B.mean(dim=0))


class ImportanceTracker:
    """The EMAs Ī and Ū of every entry of A, λ and B, per adapter (created on the first update)."""

    def __init__(self, beta1: float, beta2: float) -> None:
        self.beta1, self.beta2 = beta1, beta2
        self.ipt_avg: dict[str, dict[str, torch.Tensor]] = {}
        self.unc_avg: dict[str, dict[str, torch.Tensor]] = {}

    @torch.no_grad()
    def update(self, adapters: Adapters) -> None:
        """One EMA step from the current parameters and gradients (after optimizer.step, before zero_grad)."""
        for name, layer in adapters.items():
            ipt_avg, unc_avg = self.ipt_avg.setdefault(name, {}), self.unc_avg.setdefault(name, {})
            for factor in FACTORS:
                param = getattr(layer, factor)
                if factor not in ipt_avg:
                    ipt_avg[factor], unc_avg[factor] = torch.zeros_like(param), torch.zeros_like(param)
                # .to: EMAs loaded from a CPU checkpoint join the parameter's device here.
                ipt_avg[factor], unc_avg[factor] = update_importance(
                    ipt_avg[factor].to(param), unc_avg[factor].to(param), element_importance(param, param.grad),
                    self.beta1, self.beta2)

    def scores(self, name: str, layer: AdapterLinear) -> torch.Tensor:
        """S per slot of one adapter; zeros before the first update."""
        if name not in self.ipt_avg:
            return torch.zeros(layer.capacity, device=layer.lora_A.device)
        s = {f: self.ipt_avg[name][f] * self.unc_avg[name][f] for f in FACTORS}
        return rank_scores(s["lora_A"], s["lora_E"], s["lora_B"])

    @torch.no_grad()
    def reset_slots(self, name: str, slots: Sequence[int]) -> None:
        """Zero the EMAs of the given slots: A's rows, λ's entries, B's columns (a grown rank starts fresh)."""
        for store in (self.ipt_avg, self.unc_avg):
            if name in store:
                store[name]["lora_A"][list(slots)] = 0
                store[name]["lora_E"][list(slots)] = 0
                store[name]["lora_B"][:, list(slots)] = 0

    def state_dict(self) -> dict[str, Any]:
        return {"beta1": self.beta1, "beta2": self.beta2,
                "ipt_avg": _clone(self.ipt_avg), "unc_avg": _clone(self.unc_avg)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.beta1, self.beta2 = state["beta1"], state["beta2"]
        self.ipt_avg, self.unc_avg = _clone(state["ipt_avg"]), _clone(state["unc_avg"])


def _clone(store: dict[str, dict[str, torch.Tensor]]) -> dict[str, dict[str, torch.Tensor]]:
    """A copy that shares no storage (a saved state must not change as training goes on)."""
    return {name: {f: t.detach().clone() for f, t in factors.items()} for name, factors in store.items()}


# ==================================================================================================
# Decisions
# ==================================================================================================

def select_to_keep(scores: torch.Tensor, budget: int) -> torch.Tensor:
    """A bool mask keeping exactly min(budget, n) ranks: the highest scores, ties to the lower index.

    NaN scores count as the lowest. (PEFT's ``<= kthvalue`` rule drops every tied rank; see the
    module docstring.)
    """
    scores = torch.nan_to_num(scores.detach().float(), nan=-math.inf)
    order = torch.sort(scores, descending=True, stable=True).indices
    keep = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    keep[order[:max(budget, 0)]] = True
    return keep


@dataclass(frozen=True)
class RoundPlan:
    """One ElaLoRA round: per matrix, the slots to prune and the number of ranks to grow."""

    prune: list[list[int]]
    grow: list[int]

    @property
    def moved(self) -> int:
        return sum(self.grow)


def round_candidates(scores: Sequence[torch.Tensor], active: Sequence[torch.Tensor],
                     k: int) -> list[tuple[float, int, int]]:
    """Each matrix's k_i = min(k, active_i − 1) lowest-scored active slots, as (score, matrix, slot),
    sorted ascending; ties go to the lower matrix, then the lower slot (pruned first). NaN counts lowest."""
    candidates = []
    for m, (score, mask) in enumerate(zip(scores, active)):
        score = torch.nan_to_num(score.detach().float(), nan=-math.inf)
        slots = torch.nonzero(mask, as_tuple=False).flatten().tolist()
        k_m = max(min(k, len(slots) - 1), 0)
        ranked = sorted(slots, key=lambda s: (float(score[s]), s))
        candidates += [(float(score[s]), m, s) for s in ranked[:k_m]]
    return sorted(candidates)


def _growth_owners(ranked: list[tuple[float, int, int]], wanted: int, room: list[int]) -> list[int] | None:
    """Owners of the ``wanted`` highest candidates that have a free slot, or None if too few can grow."""
    room, owners = list(room), []
    for _, m, _ in reversed(ranked):
        if len(owners) == wanted:
            break
        if room[m] > 0:
            room[m] -= 1
            owners.append(m)
    return owners if len(owners) == wanted else None


def plan_round(scores: Sequence[torch.Tensor], active: Sequence[torch.Tensor], capacity: Sequence[int],
               k: int, budget: int) -> RoundPlan:
    """ElaLoRA's round (docs/methods/elalora.md) over the matrices' slot scores and active masks.

    Among all candidates the n lowest are pruned and the owners of the n highest of the rest gain one
    rank each, skipping owners without a free slot after pruning; n starts at min(b_t, ⌊C/2⌋) and is
    lowered until n owners can grow. So Σ prunes = Σ growths, no matrix moves by more than k, none
    drops below one active rank, none exceeds its capacity.
    """
    ranked = round_candidates(scores, active, k)
    counts = [int(mask.sum()) for mask in active]
    for n in range(min(budget, len(ranked) // 2), 0, -1):
        pruned = ranked[:n]
        room = [cap - c + sum(1 for _, m, _ in pruned if m == i)
                for i, (cap, c) in enumerate(zip(capacity, counts))]
        owners = _growth_owners(ranked[n:], n, room)
        if owners is not None:
            prune = [[s for _, m, s in pruned if m == i] for i in range(len(counts))]
            return RoundPlan(prune, [owners.count(i) for i in range(len(counts))])
    return RoundPlan([[] for _ in counts], [0] * len(counts))


def orthogonal_unit_vector(existing_rows: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random unit vector orthogonal to every row of ``existing_rows`` (n × d).

    Projects a Gaussian draw off an orthonormal basis of the rows (QR, in float64), twice — one
    Gram–Schmidt pass can leave a residual of order ε·cond; the second removes it ("twice is enough").
    Raises ValueError when the rows span the whole space.
    """
    n, d = existing_rows.shape
    rows = existing_rows.detach().to("cpu", torch.float64)
    basis = torch.linalg.qr(rows.t(), mode="reduced").Q if n else rows.new_zeros(d, 0)
    for _ in range(8):  # a draw almost inside the span is astronomically rare; retry rather than fail
        v = torch.randn(d, generator=generator, dtype=torch.float64)
        start = v.norm()
        for _ in range(2):
            v = v - basis @ (basis.t() @ v)
        if v.norm() > 1e-6 * start:
            return (v / v.norm()).to(existing_rows.device, existing_rows.dtype)
    raise ValueError(f"{n} rows span the whole {d}-dimensional space; no orthogonal direction is left")
