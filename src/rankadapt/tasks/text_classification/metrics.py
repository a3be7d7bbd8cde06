"""Evaluation metrics of the supported tasks, on the 0-1 scale (not percent).

Undefined correlations (a constant prediction, e.g. early in training) are reported as 0.0, as
scikit-learn does for the Matthews correlation, rather than NaN: a NaN would make every later
"is this the best model?" comparison false.
"""

from __future__ import annotations

import numpy as np

from .specs import TaskSpec


def predictions_from_logits(task: TaskSpec, logits: np.ndarray) -> np.ndarray:
    """Class ids (argmax over the last axis), or the single score per example for regression."""
    logits = np.asarray(logits)
    if task.is_regression:
        return logits.reshape(len(logits), -1)[:, 0] if logits.ndim > 1 else logits
    return logits.argmax(axis=-1)


def compute_metrics(task: TaskSpec, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Every metric in ``task.metrics``, as Python floats."""
    predictions, labels = np.asarray(predictions).reshape(-1), np.asarray(labels).reshape(-1)
    if predictions.shape != labels.shape:
        raise ValueError(f"{len(predictions)} predictions for {len(labels)} labels")
    if not len(labels):
        raise ValueError("no examples to compute metrics on")
    return {name: float(_METRICS[name](predictions, labels)) for name in task.metrics}


def _accuracy(pred: np.ndarray, gold: np.ndarray) -> float:
    return float(np.mean(pred == gold))


def _f1(pred: np.ndarray, gold: np.ndarray) -> float:
    """F1 of class 1 (``equivalent``/``duplicate``), as GLUE reports for MRPC and QQP."""
    from sklearn.metrics import f1_score  # imported when used: scikit-learn costs ~0.6 s to import

    return f1_score(gold.astype(int), pred.astype(int), pos_label=1, average="binary", zero_division=0.0)


def _matthews(pred: np.ndarray, gold: np.ndarray) -> float:
    from sklearn.metrics import matthews_corrcoef

    return matthews_corrcoef(gold.astype(int), pred.astype(int))


def _correlation(name: str):
    """scipy.stats' ``name`` correlation (imported when used: scipy.stats costs ~0.5 s to import)."""
    def metric(pred: np.ndarray, gold: np.ndarray) -> float:
        from scipy import stats

        pred, gold = pred.astype(np.float64), gold.astype(np.float64)
        if len(pred) < 2 or np.ptp(pred) == 0 or np.ptp(gold) == 0:
            return 0.0
        return getattr(stats, name)(pred, gold)[0]
    return metric


_METRICS = {
    "accuracy": _accuracy,
    "f1": _f1,
    "matthews_correlation": _matthews,
    "pearson": _correlation("pearsonr"),
    "spearman": _correlation("spearmanr"),
}
