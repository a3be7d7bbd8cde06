"""Putting a method onto a model: injection, freezing and parameter accounting.

>>> adapted = prepare_model(model, MethodConfig(name="lora", lora_r=8, lora_module=["query", "value"]))
>>> print(adapted.summary())

Everything but the adapters and the classification head (classifier, and pooler where present) is
frozen; ``full`` trains everything, ``head`` only the head, ``none`` nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from ..core.config import LORA_MODULE_NAMES, MethodSettings
from ..core.errors import ModelError
from ..core.layer import AdapterLinear, LayerReport
from ..core.targets import find_targets, head_module_names
from . import Adapters, MethodPolicy, build_policy


@dataclass
class AdaptedModel:
    """A model with a method applied: the model itself, the policy, and the adapted layers."""

    model: nn.Module
    policy: MethodPolicy
    adapters: Adapters = field(default_factory=dict)
    roles: dict[str, str] = field(default_factory=dict)
    """Full module name -> the role name (``query`` ...) or pattern it was selected by."""
    head_modules: list[str] = field(default_factory=list)

    @property
    def method(self) -> str:
        return self.policy.name

    # -- accounting -------------------------------------------------------------------------------
    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def total_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def head_parameters(self) -> int:
        modules = dict(self.model.named_modules())
        return sum(p.numel() for name in self.head_modules for p in modules[name].parameters())

    def rank_pattern(self) -> dict[str, int]:
        """Allocated rank per adapted matrix, as the method defines it (see MethodPolicy.rank_pattern)."""
        return self.policy.rank_pattern(self.adapters)

    def layer_reports(self) -> list[LayerReport]:
        pattern = self.rank_pattern()
        return [layer.report(name, pattern[name]) for name, layer in self.adapters.items()]

    def adapter_parameters(self) -> int:
        """Adapter parameters at the allocated ranks, gates folded as in export: Σ r'(d_in + d_out)."""
        return sum(r.adapter_parameters for r in self.layer_reports())

    def summary(self) -> str:
        trainable, total = self.trainable_parameters(), self.total_parameters()
        lines = [f"method: {self.method}",
                 f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / max(total, 1):.3f}%)"]
        if self.adapters:
            lines.append(f"adapted matrices: {len(self.adapters)}; adapter parameters (active ranks): "
                         f"{self.adapter_parameters():,}; head parameters: {self.head_parameters():,}")
            by_role: dict[str, list[int]] = {}
            for name, rank in self.rank_pattern().items():
                by_role.setdefault(self.roles[name], []).append(rank)
            order = {role: i for i, role in enumerate(LORA_MODULE_NAMES)}
            for role, ranks in sorted(by_role.items(), key=lambda kv: order.get(kv[0], len(order))):
                lines.append(f"  {role:<18} x{len(ranks):<3} ranks {_compact(ranks)}")
        return "\n".join(lines)

    # -- merging ----------------------------------------------------------------------------------
    def merge(self) -> None:
        for layer in self.adapters.values():
            layer.merge()

    def unmerge(self) -> None:
        for layer in self.adapters.values():
            layer.unmerge()

    @contextmanager
    def merged_for_evaluation(self) -> Iterator[None]:
        """ΔW folded into W inside the block, so an evaluation pass costs what the frozen model's
        forward costs (about 10% less than the adapter's product on CPU; BENCHMARKS.md); on exit W is
        restored from a copy rather than by subtracting ΔW, so rounding leaves no trace in training,
        checkpoints or exports. Only for passes that do not train: W + ΔW has no gradient to A, B."""
        layers = [layer for layer in self.adapters.values() if not layer.merged]
        originals = [layer.base.weight.detach().clone() for layer in layers]
        try:
            for layer in layers:
                layer.merge()
            yield
        finally:
            for layer, weight in zip(layers, originals):
                layer.unmerge(original=weight)


def _compact(ranks: list[int]) -> str:
    if len(set(ranks)) == 1:
        return f"{ranks[0]} each"
    return "[" + " ".join(str(r) for r in ranks) + "]"


def prepare_model(model: nn.Module, config: MethodSettings, role_patterns: dict[str, str] | None = None,
                  default_heads: list[str] | None = None) -> AdaptedModel:
    """Apply ``config``'s method to ``model`` in place and return the handle.

    ``role_patterns`` and ``default_heads`` come from the task family (``TaskFamily.role_patterns``,
    ``head_modules``) when its models are not the classifiers of :mod:`rankadapt.core.targets`:
    the regexes of the ``lora_module`` names, and the modules trained in full unless
    ``method.modules_to_save`` says otherwise. Seed the RNG before calling: adapter initialisation
    draws from torch's global generator.
    """
    policy = build_policy(config)
    heads = _head_modules(model, config, default_heads)
    adapted = AdaptedModel(model=model, policy=policy, head_modules=heads)
    if policy.injects_adapters:
        adapted.roles = find_targets(model, config.lora_module, config.target_modules, role_patterns, heads)
        adapted.adapters = inject_adapters(model, adapted.roles, policy)
    set_trainable(adapted)
    return adapted


def _head_modules(model: nn.Module, config: MethodSettings, default: list[str] | None = None) -> list[str]:
    if config.modules_to_save is None:
        return head_module_names(model) if default is None else list(default)
    modules = dict(model.named_modules())
    missing = [m for m in config.modules_to_save if m not in modules]
    if missing:
        raise ModelError(f"method.modules_to_save names modules the model lacks: {', '.join(missing)}; "
                         f"the model's head modules are: {', '.join(head_module_names(model)) or 'none found'}")
    return list(config.modules_to_save)


def inject_adapters(model: nn.Module, targets: dict[str, str], policy: MethodPolicy) -> Adapters:
    """Replace each target ``nn.Linear`` with an :class:`AdapterLinear` built by ``policy``."""
    adapters: Adapters = {}
    for name in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        base = getattr(parent, child)
        if isinstance(base, AdapterLinear):
            raise ModelError(f"{name} is already adapted; load a fresh base model")
        layer = AdapterLinear(base, capacity=policy.capacity(), scale=policy.scale(),
                              dropout=policy.config.lora_dropout, gate_trainable=policy.gate_trainable)
        policy.init_adapter(layer)
        setattr(parent, child, layer)
        adapters[name] = layer
    return adapters


def attach_lora(adapted: AdaptedModel, name: str, A: torch.Tensor, B: torch.Tensor, scale: float) -> AdapterLinear:
    """Wrap module ``name`` in a plain LoRA layer holding trained factors (loading adapters from disk)."""
    parent_name, _, child = name.rpartition(".")
    parent = adapted.model.get_submodule(parent_name) if parent_name else adapted.model
    layer = AdapterLinear(getattr(parent, child), capacity=A.shape[0], scale=scale)
    with torch.no_grad():
        layer.lora_A.copy_(A)
        layer.lora_B.copy_(B)
    setattr(parent, child, layer)
    adapted.adapters[name] = layer
    adapted.roles[name] = name.split(".")[-1]
    return layer


def set_trainable(adapted: AdaptedModel) -> None:
    policy, model = adapted.policy, adapted.model
    for param in model.parameters():
        param.requires_grad_(policy.trains_base)
    if policy.trains_head:
        for name in adapted.head_modules:
            model.get_submodule(name).requires_grad_(True)
    for layer in adapted.adapters.values():
        layer.lora_A.requires_grad_(True)
        layer.lora_B.requires_grad_(True)
        if layer.gate_trainable:
            layer.lora_E.requires_grad_(True)


def trainable_state_dict(adapted: AdaptedModel) -> dict[str, torch.Tensor]:
    """What a checkpoint must hold of the model: trainable tensors plus the rank masks and gates.

    For ``full`` that is the whole model; otherwise adapters (A, B, g, m) and the head.
    """
    keep = {n for n, p in adapted.model.named_parameters() if p.requires_grad}
    state = adapted.model.state_dict()
    return {k: v.detach().clone() for k, v in state.items()
            if k in keep or k.endswith((".rank_mask", ".lora_E")) or _in_head(k, adapted.head_modules)}


def _in_head(key: str, heads: list[str]) -> bool:
    return any(key.startswith(h + ".") for h in heads)
