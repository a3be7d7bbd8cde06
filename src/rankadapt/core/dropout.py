"""Dropout with cheaper random numbers on CPU: the same Bernoulli(1 − p) masks at under a quarter of the cost.

Why: on CPU, torch's dropout draws one random number per element through ``aten::bernoulli_``
(~5 ns an element on this project's 2-core machine). A MiniLM training step at batch 16 × 208
tokens draws 50M of them for the encoder's attention-probability dropout (16 · 12 heads · 208² per
layer), 17M for its hidden dropout and 69M more when the adapters' inputs on all six module types
are dropped out (``lora_dropout``): a quarter to a third of the whole step went to random numbers
(BENCHMARKS.md, "what fast dropout bought").

How: one 64-bit draw from torch's generator yields four independent 16-bit integers u, uniform on
{−32768, …, 32767}; an element is kept when u ≥ t − 32768 with t = round(p · 65536). The drop
probability is therefore t / 65536, p rounded to the nearest multiple of 2⁻¹⁶ (0.1 becomes
0.1000061), and kept elements are scaled by 1 / (1 − t / 65536), so E[dropout(x)] = x exactly.
This is the only departure from ``torch.nn.functional.dropout``: the masks are a different random
stream, drawn from the same seeded generator (runs stay reproducible and resumable), with p
quantised as above.

Where: ``fast_dropout(model)`` swaps every ``nn.Dropout`` of the model (the encoder's, the head's
and the adapters') for ``FastDropout`` and, for models whose attention goes through transformers'
attention interface with SDPA (BERT, RoBERTa, DistilBERT, MiniLM), the attention-probability dropout
inside SDPA for the same computation written out (``_attention_with_fast_dropout``). It is used for
training only, on CPU only: in eval mode and on CUDA (whose fused dropout is already fast) every
path is torch's own, so evaluation and GPU runs are unchanged bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

LEVELS = 1 << 16
"""Resolution of the drop probability: p is rounded to a multiple of 1 / LEVELS."""

ATTENTION_IMPLEMENTATION = "rankadapt_sdpa"


def drop_threshold(p: float) -> int:
    """t = round(p · 65536): an element is dropped with probability t / 65536."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    return round(p * LEVELS)


def keep_scale(p: float) -> float:
    """1 / (1 − t / 65536): what kept elements are multiplied by, so the mean is unchanged."""
    return LEVELS / (LEVELS - drop_threshold(p))


def _random_halves(shape: torch.Size | tuple[int, ...], device: torch.device | str) -> torch.Tensor:
    """Independent uniform int16 values of the given shape, four from each 64-bit draw of the default
    generator (``random_`` over the full int64 range: every bit uniform), so the generator runs a
    quarter as often as for one float per element.

    Inside a graph that ``torch.compile`` traces, the int16 view of the int64 draws breaks AOT
    autograd's output aliasing (torch 2.13), so a compiled graph draws the same distribution with
    ``randint`` (another stream, as compiled random numbers are anyway). A check of the compiling
    flag rather than ``@torch.compiler.disable``: the decorator imports torch._dynamo, 1.2–1.8 s of
    every command's start-up."""
    if torch.compiler.is_compiling():
        return torch.randint(-(LEVELS // 2), LEVELS // 2, tuple(shape), dtype=torch.int32, device=device)
    count = math.prod(shape)
    words = torch.empty((count + 3) // 4, dtype=torch.int64, device=device).random_(-(1 << 63), None)
    return words.view(torch.int16)[:count].view(shape)


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """A boolean mask, True with probability 1 − t / 65536 independently per element."""
    return _random_halves(shape, device) >= drop_threshold(p) - LEVELS // 2


def keep_values(shape: torch.Size | tuple[int, ...], p: float, dtype: torch.dtype,
                device: torch.device | str = "cpu", scaled: bool = False) -> torch.Tensor:
    """The same mask as ``keep_mask`` (same draws), as numbers of ``dtype``: 1 (or, with ``scaled``,
    1 / (1 − t / 65536)) where kept, 0 where dropped.

    Why numbers: on CPU, multiplying a float tensor by a boolean one converts the booleans on the fly
    and costs about 3× a float-by-float product (BENCHMARKS.md, "one mask"), while the comparison can
    write floats directly. The cost is memory: a saved mask takes 4 bytes an element instead of 1.
    """
    halves = _random_halves(shape, device)
    values = torch.ge(halves, drop_threshold(p) - LEVELS // 2, out=torch.empty(shape, dtype=dtype, device=device))
    return values.mul_(keep_scale(p)) if scaled else values


class _ScaledMask(torch.autograd.Function):
    """y = x ⊙ m · c and ∂L/∂x = ∂L/∂y ⊙ m · c.

    In fp32/fp64 the saved mask holds m · c, so each direction is a single product. In bf16/fp16 the
    mask holds m and c is a separate scalar product computed in fp32 (as torch's dropout does): c
    rounded to bf16 (1.109375 for 1/0.9) would bias the mean.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        ctx.scale = None if x.dtype in (torch.float32, torch.float64) else keep_scale(p)
        mask = keep_values(x.shape, p, x.dtype, x.device, scaled=ctx.scale is None)
        ctx.save_for_backward(mask)
        return _apply(x, mask, ctx.scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (mask,) = ctx.saved_tensors
        return _apply(grad, mask, ctx.scale), None


def _apply(x: torch.Tensor, mask: torch.Tensor, scale: float | None) -> torch.Tensor:
    out = torch.mul(x, mask)
    return out if scale is None else out.mul_(scale)


def uses_fast_path(x: torch.Tensor, p: float, training: bool) -> bool:
    """The fast masks are for CPU training only; CUDA's fused dropout is already cheap."""
    return training and p > 0.0 and x.device.type == "cpu"


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Drop-in for ``torch.nn.functional.dropout`` (not in place) with the cheaper masks on CPU."""
    if not uses_fast_path(x, p, training):
        return torch.nn.functional.dropout(x, p, training)
    return _ScaledMask.apply(x, p)


class FastDropout(nn.Dropout):
    """``nn.Dropout`` whose CPU training masks come from ``keep_values`` (same ``p`` attribute, same
    state dict, so everything that inspects a dropout module still works)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def unscaled(self, x: torch.Tensor) -> tuple[torch.Tensor, float]:
        """(x ⊙ m, c) with y = (x ⊙ m) · c: lets a caller fold the scale c into a smaller tensor.

        The adapter layer multiplies its (N × R) product by s · g ⊙ m anyway, so it folds c there
        and saves one pass over the (N × d_in) input, forward and backward.
        """
        if not uses_fast_path(x, self.p, self.training):
            return self(x), 1.0
        return x * keep_values(x.shape, self.p, x.dtype, x.device), keep_scale(self.p)


def _attention_with_fast_dropout(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                                 attention_mask: torch.Tensor | None, dropout: float = 0.0,
                                 scaling: float | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """softmax(q kᵀ · scaling + mask) with fast dropout, times v: SDPA's math, written out so the
    attention-probability dropout can use ``keep_mask``.

    Registered with transformers' ``AttentionInterface``; anything this function does not cover
    (eval mode, no dropout, CUDA, causal or grouped-query attention, position biases, soft-capping)
    goes to transformers' SDPA function unchanged.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    plain = (uses_fast_path(query, dropout, module.training) and not getattr(module, "is_causal", False)
             and query.shape[1] == key.shape[1] and kwargs.get("position_bias") is None
             and kwargs.get("softcap") is None and kwargs.get("is_causal") in (None, False))
    if not plain:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    # Scaling q (B·H·L·d_head) costs less than scaling the scores (B·H·L·L) once L > d_head.
    scores = torch.matmul(query * scaling, key.transpose(-1, -2))
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:  # SDPA's mask: True where a query may attend
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask
    # Softmax in fp32 even under bf16/fp16 autocast (as SDPA's CPU kernels accumulate), back to q's dtype.
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    # A boolean mask here (1 byte an element) although a float one multiplies faster: at 16 x 256 a
    # float mask made the floor's step 4% faster and its working memory 14% larger (+230 MB).
    kept = torch.where(keep_mask(probs.shape, dropout, probs.device), probs, 0.0)
    # The keep scale goes on the (B·H·L·d_head) output rather than the (B·H·L·L) probabilities:
    # (P ⊙ M · c) V = ((P ⊙ M) V) · c, one pass over the large tensor each way instead of three.
    out = torch.matmul(kept, value) * keep_scale(dropout)
    return out.transpose(1, 2).contiguous(), None


def _register_attention() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(ATTENTION_IMPLEMENTATION, _attention_with_fast_dropout)
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION_IMPLEMENTATION, sdpa_mask)  # same masks as SDPA


def _swap_attention(model: nn.Module) -> str | None:
    """Point an SDPA model at ``_attention_with_fast_dropout``; returns the implementation to restore."""
    config = getattr(model, "config", None)
    if getattr(config, "_attn_implementation", None) != "sdpa" or not hasattr(model, "set_attn_implementation"):
        return None
    _register_attention()
    model.set_attn_implementation(ATTENTION_IMPLEMENTATION)
    return "sdpa"


@contextmanager
def fast_dropout(model: nn.Module) -> Iterator[int]:
    """Train ``model`` with fast-dropout masks inside the block; yields how many dropouts were swapped.

    Every plain ``nn.Dropout`` with p > 0 becomes a ``FastDropout`` and SDPA attention becomes
    ``_attention_with_fast_dropout``; both are put back on exit, so what is saved or exported
    afterwards is the model as loaded.
    """
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout and child.p > 0:
                replacement = FastDropout(child.p)
                replacement.train(child.training)
                setattr(parent, name, replacement)
                swapped.append((parent, name, child))
    restore_attention = _swap_attention(model)
    try:
        yield len(swapped)
    finally:
        for parent, name, original in swapped:
            original.train(getattr(parent, name).training)
            setattr(parent, name, original)
        if restore_attention:
            model.set_attn_implementation(restore_attention)
