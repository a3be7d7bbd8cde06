"""LoRA (Hu et al. 2021, arXiv 2106.09685; docs/methods/lora.md): R = r, g ≡ 1 fixed, m ≡ 1, s = α / r.

The base :class:`~rankadapt.methods.base.MethodPolicy` already is LoRA (Kaiming-uniform A, B = 0,
no regulariser, no hooks, a uniform-rank budget plan); this registers it under its name with the
shared adapter settings.
"""

from __future__ import annotations

from typing import Literal

from .base import MethodPolicy, register_method
from .settings import AdapterSettings


class LoRASettings(AdapterSettings):
    """LoRA's keys: the shared adapter keys only."""

    name: Literal["lora"] = "lora"


@register_method
class LoRA(MethodPolicy):
    name = "lora"
    settings = LoRASettings
    # --apply_lora (or a --lora_path to start from) also appears in the AdaLoRA/ElaLoRA/SoRA commands.
    glue_selectors = ("apply_lora", "lora_path")
    glue_fallback = True
