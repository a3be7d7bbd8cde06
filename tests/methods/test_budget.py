"""Budget matching (method.budget): the rank settings per method, the achieved count within one rank's
worth of parameters of the request, and clear errors for budgets that cannot be met."""

from __future__ import annotations

import pytest

from rankadapt.core.config import MethodConfig, RunConfig
from rankadapt.core.errors import ConfigError
from rankadapt.methods.budget import adapted_shapes, apply_budget, plan_budget
from rankadapt.methods.adapting import prepare_model

from conftest import tiny_model

# all-MiniLM-L6-v2 with all six module types: per layer q, k, v, attention.output (384 x 384),
# intermediate (384 -> 1536), layer.output (1536 -> 384); six layers.
MINILM = [(384, 384)] * 4 + [(384, 1536), (1536, 384)]
MINILM_SIX = MINILM * 6
ONE_RANK = 6 * (4 * 768 + 2 * 1920)  # 41,472 parameters: rank 1 on every matrix


def test_lora_rank_is_the_budget_over_one_rank_of_every_matrix():
    plan = plan_budget("lora", 2 * ONE_RANK, MINILM_SIX)
    assert ONE_RANK == 41_472
    assert plan.settings == {"lora_r": 2} and plan.expected == 82_944 and plan.step == ONE_RANK
    assert plan_budget("lora", 100_000, MINILM_SIX).settings == {"lora_r": 2}   # 2.41 ranks -> 2
    assert plan_budget("lora", 105_000, MINILM_SIX).settings == {"lora_r": 3}   # 2.53 ranks -> 3


@pytest.mark.parametrize("method", ["lora", "rmlora", "sora", "elalora", "adalora"])
@pytest.mark.parametrize("budget", [30_000, 82_944, 100_000, 331_776, 500_000])
def test_planned_count_is_within_one_rank_of_the_request(method, budget):
    plan = plan_budget(method, budget, MINILM_SIX)
    assert abs(plan.expected - plan.requested) <= plan.step / 2
    # The finest step: one rank of every matrix for uniform ranks; one rank of an average matrix for AdaLoRA.
    assert plan.step == (ONE_RANK if method != "adalora" else ONE_RANK // 36)


def test_adalora_matches_the_final_total_rank_and_starts_at_one_and_a_half_times_it():
    plan = plan_budget("adalora", 82_944, MINILM_SIX)
    assert plan.settings == {"target_total_rank": 72, "lora_r": 3}  # 72 = 2 x 36; ceil(1.5 x 72 / 36) = 3
    assert plan.expected == 82_944
    assert "between 55,296 and 138,240" in plan.describe()  # 72 ranks of the smallest / largest matrices
    assert plan_budget("adalora", 82_944, MINILM_SIX, lora_r=8).settings["lora_r"] == 8


def test_method_specific_adjustments_and_notes():
    assert plan_budget("rmlora", ONE_RANK, MINILM_SIX).settings == {"lora_r": 1, "random_rank": 1}
    assert plan_budget("rmlora", ONE_RANK, MINILM_SIX, random_rank=1).settings == {"lora_r": 1}
    small = [(8, 8)] * 4
    assert plan_budget("elalora", 6 * 64, small).settings == {"lora_r": 6, "max_rank": 8}  # 2 x 6 slots > rank 8
    assert "upper bound" in plan_budget("sora", 82_944, MINILM_SIX).describe()


@pytest.mark.parametrize("method, budget, shapes, kwargs, message", [
    ("lora", 10_000, MINILM_SIX, {}, "the minimum is 41,472 (rank 1 on each)"),
    ("adalora", 300, MINILM_SIX, {}, "the minimum for adalora here is 768"),
    ("lora", 10 * 64, [(8, 8)] * 4, {}, "above full rank (8)"),
    ("adalora", 82_944, MINILM_SIX, {"lora_r": 1}, "raise method.lora_r to at least 2"),
    ("full", 1000, MINILM_SIX, {}, "applies to adapter methods"),
    ("lora", 0, MINILM_SIX, {}, "must be a positive"),
])
def test_budgets_that_cannot_be_met_name_the_limit(method, budget, shapes, kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        plan_budget(method, budget, shapes, **kwargs)


def _config(**method) -> RunConfig:
    return RunConfig(method=MethodConfig(**method))


def test_apply_budget_on_a_model_sets_ranks_and_the_achieved_count_matches():
    model = tiny_model()  # hidden 32: query and value of 2 layers, 4 matrices of 32 x 32, one rank = 256
    assert adapted_shapes(model, MethodConfig(lora_module=["query", "value"])) == [(32, 32)] * 4
    lines = []
    config = apply_budget(_config(name="lora", budget=1000), model, echo=lines.append)
    assert config.method.lora_r == 4 and config.method.budget == 1000
    assert "method.lora_r=4" in lines[0] and "1,024" in lines[0]
    assert prepare_model(model, config.method).adapter_parameters() == 1024  # within 256 / 2 of 1000

    config = apply_budget(_config(name="adalora", budget=1000), tiny_model())
    assert (config.method.target_total_rank, config.method.lora_r) == (16, 6)
    assert _config(name="lora").method == apply_budget(_config(name="lora"), model).method  # no budget: unchanged


def test_apply_budget_rejects_conflicting_explicit_rank_settings():
    with pytest.raises(ConfigError, match="method.lora_r=2 is also given; remove one"):
        apply_budget(_config(name="lora", budget=1000, lora_r=2), tiny_model())
    assert apply_budget(_config(name="lora", budget=1000, lora_r=4), tiny_model()).method.lora_r == 4
    with pytest.raises(ConfigError, match="remove method.target_rank"):
        apply_budget(_config(name="adalora", budget=1000, target_rank=2), tiny_model())
    with pytest.raises(ConfigError, match="random_rank=2 exceeds method.lora_r=1"):
        apply_budget(_config(name="rmlora", budget=256, random_rank=2), tiny_model())
