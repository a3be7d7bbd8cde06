"""The optimizer and the length of the schedule."""

from __future__ import annotations

import math

import torch

from ..core.config import RunConfig
from ..core.errors import ConfigError


def make_optimizer(config: RunConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """AdamW with no weight decay on biases, LayerNorm weights and gates.

    Gates (AdaLoRA's λ, SoRA's g) are excluded: decay would shrink singular values towards the
    pruning threshold independently of their importance, mixing two pruning mechanisms.
    """
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        exempt = param.ndim < 2 or "LayerNorm" in name or "layer_norm" in name or name.endswith("lora_E")
        (no_decay if exempt else decay).append(param)
    groups = [{"params": decay, "weight_decay": config.train.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=config.train.learning_rate)


def schedule_lengths(config: RunConfig, batches_per_epoch: int) -> tuple[int, int]:
    """(T, optimizer steps per epoch) for ``batches_per_epoch`` global micro-batches.

    The training loader has ⌈examples / train.batch_size⌉ batches on every process whatever the world
    size (each process holds a slice of each global batch), so T and every schedule built on it are
    those of a single-process run with the same global batch.
    """
    steps_per_epoch = math.ceil(batches_per_epoch / config.train.grad_accum)
    if steps_per_epoch == 0:
        raise ConfigError("the training split is empty after batching; lower train.batch_size or add data")
    total = config.train.max_steps or math.ceil(config.train.epochs * steps_per_epoch)
    return total, steps_per_epoch
