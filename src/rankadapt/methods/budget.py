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

from collections.abc import Callable, Sequence

from pydantic import ValidationError
from torch import nn

from ..core.config import MethodConfig, MethodSettings, RunConfig, method_keys
from ..core.errors import ConfigError
from ..core.targets import find_targets
from .base import policy_class
from .budget_plans import BudgetPlan, Shape

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
    explicit = {k: v for k, v in (("lora_r", lora_r), ("random_rank", random_rank), ("max_rank", max_rank))
                if v is not None}
    return policy_class(method).plan_budget(budget, shapes, explicit)


# ==================================================================================================
# Applying a plan to a run configuration
# ==================================================================================================

def adapted_shapes(model: nn.Module, method: MethodSettings, role_patterns: dict[str, str] | None = None,
                   heads: list[str] | None = None) -> list[Shape]:
    """(d_in, d_out) of every matrix ``method`` would adapt on ``model``, in model order
    (``role_patterns``, ``heads``: as for :func:`~rankadapt.methods.adapting.prepare_model`)."""
    heads = method.modules_to_save if method.modules_to_save is not None else heads
    targets = find_targets(model, method.lora_module, method.target_modules, role_patterns, heads)
    shapes = []
    for name in targets:
        module = model.get_submodule(name)
        shapes.append((int(module.in_features), int(module.out_features)))
    return shapes


def apply_budget(config: RunConfig, model: nn.Module, echo: Callable[[str], None] | None = None,
                 role_patterns: dict[str, str] | None = None, heads: list[str] | None = None) -> RunConfig:
    """``config`` with the method's rank settings set from ``method.budget`` (unchanged without one).

    Call before :func:`~rankadapt.methods.adapting.prepare_model`: the plan needs the shapes of the matrices to be
    adapted. ``method.budget`` stays in the config, so ``results.json`` reports it beside the achieved
    ``adapter_parameters``.
    """
    method = config.method
    if getattr(method, "budget", None) is None:  # methods without adapters have no budget key
        return config
    explicit = method.model_fields_set
    given = {key: getattr(method, key) for key in ("lora_r", "random_rank", "max_rank") if key in explicit}
    # Only AdaLoRA keeps a given lora_r (its initial rank); for the others the budget decides it and a
    # given lora_r is a conflict (_check_conflicts).
    plan = plan_budget(method.name, method.budget, adapted_shapes(model, method, role_patterns, heads),
                       lora_r=given.get("lora_r") if "target_total_rank" in method_keys(method.name) else None,
                       random_rank=given.get("random_rank"), max_rank=given.get("max_rank"))
    _check_conflicts(method, plan)
    values = {**method.model_dump(exclude_unset=True), **plan.settings, "name": method.name}
    try:
        updated = MethodConfig(**values)
    except ValidationError as err:
        messages = "; ".join(e["msg"].removeprefix("Value error, ") for e in err.errors())
        raise ConfigError(f"method.budget={method.budget:,} sets {plan.settings}, which is invalid here: {messages}") from None
    if echo is not None:
        echo(plan.describe())
    return config.model_copy(update={"method": updated})


def _check_conflicts(method: MethodSettings, plan: BudgetPlan) -> None:
    """A rank key the user set must agree with the plan; otherwise one of the two is a mistake."""
    explicit = method.model_fields_set
    decided = dict(plan.settings)
    if "target_total_rank" in decided:  # AdaLoRA: the initial rank is the user's to choose
        decided.pop("lora_r")
        if "target_rank" in explicit and method.target_rank is not None:
            raise ConfigError("method.budget sets AdaLoRA's final rank (target_total_rank); remove method.target_rank")
    for key, value in decided.items():
        if key in explicit and getattr(method, key) is not None and getattr(method, key) != value:
            raise ConfigError(f"method.budget={method.budget:,} sets method.{key}={value}, but method.{key}="
                              f"{getattr(method, key)} is also given; remove one of them")
