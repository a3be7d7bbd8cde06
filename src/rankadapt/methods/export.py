"""Export to stock PEFT, loading back, and merged export (docs/methods/README.md).

A trained adapter of any method is a plain LoRA with per-module ranks: keep the active ranks, fold
g into A (A' = diag(g ⊙ m)·A on those rows), take the matching columns of B, and set the per-module
alpha so that alpha'/r' = s. Modules left with rank 0 are dropped. The head is saved through PEFT's
``modules_to_save``. The directory holds ``adapter_config.json`` + ``adapter_model.safetensors``
(what ``PeftModel.from_pretrained`` reads) and ``rankadapt.json`` (which method made it, its
rank pattern and capacities, for humans and for ``rankadapt eval``).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..core.config import MethodConfig
from ..core.errors import ModelError
from ..core.layer import AdapterLinear
from ..core.ownership import atomic_dir
from . import build_policy
from .adapting import AdaptedModel, attach_lora, set_trainable

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
RANKADAPT_META = "rankadapt.json"
_PREFIX = "base_model.model."


def peft_config_dict(adapted: AdaptedModel, base_model: str | None, task_type: str = "SEQ_CLS"
                     ) -> tuple[dict[str, Any], dict[str, int]]:
    """The ``adapter_config.json`` contents and the per-module export ranks (``task_type``: PEFT's,
    from the task family: ``SEQ_CLS`` for classifiers of text and images, ``SEQ_2_SEQ_LM``)."""
    ranks = {name: layer.active_rank() for name, layer in adapted.adapters.items()}
    ranks = {name: r for name, r in ranks.items() if r > 0}
    if not ranks:
        raise ModelError("every adapted matrix has rank 0, so there is no LoRA to export; "
                         "export a merged model instead (rankadapt export RUN_DIR --merged OUT_DIR)")
    alphas = {name: adapted.adapters[name].scale * r for name, r in ranks.items()}
    # The most common (r, alpha) is the default; other modules go to rank_pattern / alpha_pattern.
    default_r = Counter(ranks.values()).most_common(1)[0][0]
    default_alpha = Counter(alphas.values()).most_common(1)[0][0]
    config = {
        "peft_type": "LORA",
        "task_type": task_type,
        "base_model_name_or_path": base_model,
        "r": default_r,
        "lora_alpha": default_alpha,
        "lora_dropout": adapted.policy.config.lora_dropout,
        "target_modules": sorted(ranks),
        "rank_pattern": {n: r for n, r in ranks.items() if r != default_r},
        "alpha_pattern": {n: a for n, a in alphas.items() if a != default_alpha},
        "modules_to_save": list(adapted.head_modules),
        "bias": "none",
        "fan_in_fan_out": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "use_rslora": False,
        "use_dora": False,
    }
    return config, ranks


def peft_state_dict(adapted: AdaptedModel, ranks: dict[str, int]) -> dict[str, torch.Tensor]:
    """Tensors under the key names PEFT saves (``base_model.model.<module>.lora_A.weight`` ...)."""
    state: dict[str, torch.Tensor] = {}
    for name in ranks:
        A, B = adapted.adapters[name].export_factors()
        state[f"{_PREFIX}{name}.lora_A.weight"] = A.contiguous()
        state[f"{_PREFIX}{name}.lora_B.weight"] = B.contiguous()
    modules = dict(adapted.model.named_modules())
    for head in adapted.head_modules:
        for key, value in modules[head].state_dict().items():
            state[f"{_PREFIX}{head}.{key}"] = value.detach().clone().contiguous()
    return {k: v.cpu() for k, v in state.items()}


def export_peft(adapted: AdaptedModel, out_dir: str | os.PathLike, base_model: str | None = None,
                extra_meta: dict[str, Any] | None = None, task_type: str = "SEQ_CLS") -> Path:
    """Write a stock-PEFT LoRA adapter directory (atomically: a crash leaves the old one intact)."""
    config, ranks = peft_config_dict(adapted, base_model, task_type)
    meta = {
        "method": adapted.method,
        "method_config": adapted.policy.config.model_dump(mode="json"),
        "rank_pattern": adapted.rank_pattern(),
        "export_ranks": ranks,
        "capacity": {n: layer.capacity for n, layer in adapted.adapters.items()},
        "roles": adapted.roles,
        "adapter_parameters": adapted.adapter_parameters(),
        "base_model_fingerprint": base_fingerprint(adapted.model, adapted.head_modules),
        **(extra_meta or {}),
    }
    with atomic_dir(out_dir) as tmp:
        (tmp / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2))
        (tmp / RANKADAPT_META).write_text(json.dumps(meta, indent=2))
        save_file(peft_state_dict(adapted, ranks), str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    return Path(out_dir)


def load_peft_adapter(model: nn.Module, adapter_dir: str | os.PathLike) -> AdaptedModel:
    """Load a PEFT LoRA directory (rankadapt's export or PEFT's own) onto a fresh base ``model``.

    Returns an :class:`AdaptedModel` whose adapters are plain LoRA layers with the per-module ranks
    and scales of the directory.
    """
    adapter_dir = Path(adapter_dir)
    config = _read_adapter_config(adapter_dir)
    weights_path = adapter_dir / ADAPTER_WEIGHTS
    if not weights_path.is_file():
        raise ModelError(f"{adapter_dir} has no {ADAPTER_WEIGHTS}")
    state = load_file(str(weights_path))
    lora_keys = sorted(k for k in state if k.endswith(".lora_A.weight"))
    names = [k[len(_PREFIX):-len(".lora_A.weight")] for k in lora_keys]
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    trained_on = config.get("base_model_name_or_path")
    if missing:
        raise ModelError(f"the adapter in {adapter_dir} targets modules this model lacks ({', '.join(missing[:4])}); "
                         f"load it onto the base model it was trained on ({trained_on})")
    _check_shapes(adapter_dir, modules, state, names, trained_on)
    method_config = MethodConfig(name="lora", lora_r=int(config["r"]), lora_alpha=float(config["lora_alpha"]),
                                 modules_to_save=_head_names(config, modules))
    policy = build_policy(method_config)
    adapted = AdaptedModel(model=model, policy=policy, head_modules=method_config.modules_to_save or [])
    for name in names:
        A = state[f"{_PREFIX}{name}.lora_A.weight"]
        B = state[f"{_PREFIX}{name}.lora_B.weight"]
        alpha = float(_pattern_value(config.get("alpha_pattern", {}), name, config["lora_alpha"]))
        attach_lora(adapted, name, A, B, scale=alpha / A.shape[0])
    _check_base_identity(adapter_dir, model, adapted.head_modules, trained_on)
    try:
        _load_head(model, adapted.head_modules, state)
    except RuntimeError as err:
        raise ModelError(f"the classification head saved in {adapter_dir} does not fit this model "
                         f"({str(err).splitlines()[-1].strip()}); load it onto the base model it was trained on "
                         f"({trained_on}) with the same labels") from None
    set_trainable(adapted)
    return adapted


def export_merged(adapted: AdaptedModel, out_dir: str | os.PathLike, tokenizer=None,
                  meta: dict[str, Any] | None = None) -> Path:
    """A plain transformers model directory with ΔW folded into W (no adapter cost at inference);
    ``meta`` (the run's task, labels, max length) goes to ``rankadapt.json`` beside it."""
    model = copy.deepcopy(adapted.model)
    for name, module in list(model.named_modules()):
        if isinstance(module, AdapterLinear):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.base)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        if meta:
            (tmp / RANKADAPT_META).write_text(json.dumps(meta, indent=2))
    return Path(out_dir)


# --------------------------------------------------------------------------------------------------
def base_fingerprint(model: nn.Module, head_modules: list[str]) -> str:
    """SHA-256 of the base model's weights (names, shapes, float32 values), adapters and head left out.

    Recorded in ``rankadapt.json`` at export and checked when the adapter is loaded: an adapter on
    another base model of the same shapes would load without error and silently predict nonsense.
    A wrapped layer's ``base.weight`` counts as the plain layer's ``weight``.
    """
    digest = hashlib.sha256()
    for name, param in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if leaf.startswith("lora_") or any(name.startswith(head + ".") for head in head_modules):
            continue
        values = param.detach().float().cpu().contiguous()
        digest.update(f"{name.replace('.base.', '.')}:{tuple(values.shape)};".encode())
        digest.update(values.numpy().tobytes())
    return digest.hexdigest()


def _check_base_identity(adapter_dir: Path, model: nn.Module, head_modules: list[str], trained_on: str | None) -> None:
    recorded = read_meta(adapter_dir).get("base_model_fingerprint")
    if recorded and recorded != base_fingerprint(model, head_modules):
        raise ModelError(f"the adapter in {adapter_dir} was trained on a base model with other weights than the one "
                         f"given (same shapes, different values); evaluate it on the base model it was trained on "
                         f"({trained_on}): drop model.name or set model.name to that model")


def read_meta(directory: Path) -> dict[str, Any]:
    """``rankadapt.json`` of an adapter or merged-model directory ({} for a plain PEFT adapter or
    transformers model)."""
    path = Path(directory) / RANKADAPT_META
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        raise ModelError(f"{path} is not valid JSON; restore it or re-export") from None


def _check_shapes(adapter_dir: Path, modules: dict[str, nn.Module], state: dict[str, torch.Tensor],
                  names: list[str], trained_on: str | None) -> None:
    """Each LoRA pair must fit its layer: A is r x d_in, B is d_out x r."""
    for name in names:
        A, B = state[f"{_PREFIX}{name}.lora_A.weight"], state[f"{_PREFIX}{name}.lora_B.weight"]
        weight = getattr(modules[name], "weight", None)
        if weight is None or weight.ndim != 2 or tuple(weight.shape) != (B.shape[0], A.shape[1]):
            shape = None if weight is None else tuple(weight.shape)
            raise ModelError(f"the adapter in {adapter_dir} does not fit this base model: {name} is {shape} here but "
                             f"{(B.shape[0], A.shape[1])} in the adapter; load it onto the base model it was trained "
                             f"on ({trained_on})")


def _read_adapter_config(adapter_dir: Path) -> dict[str, Any]:
    path = adapter_dir / ADAPTER_CONFIG
    if not path.is_file():
        raise ModelError(f"{adapter_dir} is not an adapter directory (no {ADAPTER_CONFIG})")
    config = json.loads(path.read_text())
    if config.get("peft_type", "LORA") != "LORA":
        raise ModelError(f"{path}: peft_type {config.get('peft_type')!r} is not supported; rankadapt loads LoRA adapters")
    if config.get("use_dora") or config.get("fan_in_fan_out"):
        raise ModelError(f"{path}: DoRA and fan_in_fan_out adapters are not supported")
    return config


def _pattern_value(pattern: dict[str, Any], name: str, default: Any) -> Any:
    """PEFT's rule: a pattern key applies to a module whose name ends with it (at a dot boundary)."""
    for key, value in pattern.items():
        if name == key or name.endswith("." + key):
            return value
    return default


def _head_names(config: dict[str, Any], modules: dict[str, nn.Module]) -> list[str]:
    """Resolve PEFT's short ``modules_to_save`` names (``classifier``, ``pooler``) to full names."""
    wanted = list(config.get("modules_to_save") or []) + ["classifier", "score"]
    found = []
    for name in modules:
        if name and any(name == w or name.endswith("." + w) for w in wanted):
            if not any(name.startswith(f + ".") for f in found):
                found.append(name)
    return found


def _load_head(model: nn.Module, heads: list[str], state: dict[str, torch.Tensor]) -> None:
    for head in heads:
        module = model.get_submodule(head)
        prefix = f"{_PREFIX}{head}."
        sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if sub:
            module.load_state_dict(sub, strict=True)
