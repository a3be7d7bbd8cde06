"""Budget matching: ``method.budget: N`` → the rank settings that make each method end with about N
adapter parameters, so that methods are compared at equal size (as the AdaLoRA paper's tables do).

An adapted matrix W (d_out × d_in) at rank r costs r·(d_in + d_out) adapter parameters (the exported
LoRA, gates folded into A; docs/methods/README.md). With M adapted matrices and S = Σ (d_in + d_out), one
rank on every matrix costs S. What each method can match:

- **LoRA, RM-LoRA** (fixed uniform rank): r = round(N / S); the count is r·S exactly, so it is within
  S/2 of N (one rank of every matrix is the finest step a uniform rank allows).
- **ElaLoRA**: the total active rank r·M is conserved while ranks move between matrices, so
  r = round(N / S) as for LoRA. With matrices of different sizes (attention 384+384, feed-forward
  384+1536 in MiniLM) the final count moves with the allocation; it is r·S at the start.
- **AdaLoRA**: ranks are allocated per matrix, so the final total rank T is the finer knob:
  ``target_total_rank`` T = round(N / (S/M)) (N over the mean cost of one rank), and the initial rank
  ``lora_r`` = ⌈1.5·T/M⌉ unless given, the paper's ratio of initial to final budget (AdaLoRA §4,
  e.g. r 3 → 2). The expected count is T·S/M; the achieved one lies between T·min(d_in+d_out) and
  T·max(d_in+d_out), depending on which matrices keep their ranks.
- **SoRA**: r = round(N / S) sets the *starting* count; the proximal step prunes gates to zero during
  training, so N is an upper bound and the achieved count is reported beside it.

Nothing here guesses silently: the plan says what it set and what it expects, ``results.json`` holds
``budget`` (requested) next to ``adapter_parameters`` (achieved), and a budget that cannot be met
(below one rank, or above full rank) is a :class:`~rankadapt.core.errors.ConfigError` naming the limit.
Rank keys the user set explicitly must agree with the plan (else: remove one of them).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pydantic import ValidationError
from torch import nn

from ..core.config import MethodConfig, RunConfig
from ..core.errors import ConfigError
from ..core.targets import find_targets

Shape = tuple[int, int]
"""(d_in, d_out) of one adapted matrix."""

UNIFORM_RANK_METHODS = ("lora", "rmlora", "sora", "elalora")
ADALORA_INITIAL_RATIO = 1.5


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


def plan_budget(method: str, budget: int, shapes: Sequence[Shape], *, lora_r: int | None = None,
                random_rank: int | None = None, max_rank: int | None = None) -> BudgetPlan:
    """The rank settings for ``method`` that best match ``budget`` on matrices of ``shapes``.

    ``lora_r``, ``random_rank`` and ``max_rank`` are values the user set explicitly (else None);
    the plan respects them or raises :class:`ConfigError`.
    """
    if budget <= 0:
        raise ConfigError(f"method.budget={budget} must be a positive number of adapter parameters")
    if not shapes:
        raise ConfigError("method.budget needs at least one adapted matrix; check method.lora_module")
    if method == "adalora":
        return _plan_adalora(budget, shapes, lora_r)
    if method in UNIFORM_RANK_METHODS:
        return _plan_uniform(method, budget, shapes, random_rank, max_rank)
    raise ConfigError(f"method.budget applies to adapter methods ({', '.join(('adalora',) + UNIFORM_RANK_METHODS)}), "
                      f"not {method}; remove method.budget")


def _round(x: float) -> int:
    """Round half up (Python's round() sends halves to the even integer, which reads as arbitrary)."""
    return int(math.floor(x + 0.5))


def _plan_uniform(method: str, budget: int, shapes: Sequence[Shape], random_rank: int | None,
                  max_rank: int | None) -> BudgetPlan:
    unit = sum(d_in + d_out for d_in, d_out in shapes)
    rank = _round(budget / unit)
    if rank < 1:
        raise ConfigError(f"method.budget={budget:,} is below what {method} can reach on these {len(shapes)} matrices: "
                          f"the minimum is {unit:,} (rank 1 on each); raise the budget or adapt fewer modules")
    full = min(min(shape) for shape in shapes)
    if rank > full:
        raise ConfigError(f"method.budget={budget:,} needs rank {rank} per matrix, above full rank ({full}) of the "
                          f"smallest adapted matrix; the most {method} can use here is {full * unit:,}")
    settings, notes = {"lora_r": rank}, []
    if method == "rmlora" and random_rank is None and rank < 2:
        settings["random_rank"] = rank  # the default random_rank (2) may not exceed the rank
    if method == "elalora" and max_rank is None and 2 * rank > full:
        settings["max_rank"] = full  # the default 2·r slots would exceed the smallest matrix's rank
    if method == "sora":
        notes.append("SoRA prunes gates during training, so this is the starting count and an upper bound")
    if method == "elalora":
        notes.append("ElaLoRA conserves the total rank; the final count moves with the allocation")
    return BudgetPlan(method, budget, settings, rank * unit, unit, notes)


def _plan_adalora(budget: int, shapes: Sequence[Shape], lora_r: int | None) -> BudgetPlan:
    matrices = len(shapes)
    costs = [d_in + d_out for d_in, d_out in shapes]
    mean_cost = sum(costs) / matrices
    total = _round(budget / mean_cost)
    if total < 1:
        raise ConfigError(f"method.budget={budget:,} is below one rank of an adapted matrix; the minimum for adalora "
                          f"here is {min(costs):,} (one rank of the smallest matrix)")
    initial = lora_r if lora_r is not None else max(1, math.ceil(ADALORA_INITIAL_RATIO * total / matrices))
    if initial * matrices < total:
        raise ConfigError(f"method.budget={budget:,} needs a final total rank of {total}, above the initial "
                          f"{initial} x {matrices} matrices; raise method.lora_r to at least {math.ceil(total / matrices)} "
                          "or remove it (the budget then sets it)")
    full = min(min(shape) for shape in shapes)
    if initial > full:
        raise ConfigError(f"method.budget={budget:,} needs an initial rank of {initial}, above full rank ({full}) of "
                          "the smallest adapted matrix; lower the budget")
    notes = [f"the final count lies between {total * min(costs):,} and {total * max(costs):,}, depending on which "
             "matrices keep their ranks"] if len(set(costs)) > 1 else []
    return BudgetPlan("adalora", budget, {"target_total_rank": total, "lora_r": initial},
                      _round(total * mean_cost), _round(mean_cost), notes)


# ==================================================================================================
# Applying a plan to a run configuration
# ==================================================================================================

def adapted_shapes(model: nn.Module, method: MethodConfig) -> list[Shape]:
    """(d_in, d_out) of every matrix ``method`` would adapt on ``model``, in model order."""
    targets = find_targets(model, method.lora_module, method.target_modules)
    shapes = []
    for name in targets:
        module = model.get_submodule(name)
        shapes.append((int(module.in_features), int(module.out_features)))
    return shapes


def apply_budget(config: RunConfig, model: nn.Module, echo: Callable[[str], None] | None = None) -> RunConfig:
    """``config`` with the method's rank settings set from ``method.budget`` (unchanged without one).

    Call before :func:`~rankadapt.methods.adapting.prepare_model`: the plan needs the shapes of the matrices to be
    adapted. ``method.budget`` stays in the config, so ``results.json`` reports it beside the achieved
    ``adapter_parameters``.
    """
    method = config.method
    if method.budget is None:
        return config
    explicit = method.model_fields_set
    given = {key: getattr(method, key) for key in ("lora_r", "random_rank", "max_rank") if key in explicit}
    plan = plan_budget(method.name, method.budget, adapted_shapes(model, method),
                       lora_r=given.get("lora_r") if method.name == "adalora" else None,
                       random_rank=given.get("random_rank"), max_rank=given.get("max_rank"))
    _check_conflicts(method, plan)
    values = {**method.model_dump(exclude_unset=True), **plan.settings, "name": method.name}
    try:
        updated = MethodConfig.model_validate(values)
    except ValidationError as err:
        messages = "; ".join(e["msg"].removeprefix("Value error, ") for e in err.errors())
        raise ConfigError(f"method.budget={method.budget:,} sets {plan.settings}, which is invalid here: {messages}") from None
    if echo is not None:
        echo(plan.describe())
    return config.model_copy(update={"method": updated})


def _check_conflicts(method: MethodConfig, plan: BudgetPlan) -> None:
    """A rank key the user set must agree with the plan; otherwise one of the two is a mistake."""
    explicit = method.model_fields_set
    decided = dict(plan.settings)
    if method.name == "adalora":
        decided.pop("lora_r")  # the initial rank is the user's to choose
        if "target_rank" in explicit and method.target_rank is not None:
            raise ConfigError("method.budget sets AdaLoRA's final rank (target_total_rank); remove method.target_rank")
    for key, value in decided.items():
        if key in explicit and getattr(method, key) is not None and getattr(method, key) != value:
            raise ConfigError(f"method.budget={method.budget:,} sets method.{key}={value}, but method.{key}="
                              f"{getattr(method, key)} is also given; remove one of them")
