"""Metrics against hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rankadapt.tasks.text_classification import TASKS, custom_task
from rankadapt.tasks.text_classification.metrics import compute_metrics, predictions_from_logits

# gold 1,1,1,1,0,0,0,0,0,0 against predictions giving TP=3, FN=1, FP=2, TN=4
GOLD = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
PRED = np.array([1, 1, 1, 0, 1, 1, 0, 0, 0, 0])


def test_binary_confusion_matrix_by_hand():
    tp, fn, fp, tn = 3, 1, 2, 4
    f1 = 2 * tp / (2 * tp + fp + fn)  # 6 / 9
    mcc = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))  # 10 / sqrt(5*4*6*5)
    assert compute_metrics(TASKS["mrpc"], PRED, GOLD) == pytest.approx({"accuracy": 0.7, "f1": f1})
    cola = compute_metrics(TASKS["cola"], PRED, GOLD)
    assert cola == pytest.approx({"matthews_correlation": mcc, "accuracy": 0.7})
    assert mcc == pytest.approx(10 / math.sqrt(600))
    assert all(type(v) is float for v in cola.values())


def test_f1_is_of_class_one():
    assert compute_metrics(TASKS["qqp"], 1 - PRED, 1 - GOLD)["f1"] == pytest.approx(2 * 4 / (2 * 4 + 1 + 2))


def test_accuracy_tasks_report_accuracy_only():
    for name in ("imdb", "sst2", "mnli", "qnli", "rte", "wnli"):
        assert set(compute_metrics(TASKS[name], PRED, GOLD)) == {"accuracy"}
    three = custom_task(["a", "b", "c"], is_pair=False)
    assert compute_metrics(three, np.array([0, 1, 2, 2]), np.array([0, 1, 1, 2])) == {"accuracy": 0.75}
    assert set(compute_metrics(custom_task(["n", "p"], is_pair=False), PRED, GOLD)) == {"accuracy", "f1"}


def test_stsb_correlations_by_hand():
    pred = np.array([1.0, 2.0, 3.0, 4.0])
    gold = np.array([1.0, 3.0, 2.0, 5.0])
    # Pearson: deviations (-1.5,-.5,.5,1.5) and (-1.75,.25,-.75,2.25): cov 5.5, norms sqrt(5) and sqrt(8.75)
    pearson = 5.5 / math.sqrt(5 * 8.75)
    # Spearman: ranks (1,2,3,4) vs (1,3,2,4): d^2 = 0+1+1+0 -> 1 - 6*2/(4*15) = 0.8
    result = compute_metrics(TASKS["stsb"], pred, gold)
    assert result == pytest.approx({"pearson": pearson, "spearman": 0.8})
    assert TASKS["stsb"].main_metric == "pearson"


def test_constant_predictions_give_zero_correlation_not_nan():
    result = compute_metrics(TASKS["stsb"], np.full(4, 2.5), np.array([1.0, 2.0, 3.0, 4.0]))
    assert result == {"pearson": 0.0, "spearman": 0.0}
    assert compute_metrics(TASKS["cola"], np.ones(4), np.array([0, 1, 0, 1]))["matthews_correlation"] == 0.0


def test_predictions_from_logits():
    logits = np.array([[0.1, 2.0], [3.0, -1.0], [0.0, 0.5]])
    assert predictions_from_logits(TASKS["sst2"], logits).tolist() == [1, 0, 1]
    assert predictions_from_logits(TASKS["stsb"], np.array([[0.5], [4.2]])).tolist() == [0.5, 4.2]
    assert predictions_from_logits(TASKS["stsb"], np.array([0.5, 4.2])).tolist() == [0.5, 4.2]


def test_mismatched_lengths_are_rejected():
    with pytest.raises(ValueError, match="3 predictions for 2 labels"):
        compute_metrics(TASKS["sst2"], np.array([0, 1, 1]), np.array([0, 1]))


def test_task_specs():
    assert TASKS["mnli"].num_labels == 3 and TASKS["stsb"].num_labels == 1 and TASKS["stsb"].is_regression
    assert TASKS["mrpc"].main_metric == "accuracy" and TASKS["cola"].main_metric == "matthews_correlation"
    assert all(spec.main_metric in spec.metrics for spec in TASKS.values())
