"""Loss terms shared by several methods."""

from __future__ import annotations

import torch

from ..layer import AdapterLinear


def orthogonal_penalty(adapters: dict[str, AdapterLinear]) -> torch.Tensor:
    """Mean over adapted matrices of ‖A Aᵀ − I‖_F + ‖Bᵀ B − I‖_F (AdaLoRA paper eq. 4).

    Un-squared Frobenius norms, as in the official AdaLoRA code and PEFT (the paper prints squared
    sums). Only slots with m = 1 count: ElaLoRA's free preallocated slots are not part of the
    current factorisation, so they must not be pulled towards unit norm.
    """
    terms = []
    for layer in adapters.values():
        A, B = layer.lora_A, layer.lora_B
        if not bool(layer.rank_mask.all()):
            idx = torch.nonzero(layer.rank_mask, as_tuple=False).flatten()
            A, B = A[idx], B[:, idx]
        eye = torch.eye(A.shape[0], device=A.device, dtype=A.dtype)
        terms.append(torch.linalg.norm(A @ A.t() - eye) + torch.linalg.norm(B.t() @ B - eye))
    return torch.stack(terms).mean()


def orthogonal_regularization(adapters: dict[str, AdapterLinear], coef: float) -> torch.Tensor | None:
    """γ · :func:`orthogonal_penalty`, or None when γ = 0 (no graph built for a zero term).

    The spec's mean runs over matrices (L terms, each ‖AAᵀ−I‖ + ‖BᵀB−I‖). PEFT and the official
    AdaLoRA code divide the same sum by the number of A and B tensors (2L), so the official γ = 0.2
    equals rankadapt's γ = 0.1: halve a pasted official ``reg_orth_coef`` for the same strength.
    """
    if not adapters or coef == 0:
        return None
    return coef * orthogonal_penalty(adapters)
