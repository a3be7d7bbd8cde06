"""The one adapter layer every method shares (docs/methods/README.md).

An adapted linear map keeps its frozen weight W (d_out x d_in) and adds

    ΔW = s · B · diag(g ⊙ m) · A

with A (R x d_in), B (d_out x R), a per-rank gate / singular value g (R), an active-rank mask
m ∈ {0,1}^R, R capacity slots and a constant scale s. The forward pass is

    y = x Wᵀ + b + s · ((dropout(x) Aᵀ) ⊙ (g ⊙ m)) Bᵀ

computed in one autograd function (``_AdapterProduct``) that accumulates the low-rank update into the
frozen product's output and input gradient instead of adding separate tensors.

LoRA is g ≡ 1, m ≡ 1; AdaLoRA makes g trainable (λ, the singular values) and masks by zeroing λ;
ElaLoRA preallocates R > r slots and moves ranks by flipping m; SoRA makes g a trainable gate that a
proximal step drives to exactly 0; RM-LoRA masks gradients of A and B. The methods are policies over
this layer (``rankadapt.methods``); the layer itself knows nothing about them.

Parameter names follow PEFT (``lora_A``, ``lora_B``, ``lora_E`` for AdaLoRA's singular values) so
that state dicts read naturally next to PEFT's.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from .dropout import FastDropout, keep_scale, keep_values, uses_fast_path


@dataclass(frozen=True)
class LayerReport:
    """What one adapted matrix holds now."""

    name: str
    d_in: int
    d_out: int
    capacity: int
    active_rank: int

    @property
    def adapter_parameters(self) -> int:
        """Parameters of the exported LoRA (gate folded into A): r' (d_in + d_out)."""
        return self.active_rank * (self.d_in + self.d_out)


class AdapterLinear(nn.Module):
    """An ``nn.Linear`` plus the low-rank update ``s · B · diag(g ⊙ m) · A``.

    Args:
        base: the linear map to adapt; its weight and bias are frozen here.
        capacity: R, the number of rank slots (``lora_r``, or ``max_rank`` for ElaLoRA).
        scale: s, constant for the whole run (``lora_alpha / lora_r``).
        dropout: dropout probability on the adapter's input (the trainer swaps the ``nn.Dropout`` for
            :class:`rankadapt.core.dropout.FastDropout` in CPU training; its 1 / (1 - p) is then folded
            into the (N x R) rank product).
        gate_trainable: whether g is a trainable Parameter (AdaLoRA, ElaLoRA, SoRA) or a fixed
            buffer of ones (LoRA, RM-LoRA).
    """

    def __init__(self, base: nn.Linear, capacity: int, scale: float, dropout: float = 0.0,
                 gate_trainable: bool = False) -> None:
        super().__init__()
        if capacity <= 0:
            raise ValueError(f"adapter capacity must be positive, got {capacity}")
        self.base = base
        self.base.weight.requires_grad_(False)
        if self.base.bias is not None:
            self.base.bias.requires_grad_(False)
        self.in_features = base.in_features
        self.out_features = base.out_features
        self.capacity = capacity
        self.scale = float(scale)
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Parameter(torch.zeros(capacity, self.in_features, **factory))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, capacity, **factory))
        gate = torch.ones(capacity, **factory)
        if gate_trainable:
            self.lora_E = nn.Parameter(gate)
        else:
            self.register_buffer("lora_E", gate)
        # m: kept in the state dict so a checkpoint restores the rank pattern exactly.
        self.register_buffer("rank_mask", torch.ones(capacity, **factory))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        # The fused autograd function (``_AdapterProduct``) by default; False runs the same formula as
        # separate autograd operations (benchmarks measure one against the other; tests compare them).
        self.fused_product = True

    # ---------------------------------------------------------------------------------------------
    @property
    def gate_trainable(self) -> bool:
        return isinstance(self.lora_E, nn.Parameter)

    @property
    def weight(self) -> torch.Tensor:
        """The base map's weight W (read-only here), for model code that reads ``layer.weight``: T5's
        feed-forward casts to ``wo.weight.dtype``. PEFT's LoRA layers expose it the same way."""
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        """The base map's bias b (read-only here), as :attr:`weight`."""
        return self.base.bias

    def rank_weights(self, input_scale: float = 1.0) -> torch.Tensor:
        """s · (g ⊙ m): the per-rank multiplier between A and B; ``input_scale`` folds in one more
        factor (fast dropout's 1 / (1 - p)) at the cost of R multiplications."""
        weights = self.scale * self.lora_E * self.rank_mask
        return weights if input_scale == 1.0 else weights * input_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return self.base(x)
        masking = None if not self.fused_product or self._base_trainable() else self._input_masking(x)
        if masking is None:
            return self._composed_forward(x)
        keep, input_scale = masking
        return _AdapterProduct.apply(x, keep, self.base.weight, self.base.bias, self.lora_A, self.lora_B,
                                     self.rank_weights(input_scale))

    def _input_masking(self, x: torch.Tensor) -> tuple[torch.Tensor | None, float] | None:
        """How the fused product drops the adapter's input: (None, 1) without dropout, (0/1 keep mask,
        1 / (1 - p)) with fast dropout; None when only torch's dropout can (CUDA, fast dropout off)."""
        if isinstance(self.dropout, nn.Identity) or not self.training:
            return None, 1.0
        if isinstance(self.dropout, FastDropout) and uses_fast_path(x, self.dropout.p, True):
            # 0/1 in the dtype the products run in (a float mask multiplies ~3x faster than a bool one).
            keep = keep_values(x.shape, self.dropout.p, _compute_dtype(x), x.device)
            return keep, keep_scale(self.dropout.p)
        return None

    def _base_trainable(self) -> bool:
        """The fused function leaves W and b frozen (it returns no gradient for them)."""
        return self.base.weight.requires_grad or (self.base.bias is not None and self.base.bias.requires_grad)

    def _composed_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The same y from stock autograd operations (torch's dropout; and the before of benchmarks)."""
        result = self.base(x)
        if isinstance(self.dropout, FastDropout):
            dropped, input_scale = self.dropout.unscaled(x)
        else:
            dropped, input_scale = self.dropout(x), 1.0
        hidden = dropped @ self.lora_A.t()
        # One (N x R) elementwise product applies s, the gate and the mask together (and fast
        # dropout's 1 / (1 - p)); it costs R/d of one matmul, so the layer keeps a single code path
        # for every method.
        hidden = hidden * self.rank_weights(input_scale).to(hidden.dtype)
        return result + hidden @ self.lora_B.t()

    # ---------------------------------------------------------------------------------------------
    def active_indices(self) -> torch.Tensor:
        """Slots that contribute to ΔW: active in the mask and with a non-zero gate."""
        return torch.nonzero((self.rank_mask != 0) & (self.lora_E != 0), as_tuple=False).flatten()

    def active_rank(self) -> int:
        return int(self.active_indices().numel())

    @torch.no_grad()
    def delta_weight(self) -> torch.Tensor:
        """ΔW = s · B · diag(g ⊙ m) · A, shape (d_out, d_in)."""
        return (self.lora_B * self.rank_weights()) @ self.lora_A

    @torch.no_grad()
    def export_factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A plain-LoRA factorisation of ΔW over the active ranks only (docs/methods/README.md).

        Returns ``(A', B')`` with A' = diag(g ⊙ m)[idx] · A[idx] and B' = B[:, idx], so that
        ΔW = s · B' A'. A rank-0 layer returns tensors with zero rows/columns.
        """
        idx = self.active_indices()
        gate = (self.lora_E * self.rank_mask)[idx]
        return (self.lora_A[idx] * gate[:, None]).clone(), self.lora_B[:, idx].clone()

    @torch.no_grad()
    def merge(self) -> None:
        """W ← W + ΔW; the forward pass then costs what the base layer costs."""
        if not self.merged:
            self.base.weight += self.delta_weight().to(self.base.weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self, original: torch.Tensor | None = None) -> None:
        """W ← W − ΔW, or W ← ``original`` (the weight before ``merge``, exact where subtracting
        leaves rounding)."""
        if self.merged:
            if original is None:
                self.base.weight -= self.delta_weight().to(self.base.weight.dtype)
            else:
                self.base.weight.copy_(original)
            self.merged = False

    def report(self, name: str, rank: int | None = None) -> LayerReport:
        """Sizes and rank; ``rank`` is the policy's allocated rank (default: slots contributing to ΔW)."""
        return LayerReport(name, self.in_features, self.out_features, self.capacity,
                           self.active_rank() if rank is None else rank)

    def extra_repr(self) -> str:
        return (f"in={self.in_features}, out={self.out_features}, capacity={self.capacity}, "
                f"scale={self.scale:g}, gate_trainable={self.gate_trainable}, merged={self.merged}")


class _AdapterProduct(torch.autograd.Function):
    """y = x Wᵀ + b + ((x ⊙ k) Aᵀ ⊙ w) Bᵀ for a frozen W, b, in one autograd node.

    k is the adapter's keep mask (None: no dropout), w = s · g ⊙ m (· 1 / (1 − p)) the per-rank
    weights. What it saves over the same formula as separate autograd operations (the layer's
    ``_composed_forward``): the up-projection is accumulated into the base product's output
    (``addmm_``) instead of being written to a new (N × d_out) tensor and added, and in the backward
    pass the adapter's input gradient (∂L/∂h ⊙ w) A is accumulated into x's gradient through W in
    the same way, instead of autograd adding two (N × d_in) gradients. Those adds were most of the
    adapter's cost over the frozen model on CPU (BENCHMARKS.md, "the fused adapter product"):
    with R = 8 the rank products are thin and every (N × d) pass is memory-bound.

    Gradients (h = (x ⊙ k) Aᵀ, G = ∂L/∂y, both flattened to N rows):
        ∂L/∂B = Gᵀ (h ⊙ w)          ∂L/∂A = ((G B) ⊙ w)ᵀ (x ⊙ k)
        ∂L/∂w = Σ_n (G B ⊙ h)_n     ∂L/∂x = G W + ((G B ⊙ w) A) ⊙ k
    Under autocast every product runs in the autocast dtype, as ``F.linear`` and ``@`` would, with x
    cast once instead of once per product.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, keep: torch.Tensor | None, weight: torch.Tensor, bias: torch.Tensor | None,
                lora_A: torch.Tensor, lora_B: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        dtype = _compute_dtype(x)
        ctx.input_dtypes = (x.dtype, lora_A.dtype, lora_B.dtype, weights.dtype)
        ctx.x_shape = x.shape
        with _autocast_off(x):
            flat = x.reshape(-1, x.shape[-1]).to(dtype)
            adapter_input = flat if keep is None else flat * keep.reshape(flat.shape)
            W, A, B, w = (t.to(dtype) for t in (weight, lora_A, lora_B, weights))
            hidden = adapter_input @ A.t()
            out = torch.nn.functional.linear(flat, W, None if bias is None else bias.to(dtype))
            out.addmm_(hidden * w, B.t())
        ctx.save_for_backward(adapter_input, keep, W, A, B, w, hidden)
        return out.view(*x.shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        adapter_input, keep, W, A, B, w, hidden = ctx.saved_tensors
        need_x, _, _, _, need_A, need_B, need_w = ctx.needs_input_grad
        x_dtype, A_dtype, B_dtype, w_dtype = ctx.input_dtypes
        grad_x = grad_A = grad_B = grad_w = None
        with _autocast_off(grad_out):
            G = grad_out.reshape(-1, grad_out.shape[-1]).to(W.dtype)
            grad_scaled = G @ B                      # ∂L/∂(h ⊙ w), (N × R)
            grad_hidden = grad_scaled * w            # ∂L/∂h
            if need_B:
                grad_B = (G.t() @ (hidden * w)).to(B_dtype)
            if need_A:
                grad_A = (grad_hidden.t() @ adapter_input).to(A_dtype)
            if need_w:
                grad_w = (grad_scaled * hidden).sum(0, dtype=torch.float32).to(w_dtype)
            if need_x:
                grad_x = G @ W
                if keep is None:
                    grad_x.addmm_(grad_hidden, A)
                else:
                    grad_x.addcmul_(grad_hidden @ A, keep.reshape(grad_x.shape))
                grad_x = grad_x.view(ctx.x_shape).to(x_dtype)
        return grad_x, None, None, None, grad_A, grad_B, grad_w


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype ``F.linear`` would compute in: autocast's for eligible inputs, else x's own."""
    device_type = x.device.type
    if x.dtype != torch.float64 and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return x.dtype


def _autocast_off(x: torch.Tensor):
    """A block where autocast does not recast what the fused function already cast by hand."""
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()
