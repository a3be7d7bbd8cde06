"""microsoft/LoRA ``loralib`` checkpoints: read, evaluate, write.

``loralib.lora_state_dict(model)`` saves, for every ``lora.Linear``, ``<module>.lora_A`` (r × d_in) and
``<module>.lora_B`` (d_out × r), with ΔW = (lora_alpha / r) · B A; the NLU examples' released
checkpoints (``roberta_base_lora_rte.bin`` ...) add the classifier head. ``lora_alpha`` is not in the
file: it is the ``--lora_alpha`` of the command that trained it, so it is an argument here.

Module names are those of the model the checkpoint was trained on (``roberta.encoder.layer.0.
attention.self.query``); they are matched to this model's modules as written, without their first
component, or under this model's own prefix (``bert.`` …), so a checkpoint with a ``roberta.`` or
``deberta.`` prefix loads onto the same architecture however it was wrapped. ``MergedLinear``
(GPT-2's fused ``c_attn``) and ``lora.Embedding`` checkpoints are not encoder-classifier adapters and
are rejected with a message.

Writing (:func:`save_loralib`) exports any rankadapt adapter as a loralib state dict. loralib has one
``lora_alpha`` for the whole model while rankadapt's scales are per module (AdaLoRA's per-module
ranks), so each B is rescaled by s · r / lora_alpha: reading the file back with the same
``lora_alpha`` gives the same ΔW, and the same logits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.config import MethodConfig
from ..core.errors import ModelError
from ..core.layer import AdapterLinear
from ..core.targets import head_module_names
from . import build_policy
from .adapting import AdaptedModel, attach_lora, set_trainable
from .init_from import AdapterFactors

_A, _B = ".lora_A", ".lora_B"


def read_loralib_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a loralib checkpoint (``torch.save`` of a state dict, or safetensors)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"loralib checkpoint {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a pickle of arbitrary objects, a truncated file ...
        raise ModelError(f"cannot read {path} as a loralib checkpoint (a torch.save'd state dict): {err}") from None
    for wrapper in ("state_dict", "model"):  # some scripts save {"model": state_dict}
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{path} does not hold a state dict of tensors; save it with torch.save(lora.lora_state_dict(model))")
    if not any(k.endswith(_A) for k in state):
        embedding = any("lora_embedding_A" in k for k in state)
        what = "LoRA on embeddings (lora.Embedding), which rankadapt does not adapt" if embedding else \
            "no '<module>.lora_A' / '<module>.lora_B' keys"
        raise ModelError(f"{path} is not a loralib checkpoint of linear layers: {what}")
    return state


def _resolve(name: str, known: dict[str, Any], prefix: str) -> str | None:
    """``name`` as written, without its first component, or under the model's own prefix."""
    rest = name.split(".", 1)[1] if "." in name else name
    for candidate in (name, rest, f"{prefix}.{name}", f"{prefix}.{rest}"):
        if candidate in known:
            return candidate
    return None


def loralib_factors(state: dict[str, torch.Tensor], model: nn.Module, lora_alpha: float,
                    origin: str = "") -> AdapterFactors:
    """Match a loralib state dict to ``model``: per-module (A, B, alpha / r), plus the other tensors."""
    modules = dict(model.named_modules())
    own_state = model.state_dict()
    prefix = getattr(model, "base_model_prefix", "") or ""
    factors: dict[str, tuple[torch.Tensor, torch.Tensor, float]] = {}
    for key in sorted(k for k in state if k.endswith(_A)):
        written = key[: -len(_A)]
        if written + _B not in state:
            raise ModelError(f"{origin}: {key} has no matching {written}{_B}")
        name = _resolve(written, modules, prefix)
        if name is None or not isinstance(modules[name], (nn.Linear, AdapterLinear)):  # adapted: init_from
            raise ModelError(f"{origin}: {written} matches no linear module of this model; load the checkpoint onto "
                             f"the architecture it was trained on (this model's prefix is {prefix!r})")
        A, B = state[key].float(), state[written + _B].float()
        linear = modules[name]
        if B.shape[0] != linear.out_features or B.shape[1] != A.shape[0]:
            raise ModelError(f"{origin}: {written}: lora_B is {tuple(B.shape)} for a {linear.out_features}-output layer "
                             f"with rank {A.shape[0]}; MergedLinear (fused qkv) checkpoints are not supported")
        if A.shape[1] != linear.in_features:
            raise ModelError(f"{origin}: {written}: lora_A has {A.shape[1]} inputs, the layer {linear.in_features}; "
                             "use the base model the checkpoint was trained on")
        factors[name] = (A, B, float(lora_alpha) / A.shape[0])
    others: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if ".lora_" in key:
            continue
        name = _resolve(key, own_state, prefix)
        if name is None:
            raise ModelError(f"{origin}: the checkpoint holds {key}, which this model lacks; "
                             "load it onto the architecture it was trained on")
        others[name] = value
    return AdapterFactors(factors, others, origin=origin)


def adapted_from_factors(model: nn.Module, source: AdapterFactors) -> AdaptedModel:
    """Plain LoRA adapters with the source's per-module ranks and scales, its other tensors loaded."""
    policy = build_policy(MethodConfig(name="lora"))
    adapted = AdaptedModel(model=model, policy=policy, head_modules=head_module_names(model))
    for name, (A, B, scale) in source.factors.items():
        attach_lora(adapted, name, A, B, scale)
    _load_others(model, source)
    set_trainable(adapted)
    return adapted


def _load_others(model: nn.Module, source: AdapterFactors) -> None:
    own = model.state_dict()
    for key, value in source.others.items():
        if own[key].shape != value.shape:
            raise ModelError(f"{source.origin}: {key} is {tuple(value.shape)} in the checkpoint but {tuple(own[key].shape)} "
                             "here; a classifier of another width means another label count: evaluate on the task "
                             "it was trained on")
    model.load_state_dict(source.others, strict=False)


def load_loralib(model: nn.Module, path: str | Path, lora_alpha: float) -> AdaptedModel:
    """Put a loralib checkpoint onto ``model`` (in place) as LoRA adapters; returns the handle."""
    source = loralib_factors(read_loralib_state(path), model, lora_alpha, origin=str(path))
    return adapted_from_factors(model, source)


def loralib_state_dict(adapted: AdaptedModel, lora_alpha: float) -> dict[str, torch.Tensor]:
    """Any rankadapt adapter as a loralib state dict for one global ``lora_alpha`` (see module docstring)."""
    state: dict[str, torch.Tensor] = {}
    for name, layer in adapted.adapters.items():
        A, B = layer.export_factors()
        rank = A.shape[0]
        if rank == 0:
            continue
        state[name + _A] = A.contiguous().cpu()
        state[name + _B] = (B * (layer.scale * rank / lora_alpha)).contiguous().cpu()
    for head in adapted.head_modules:
        for key, value in adapted.model.get_submodule(head).state_dict().items():
            state[f"{head}.{key}"] = value.detach().clone().cpu()
    return state


def save_loralib(adapted: AdaptedModel, path: str | Path, lora_alpha: float) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(loralib_state_dict(adapted, lora_alpha), path)
    return path


