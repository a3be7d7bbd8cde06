"""Settings every adapter method shares (loralib's names), as one base class for the method modules.

A method module subclasses :class:`AdapterSettings` (or :class:`~rankadapt.core.config.MethodSettings`
for a method without adapters), adds its own keys with defaults and docstrings, and names itself with
``name: Literal["mine"] = "mine"``; ``register_method`` then makes ``method.name: mine`` validate with it.
"""

from __future__ import annotations

import difflib

from pydantic import Field, field_validator

from ..core.config import LORA_MODULE_NAMES, MethodSettings


class AdapterSettings(MethodSettings):
    """Keys of every method that injects adapters ΔW = s · B · diag(g ⊙ m) · A (docs/methods/README.md)."""

    lora_r: int = Field(8, gt=0)
    """Rank (LoRA, SoRA, RM-LoRA) or initial rank (AdaLoRA, ElaLoRA) of every adapted matrix."""
    lora_alpha: float = Field(16.0, gt=0.0)
    """Scale numerator: s = lora_alpha / lora_r, constant for the whole run."""
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """Dropout on the adapter's input x before A (LoRA's lora_dropout); 0 = none."""
    lora_module: list[str] = Field(default_factory=lambda: ["query", "value"])
    """Which linear maps to adapt, by the source repositories' names: query, key, value,
    attention.output, intermediate, layer.output (encoders, ViTs); q_proj, k_proj, v_proj, out_proj,
    fc1, fc2 (encoder-decoders, in encoder, decoder and cross-attention)."""
    target_modules: list[str] | None = None
    """Regular expressions over full module names, for architectures rankadapt has no map for.
    Replaces ``lora_module`` when given."""
    budget: int | None = Field(None, gt=0)
    """Target number of final adapter parameters; sets the rank settings to match (sweeps)."""

    @field_validator("lora_module")
    @classmethod
    def _known_module_names(cls, names: list[str]) -> list[str]:
        for name in names:
            if name not in LORA_MODULE_NAMES:
                close = difflib.get_close_matches(name, LORA_MODULE_NAMES, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(f"method.lora_module: unknown module name {name!r}{hint}; choose from "
                                 f"{', '.join(LORA_MODULE_NAMES)}")
        return names

    @property
    def is_adapter(self) -> bool:
        return True
