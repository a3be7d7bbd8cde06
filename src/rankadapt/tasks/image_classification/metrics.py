"""Image-classification metrics and predictions: accuracy, top-5 accuracy, top-k labels with probabilities.

Top-k accuracy counts an example as correct when its label is among the k highest logits (ties
broken by ``torch.topk``'s order). Top-5 is reported only with more than 5 classes: with 5 or
fewer it is 1.0 by construction.
"""

from __future__ import annotations

from typing import Sequence

import torch

TOP_K = 5


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of examples whose argmax is the label."""
    _check(logits, labels)
    return float((logits.argmax(dim=-1) == labels).float().mean())


def top_k_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int = TOP_K) -> float:
    """Share of examples whose label is among the ``k`` highest logits."""
    _check(logits, labels)
    top = logits.topk(min(k, logits.shape[-1]), dim=-1).indices
    return float((top == labels.unsqueeze(-1)).any(dim=-1).float().mean())


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """``accuracy``, ``top5_accuracy`` (more than 5 classes only) and ``loss`` (mean cross-entropy)."""
    metrics = {"accuracy": accuracy(logits, labels)}
    if logits.shape[-1] > TOP_K:
        metrics[f"top{TOP_K}_accuracy"] = top_k_accuracy(logits, labels, TOP_K)
    metrics["loss"] = float(torch.nn.functional.cross_entropy(logits.float(), labels.long()))
    return metrics


def top_k_predictions(logits: torch.Tensor, label_names: Sequence[str], k: int = TOP_K
                      ) -> list[list[tuple[str, float]]]:
    """Per example, the ``k`` most probable labels with their softmax probabilities, most probable first."""
    if logits.shape[-1] != len(label_names):
        raise ValueError(f"{logits.shape[-1]} logits per example for {len(label_names)} label names")
    probabilities = logits.float().softmax(dim=-1)
    top = probabilities.topk(min(k, len(label_names)), dim=-1)
    return [[(label_names[i], float(p)) for p, i in zip(values.tolist(), indices.tolist())]
            for values, indices in zip(top.values, top.indices)]


def _check(logits: torch.Tensor, labels: torch.Tensor) -> None:
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} do not match")
    if not len(labels):
        raise ValueError("no examples to compute metrics on")
