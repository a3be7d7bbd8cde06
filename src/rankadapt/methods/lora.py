"""LoRA (Hu et al. 2021, arXiv 2106.09685): R = r, g ≡ 1 fixed, m ≡ 1, s = α / r.

The base :class:`~rankadapt.methods.base.MethodPolicy` already is LoRA (Kaiming-uniform A, B = 0,
no regulariser, no hooks); this registers it under its name.
"""

from __future__ import annotations

from .base import MethodPolicy, register_method


@register_method
class LoRA(MethodPolicy):
    name = "lora"
