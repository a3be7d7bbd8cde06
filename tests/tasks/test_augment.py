"""Cutoff and R-drop (rankadapt.tasks.text_classification.augment): the divergences and losses against hand computations, the
cut-off views, every architecture's forward on embeddings, and a training run end to end."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
import yaml
from typer.testing import CliRunner

from rankadapt.tasks.text_classification.augment import (build_objective, check_objective, cutoff_keep_masks,
                                                         js_divergence, plain_objective, symmetric_kl)
from rankadapt.cli import app
from rankadapt.core.config import TrainConfig
from rankadapt.core.errors import ConfigError

from conftest import tiny_batch, tiny_model
from helpers import make_model_dir, sentiment_rows, write_csv

# One example, two classes: p = (0.5, 0.5) from the original view, q = (0.9, 0.1) from the other.
P_LOGITS = torch.tensor([[0.0, 0.0]])
Q_LOGITS = torch.log(torch.tensor([[0.9, 0.1]]))
KL_P_Q = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
KL_Q_P = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
JS_P_Q = 0.5 * (0.5 * math.log(0.5 / 0.7) + 0.5 * math.log(0.5 / 0.3)) \
    + 0.5 * (0.9 * math.log(0.9 / 0.7) + 0.1 * math.log(0.1 / 0.3))          # m = (0.7, 0.3)


def test_divergences_by_hand():
    assert js_divergence(P_LOGITS, Q_LOGITS).item() == pytest.approx(JS_P_Q, rel=1e-5)
    assert symmetric_kl(P_LOGITS, Q_LOGITS).item() == pytest.approx(0.5 * (KL_P_Q + KL_Q_P), rel=1e-5)
    # batch means: a second, identical pair of predictions adds 0 and halves the mean
    twice_p, pair = torch.cat([P_LOGITS, P_LOGITS]), torch.cat([Q_LOGITS, P_LOGITS])
    assert js_divergence(twice_p, pair).item() == pytest.approx(JS_P_Q / 2, rel=1e-5)
    assert 0 < JS_P_Q < math.log(2)
    assert js_divergence(Q_LOGITS + 3.0, Q_LOGITS).item() == pytest.approx(0.0, abs=1e-7)  # same p


class StubModel:
    """Returns fixed logits: P for a call with input_ids, Q for one with inputs_embeds (Cutoff's view),
    or P then Q on successive calls (R-drop); the loss is the cross-entropy with the labels."""

    def __init__(self, by_call: bool = False):
        self.by_call, self.calls, self.seen = by_call, 0, []

    def __call__(self, **inputs):
        self.seen.append(inputs)
        self.calls += 1
        second = self.calls == 2 if self.by_call else "inputs_embeds" in inputs
        logits = (Q_LOGITS if second else P_LOGITS).clone().requires_grad_()
        return SimpleNamespace(logits=logits, loss=torch.nn.functional.cross_entropy(logits, inputs["labels"]))


def test_cutoff_loss_by_hand():
    settings = TrainConfig(aug_type="span_cutoff", aug_cutoff_ratio=0.5, aug_ce_loss=0.7, aug_js_loss=2.0)
    batch = {"input_ids": torch.tensor([[3, 4, 5, 6]]), "attention_mask": torch.ones(1, 4, dtype=torch.long),
             "labels": torch.tensor([0])}
    model = StubModel()
    loss = build_objective(settings, torch.nn.Embedding(10, 4))(model, batch)
    # CE(p, y=0) = ln 2, CE(q, y=0) = −ln 0.9
    assert loss.item() == pytest.approx(math.log(2) + 0.7 * -math.log(0.9) + 2.0 * JS_P_Q, rel=1e-5)
    view = model.seen[1]
    assert "input_ids" not in view and view["inputs_embeds"].shape == (1, 4, 4)
    assert view["attention_mask"].sum() == 2                                  # ⌊0.5 · 4⌋ tokens cut
    assert int((view["inputs_embeds"].abs().sum(-1) == 0).sum()) == 2


def test_rdrop_loss_by_hand():
    batch = {"input_ids": torch.tensor([[3, 4]]), "attention_mask": torch.ones(1, 2), "labels": torch.tensor([0])}
    loss = build_objective(TrainConfig(reg_loss_wgt=1.5), torch.nn.Embedding(10, 4))(StubModel(by_call=True), batch)
    assert loss.item() == pytest.approx(0.5 * (math.log(2) - math.log(0.9)) + 1.5 * 0.5 * (KL_P_Q + KL_Q_P), rel=1e-5)
    assert build_objective(TrainConfig(), torch.nn.Embedding(10, 4)) is plain_objective


# -- the views ------------------------------------------------------------------------------------
ATTENTION = torch.tensor([[1] * 10, [1] * 6 + [0] * 4])                        # 10 and 6 real tokens


@pytest.mark.parametrize("seed", range(5))
def test_token_cutoff_removes_exactly_the_ratio_of_real_tokens(seed):
    torch.manual_seed(seed)
    keep, attention = cutoff_keep_masks("token_cutoff", ATTENTION, 8, 0.3)
    removed = keep[..., 0] == 0
    assert removed.sum(-1).tolist() == [3, 1]                                   # ⌊0.3·10⌋, ⌊0.3·6⌋
    assert not removed[1, 6:].any()                                             # never padding
    assert torch.equal(attention, ATTENTION * keep[..., 0].long())


@pytest.mark.parametrize("seed", range(5))
def test_span_cutoff_removes_one_contiguous_span_inside_the_example(seed):
    torch.manual_seed(seed)
    keep, attention = cutoff_keep_masks("span_cutoff", ATTENTION, 8, 0.5)
    for row, (length, cut) in enumerate([(10, 5), (6, 3)]):
        gone = torch.nonzero(keep[row, :, 0] == 0).flatten().tolist()
        assert len(gone) == cut and gone == list(range(gone[0], gone[0] + cut)) and gone[-1] < length
    assert torch.equal(attention, ATTENTION * keep[..., 0].long())


def test_dim_cutoff_zeroes_features_everywhere_and_keeps_the_attention():
    torch.manual_seed(0)
    keep, attention = cutoff_keep_masks("dim_cutoff", ATTENTION, 20, 0.25)
    assert keep.shape == (2, 1, 20) and (keep == 0).sum(-1).flatten().tolist() == [5, 5]
    assert not torch.equal(keep[0], keep[1])                                    # a draw per example
    assert attention is ATTENTION


@pytest.mark.parametrize("aug_type", ["token_cutoff", "span_cutoff", "dim_cutoff"])
def test_cutoff_runs_through_every_architecture(arch, aug_type):
    model = tiny_model(arch)                                  # eval mode: no dropout, so the terms are exact
    batch = {**tiny_batch(batch=3, length=9), "labels": torch.tensor([0, 1, 1])}
    objective = build_objective(TrainConfig(aug_type=aug_type, aug_cutoff_ratio=0.3), model.get_input_embeddings())
    loss = objective(model, batch)
    loss.backward()
    with torch.no_grad():
        original = model(**batch).loss
    assert torch.isfinite(loss) and loss > original            # + CE of the view (> 0) + JS (≥ 0)
    assert model.get_input_embeddings().weight.grad is not None   # the view's gradient reaches the embeddings


def test_regression_tasks_are_rejected():
    with pytest.raises(ConfigError, match="regression task; remove train.reg_loss_wgt"):
        check_objective(TrainConfig(reg_loss_wgt=1.0), True, "stsb")
    check_objective(TrainConfig(reg_loss_wgt=1.0), False, "sst2")
    check_objective(TrainConfig(), True, "stsb")


# -- end to end -----------------------------------------------------------------------------------
@pytest.mark.parametrize("option", ["train.aug_type=token_cutoff", "train.reg_loss_wgt=1.0"])
def test_training_with_each_option_end_to_end(tmp_path, option):
    model = make_model_dir(tmp_path / "tiny")
    train = write_csv(tmp_path / "train.csv", sentiment_rows(32, seed=1))
    dev = write_csv(tmp_path / "dev.csv", sentiment_rows(16, seed=2))
    out = tmp_path / "out"
    args = ["train", f"model.name={model}", "data.task=custom", f"data.train_file={train}", f"data.eval_file={dev}",
            "data.max_length=16", "method.lora_r=4", "train.batch_size=8", "train.epochs=1", "train.progress=false",
            "train.tensorboard=false", f"data.cache_dir={tmp_path / 'cache'}", f"output_dir={out}", option]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "results.json").read_text())["steps"] == 4
    key, value = option.removeprefix("train.").split("=")
    assert str(yaml.safe_load((out / "config.yaml").read_text())["train"][key]) == value
