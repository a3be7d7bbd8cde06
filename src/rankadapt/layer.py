"""The one adapter layer every method shares (ALGORITHMS.md, notation).

An adapted linear map keeps its frozen weight W (d_out x d_in) and adds

    ΔW = s · B · diag(g ⊙ m) · A

with A (R x d_in), B (d_out x R), a per-rank gate / singular value g (R), an active-rank mask
m ∈ {0,1}^R, R capacity slots and a constant scale s. The forward pass is

    y = x Wᵀ + b + s · ((dropout(x) Aᵀ) ⊙ (g ⊙ m)) Bᵀ

LoRA is g ≡ 1, m ≡ 1; AdaLoRA makes g trainable (λ, the singular values) and masks by zeroing λ;
ElaLoRA preallocates R > r slots and moves ranks by flipping m; SoRA makes g a trainable gate that a
proximal step drives to exactly 0; RM-LoRA masks gradients of A and B. The methods are policies over
this layer (``rankadapt.methods``); the layer itself knows nothing about them.

Parameter names follow PEFT (``lora_A``, ``lora_B``, ``lora_E`` for AdaLoRA's singular values) so
that state dicts read naturally next to PEFT's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .dropout import FastDropout


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
            :class:`rankadapt.dropout.FastDropout` in CPU training; its 1 / (1 - p) is then folded
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

    # ---------------------------------------------------------------------------------------------
    @property
    def gate_trainable(self) -> bool:
        return isinstance(self.lora_E, nn.Parameter)

    def rank_weights(self) -> torch.Tensor:
        """s · (g ⊙ m): the per-rank multiplier between A and B."""
        return self.scale * self.lora_E * self.rank_mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base(x)
        if self.merged:
            return result
        if isinstance(self.dropout, FastDropout):
            dropped, keep_scale = self.dropout.unscaled(x)
        else:
            dropped, keep_scale = self.dropout(x), 1.0
        hidden = dropped @ self.lora_A.t()
        # One (N x R) elementwise product applies s, the gate and the mask together (and fast
        # dropout's 1 / (1 - p)); it costs R/d of one matmul, so the layer keeps a single code path
        # for every method.
        weights = self.rank_weights() if keep_scale == 1.0 else self.rank_weights() * keep_scale
        hidden = hidden * weights.to(hidden.dtype)
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
        """A plain-LoRA factorisation of ΔW over the active ranks only (ALGORITHMS.md §8).

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
    def unmerge(self) -> None:
        if self.merged:
            self.base.weight -= self.delta_weight().to(self.base.weight.dtype)
            self.merged = False

    def report(self, name: str, rank: int | None = None) -> LayerReport:
        """Sizes and rank; ``rank`` is the policy's allocated rank (default: slots contributing to ΔW)."""
        return LayerReport(name, self.in_features, self.out_features, self.capacity,
                           self.active_rank() if rank is None else rank)

    def extra_repr(self) -> str:
        return (f"in={self.in_features}, out={self.out_features}, capacity={self.capacity}, "
                f"scale={self.scale:g}, gate_trainable={self.gate_trainable}, merged={self.merged}")
