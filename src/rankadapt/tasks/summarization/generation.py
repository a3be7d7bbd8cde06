"""Training loss and generation for summarization.

Loss: teacher-forced cross-entropy over the target tokens with label smoothing ε (Szegedy et al.,
2016), the setting the BART recipes use (ε = 0.1). With V the vocabulary and y the reference token,

    ℓ = (1 - ε)·(-log p(y)) + ε·(1/V)·Σ_v (-log p(v)),

averaged over the non-padding target tokens of the batch (label -100 is padding). This is
transformers' ``label_smoothing_factor`` (Trainer's LabelSmoother) and torch's ``label_smoothing``.

Generation: beam search with the KV cache, batches of similar source length. The defaults are the
BART XSum decoding settings (Lewis et al., 2020; the fairseq XSum recipe and the published
``facebook/bart-large-xsum`` generation config): 6 beams, length penalty 1.0, no repeated trigram,
10 to 62 new tokens. AdaLoRA's XSum script decodes with 8 beams; set ``num_beams`` to compare.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .data import LABEL_PAD_ID, length_sorted_batches, pad_rows


class GenerationSettings(BaseModel):
    """How evaluation and ``predict`` generate summaries (``model.generate`` arguments)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=True)

    num_beams: int = Field(6, gt=0)
    """Beam size (1 = greedy decoding)."""
    max_new_tokens: int = Field(62, gt=0)
    """Most tokens generated per summary."""
    min_new_tokens: int = Field(10, ge=0)
    """Fewest tokens generated before the end token is allowed."""
    length_penalty: float = 1.0
    """Exponent on the length in beam scores (> 1 favours longer, < 1 shorter summaries)."""
    no_repeat_ngram_size: int = Field(3, ge=0)
    """No n-gram of this size occurs twice in a summary (0 = no constraint)."""
    batch_size: int = Field(16, gt=0)
    """Sources per generation batch (sorted by length, so padding is small)."""

    @model_validator(mode="after")
    def _check(self) -> GenerationSettings:
        if self.min_new_tokens > self.max_new_tokens:
            raise ValueError(f"min_new_tokens={self.min_new_tokens} exceeds max_new_tokens={self.max_new_tokens}; "
                             "lower min_new_tokens or raise max_new_tokens")
        return self

    def generate_kwargs(self) -> dict[str, Any]:
        """Arguments of ``model.generate`` (KV cache on; beams stop when all have ended)."""
        return {"num_beams": self.num_beams, "max_new_tokens": self.max_new_tokens,
                "min_new_tokens": self.min_new_tokens, "length_penalty": self.length_penalty,
                "no_repeat_ngram_size": self.no_repeat_ngram_size, "early_stopping": self.num_beams > 1,
                "use_cache": True, "do_sample": False}


def label_smoothed_loss(logits: torch.Tensor, labels: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Mean label-smoothed cross-entropy over the non-padding tokens (module docstring formula).

    ``logits``: (batch, target length, V); ``labels``: (batch, target length), -100 = padding.
    """
    return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=LABEL_PAD_ID,
                           label_smoothing=epsilon)


def per_example_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Plain cross-entropy per example (mean over its target tokens), for evaluation: shape (batch,)."""
    tokens = F.cross_entropy(logits.transpose(1, 2).float(), labels, ignore_index=LABEL_PAD_ID, reduction="none")
    counts = (labels != LABEL_PAD_ID).sum(dim=1).clamp(min=1)
    return tokens.sum(dim=1) / counts


def teacher_forced_logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Decoder logits with the reference as decoder input (``labels`` shifted right behind the start
    token, by the model's own rule). The labels are not passed to the model, so it does not compute
    a second, unsmoothed loss over the vocabulary."""
    core = getattr(model, "module", model)  # DistributedDataParallel keeps the model's methods on .module
    decoder_input_ids = core.prepare_decoder_input_ids_from_labels(labels=batch["labels"])
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                 decoder_input_ids=decoder_input_ids).logits


def seq2seq_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], epsilon: float) -> torch.Tensor:
    """The training objective of one micro-batch: :func:`label_smoothed_loss` of the teacher-forced logits."""
    return label_smoothed_loss(teacher_forced_logits(model, batch), batch["labels"], epsilon)


@torch.no_grad()
def generate_ids(model: torch.nn.Module, sources: Sequence[Sequence[int]], pad_token_id: int,
                 settings: GenerationSettings) -> list[list[int]]:
    """Generated token ids for each source (in input order), batched by source length.

    Run it inside ``AdaptedModel.merged_for_evaluation()`` so beams run on W + ΔW, at the frozen
    model's cost. The returned ids hold no padding; special tokens are kept (decode with
    ``skip_special_tokens=True``).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: list[list[int]] = [[] for _ in sources]
    try:
        for batch in length_sorted_batches([len(s) for s in sources], settings.batch_size):
            rows = [sources[i] for i in batch]
            input_ids, attention_mask = pad_rows(rows, pad_token_id), pad_rows([[1] * len(r) for r in rows], 0)
            generated = model.generate(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                                       pad_token_id=pad_token_id, **settings.generate_kwargs())
            for i, row in zip(batch, generated.tolist(), strict=True):
                out[i] = _strip_padding(row, pad_token_id)
    finally:
        model.train(was_training)
    return out


def generate_summaries(model: torch.nn.Module, tokenizer, texts: Sequence[str], settings: GenerationSettings,
                       max_length: int, source_prefix: str = "") -> list[str]:
    """Summaries of raw ``texts`` (``predict``): tokenise (truncated to ``max_length``), generate, decode."""
    sources = tokenizer([source_prefix + t for t in texts], truncation=True, max_length=max_length)["input_ids"]
    ids = generate_ids(model, sources, tokenizer.pad_token_id, settings)
    return [text.strip() for text in tokenizer.batch_decode(ids, skip_special_tokens=True)]


def _strip_padding(row: list[int], pad_token_id: int) -> list[int]:
    """Drop the trailing padding of a finished beam (the decoder start token may equal the pad id,
    as in T5, so only the tail is stripped)."""
    end = len(row)
    while end > 1 and row[end - 1] == pad_token_id:
        end -= 1
    return row[:end]
