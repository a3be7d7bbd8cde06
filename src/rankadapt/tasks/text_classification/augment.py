"""Consistency training for text classification: Cutoff and R-drop (docs/methods/training-options.md).

Both are the extra objectives of microsoft/LoRA's NLU examples (``mnli.cutoff.sh``, ``mnli.rdrop.sh``),
available to every method. Each replaces the task loss of a training micro-batch by a loss with a
second forward pass; evaluation is untouched. :func:`build_objective` picks the objective once, and
the training loop calls it in place of ``model(**batch).loss``.

**Cutoff** (Shen et al. 2020, "A Simple but Tough-to-Beat Data Augmentation Approach", arXiv
2009.13818, §2): an augmented view of each example is made by zeroing part of its input word
embeddings, as ``train.aug_type`` says, with c = ⌊ratio · n⌋ for an example of n real tokens:

- ``token_cutoff``: c distinct token positions of the example (rows of its embedding, and the
  attention mask there);
- ``span_cutoff``: one contiguous span of c tokens, starting at ⌊u · (n − c)⌋, u ~ U[0, 1);
- ``dim_cutoff``: c' = ⌊ratio · d⌋ distinct feature dimensions of the d-dimensional embedding, at
  every position (the attention mask is kept).

The loss is, for the original logits z and the augmented logits z̃ (p, q their softmaxes),

    L = CE(z, y) + ``aug_ce_loss`` · CE(z̃, y) + ``aug_js_loss`` · JS(p, q),
    JS(p, q) = ½ KL(p ‖ m) + ½ KL(q ‖ m),   m = (p + q) / 2,

each term averaged over the batch. Two departures from Shen et al.'s code, both on purpose: token
and feature positions are drawn without replacement (theirs draws with replacement, so it may cut
fewer than c), and the consistency term is the Jensen–Shannon divergence itself; their ``js_div``
computes ½ KL(m ‖ p) + ½ KL(m ‖ q) (``F.kl_div`` with the arguments the other way round), which is
not bounded by log 2 and is not the divergence the paper names.

**R-drop** (Liang et al., NeurIPS 2021, arXiv 2106.14448, eq. 3): the same batch goes through the
model twice, so that dropout draws two different sub-models (z₁, z₂; p₁, p₂):

    L = ½ (CE(z₁, y) + CE(z₂, y)) + ``reg_loss_wgt`` · ½ (KL(p₁ ‖ p₂) + KL(p₂ ‖ p₁)),

batch means again. The two cross-entropies are averaged rather than summed (the paper's eq. 3 sums
them; its released code averages) so that ``reg_loss_wgt`` = 0 gives the gradient of plain
training, and the learning rate means the same with and without R-drop. R-drop needs dropout: with
every dropout at 0 the two passes agree and the KL term is 0.

Cost: both objectives run two forward and backward passes per micro-batch, about twice the time of
a plain step (measured in the README). Both need class probabilities, so regression tasks (STS-B)
are rejected by :func:`check_objective`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ...core.config import TrainConfig
from ...core.errors import ConfigError

Objective = Callable[[torch.nn.Module, dict[str, torch.Tensor]], torch.Tensor]


# ==================================================================================================
# Divergences (batch means of per-example values)
# ==================================================================================================

def kl_divergence(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of KL(p ‖ q) = Σ_c p_c (log p_c − log q_c), from log-probabilities."""
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean()


def js_divergence(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of JS(p, q) = ½ KL(p ‖ m) + ½ KL(q ‖ m), m = (p + q)/2; in [0, log 2]."""
    log_p, log_q = F.log_softmax(logits_p.float(), -1), F.log_softmax(logits_q.float(), -1)
    log_m = torch.logsumexp(torch.stack([log_p, log_q]), dim=0) - torch.log(torch.tensor(2.0))
    return 0.5 * (kl_divergence(log_p, log_m) + kl_divergence(log_q, log_m))


def symmetric_kl(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ½ (KL(p ‖ q) + KL(q ‖ p)), R-drop's consistency term."""
    log_p, log_q = F.log_softmax(logits_p.float(), -1), F.log_softmax(logits_q.float(), -1)
    return 0.5 * (kl_divergence(log_p, log_q) + kl_divergence(log_q, log_p))


# ==================================================================================================
# Cutoff views
# ==================================================================================================

def cutoff_keep_masks(aug_type: str, attention_mask: torch.Tensor, hidden_size: int,
                      ratio: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(keep, attention): a 0/1 mask broadcastable to the (batch, length, hidden) embeddings, and the
    augmented view's attention mask. Random draws come from torch's global generator (seeded by
    ``train.seed`` and saved in checkpoints like dropout's)."""
    batch, length = attention_mask.shape
    lengths = attention_mask.sum(-1)
    if aug_type == "dim_cutoff":
        cut = int(ratio * hidden_size)
        order = torch.rand(batch, hidden_size, device=attention_mask.device).argsort(-1)
        keep = torch.ones(batch, hidden_size, device=attention_mask.device)
        keep.scatter_(1, order[:, :cut], 0.0)
        return keep[:, None, :], attention_mask
    cuts = (lengths.float() * ratio).long()
    positions = torch.arange(length, device=attention_mask.device).expand(batch, length)
    if aug_type == "span_cutoff":
        starts = (torch.rand(batch, device=attention_mask.device) * (lengths - cuts)).long()
        removed = (positions >= starts[:, None]) & (positions < (starts + cuts)[:, None])
    elif aug_type == "token_cutoff":
        # A random order of the real tokens (padding sorts last); the first c of it are cut.
        scores = torch.rand(batch, length, device=attention_mask.device).masked_fill(attention_mask == 0, 2.0)
        rank = scores.argsort(-1).argsort(-1)
        removed = rank < cuts[:, None]
    else:
        raise ValueError(f"unknown cutoff type {aug_type!r}")
    keep = (~removed).to(attention_mask.dtype)
    return keep[:, :, None], attention_mask * keep


def cutoff_objective(settings: TrainConfig, embeddings: torch.nn.Module) -> Objective:
    """CE(original) + aug_ce_loss · CE(cut-off view) + aug_js_loss · JS(original, view)."""
    def loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        original = model(**batch)
        embeds = embeddings(batch["input_ids"])
        keep, attention = cutoff_keep_masks(settings.aug_type, batch["attention_mask"], embeds.shape[-1],
                                            settings.aug_cutoff_ratio)
        view_inputs = {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask")}
        view = model(inputs_embeds=embeds * keep.to(embeds.dtype), attention_mask=attention, **view_inputs)
        total = original.loss
        if settings.aug_ce_loss:
            total = total + settings.aug_ce_loss * view.loss
        if settings.aug_js_loss:
            total = total + settings.aug_js_loss * js_divergence(original.logits, view.logits)
        return total
    return loss


def rdrop_objective(weight: float) -> Objective:
    """½ (CE₁ + CE₂) + weight · ½ (KL(p₁ ‖ p₂) + KL(p₂ ‖ p₁)) over two dropout passes."""
    def loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        first, second = model(**batch), model(**batch)
        return 0.5 * (first.loss + second.loss) + weight * symmetric_kl(first.logits, second.logits)
    return loss


def plain_objective(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(**batch).loss


# ==================================================================================================
# Choosing the objective
# ==================================================================================================

def check_objective(settings: TrainConfig, is_regression: bool, task_name: str) -> None:
    """Reject Cutoff/R-drop on a regression task before anything is written."""
    if is_regression and (settings.aug_type or settings.reg_loss_wgt):
        used = "train.aug_type" if settings.aug_type else "train.reg_loss_wgt"
        raise ConfigError(f"{used} needs class probabilities, but {task_name} is a regression task; "
                          f"remove {used} for this task")


def build_objective(settings: TrainConfig, embeddings: torch.nn.Module) -> Objective:
    """The training loss per micro-batch: Cutoff, R-drop or the plain task loss (``embeddings``: the
    model's input word embeddings, which Cutoff edits)."""
    if settings.aug_type:
        return cutoff_objective(settings, embeddings)
    if settings.reg_loss_wgt:
        return rdrop_objective(settings.reg_loss_wgt)
    return plain_objective
