"""Loss terms shared by several methods."""

from __future__ import annotations

import torch

from ..core.layer import AdapterLinear


def orthogonal_penalty(adapters: dict[str, AdapterLinear]) -> torch.Tensor:
    """Σ over adapted matrices of (‖A Aᵀ − I‖_F + ‖Bᵀ B − I‖_F), divided by 2L for L matrices.

    AdaLoRA paper eq. 4's R(P, Q), with the official normalisation: the official AdaLoRA trainer
    (``compute_orth_regu``) and PEFT (``AdaLoraModel.forward``) divide the sum of norms by the number of
    A *and* B tensors, 2L, so a pasted official ``reg_orth_coef`` runs at the official strength
    (docs/methods/adalora.md). Un-squared Frobenius norms, as in that code (the paper prints squared
    sums). Only slots with m = 1 count: ElaLoRA's free preallocated slots are not part of the current
    factorisation, so they must not be pulled towards unit norm.
    """
    terms = []
    for layer in adapters.values():
        A, B = layer.lora_A, layer.lora_B
        if not bool(layer.rank_mask.all()):
            idx = torch.nonzero(layer.rank_mask, as_tuple=False).flatten()
            A, B = A[idx], B[:, idx]
        eye = torch.eye(A.shape[0], device=A.device, dtype=A.dtype)
        terms.append(torch.linalg.norm(A @ A.t() - eye) + torch.linalg.norm(B.t() @ B - eye))
    return torch.stack(terms).sum() / (2 * len(terms))


def orthogonal_regularization(adapters: dict[str, AdapterLinear], coef: float) -> torch.Tensor | None:
    """γ · :func:`orthogonal_penalty`, or None when γ = 0 (no graph built for a zero term).

    γ = ``reg_orth_coef`` means what it means in the official AdaLoRA/ElaLoRA/RM-LoRA code and in
    PEFT's ``orth_reg_weight``. Earlier rankadapt divided by L, not 2L (the same γ was
    twice as strong): an older config's γ, doubled, keeps its regime.
    """
    if not adapters or coef == 0:
        return None
    return coef * orthogonal_penalty(adapters)
