"""``init_from: RUN_DIR``: start a run's adapters from another run's adapter (MNLI → MRPC chaining).

The AdaLoRA/LoRA repositories fine-tune MRPC, RTE and STS-B starting from an MNLI-tuned model; here
the source is another run's exported adapter (``RUN_DIR/adapter``, any PEFT LoRA directory) or a
microsoft/LoRA ``loralib`` checkpoint file (read with the new run's ``method.lora_alpha``, as the
official scripts pass the same ``--lora_alpha`` for both).

How factors are copied into the new run's layers (ΔW_src = s_src · B_src · A_src, rank r_src; the new
layer has scale s and k active slots):

- **LoRA, RM-LoRA** (fixed gate g ≡ 1): when r_src ≤ k, A and B are copied into the first r_src slots
  with B scaled by s_src / s, so ΔW is identical; the other slots keep the method's own init (B = 0,
  so they add nothing at step 0) and train from there.
- **AdaLoRA, ElaLoRA, SoRA** (trainable gate / singular values): ΔW_src / s is written in SVD form,
  A = Vᵀ, B = U, g = σ, into the first slots, the form these methods' importance scores and orthogonal
  regulariser expect. Remaining slots keep their init (λ = 0 or B = 0: no contribution).
- **Truncation**: when r_src > k, the best rank-k approximation (truncated SVD, Eckart–Young) is kept;
  the run prints which modules were truncated.
- **Modules**: only modules present in both are copied; others start from the usual init (printed).
- **Head**: each head module (classifier, pooler) is copied when its tensor shapes match; a classifier
  with a different label count (MNLI's 3 → MRPC's 2) is *not* copied and starts fresh, as in the
  source repositories.

The copy happens right after the adapters are created and before any checkpoint is loaded, so
``train.resume`` continues from the checkpoint, not from the source again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..core.errors import ConfigError, ModelError
from ..core.layer import AdapterLinear
from .adapting import AdaptedModel
from .export import ADAPTER_CONFIG, ADAPTER_WEIGHTS, _PREFIX, _pattern_value

log = logging.getLogger(__name__)

LORALIB_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


@dataclass
class AdapterFactors:
    """LoRA factors by module name of the base model, ΔW = scale · B @ A, plus other tensors."""

    factors: dict[str, tuple[torch.Tensor, torch.Tensor, float]]
    """Module name -> (A (r × d_in), B (d_out × r), scale)."""
    others: dict[str, torch.Tensor] = field(default_factory=dict)
    """Non-adapter tensors (the head), by the model's state-dict keys."""
    origin: str = ""


def read_peft_factors(adapter_dir: str | Path) -> AdapterFactors:
    """The factors of a PEFT LoRA directory (rankadapt's export or PEFT's own)."""
    adapter_dir = Path(adapter_dir)
    config_path, weights_path = adapter_dir / ADAPTER_CONFIG, adapter_dir / ADAPTER_WEIGHTS
    if not (config_path.is_file() and weights_path.is_file()):
        raise ModelError(f"{adapter_dir} is not a PEFT adapter directory (needs {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS})")
    config = json.loads(config_path.read_text())
    if config.get("peft_type", "LORA") != "LORA" or config.get("use_dora"):
        raise ModelError(f"{config_path}: only plain LoRA adapters can start a run (got {config.get('peft_type')})")
    state = load_file(str(weights_path))
    factors: dict[str, tuple[torch.Tensor, torch.Tensor, float]] = {}
    others: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = key.removeprefix(_PREFIX).replace(".modules_to_save.default.", ".")
        if name.endswith(".lora_A.weight"):
            module = name[: -len(".lora_A.weight")]
            B = state[key.replace(".lora_A.weight", ".lora_B.weight")]
            alpha = float(_pattern_value(config.get("alpha_pattern") or {}, module, config["lora_alpha"]))
            factors[module] = (value, B, alpha / value.shape[0])
        elif ".lora_" not in name:
            others[name] = value
    return AdapterFactors(factors, others, origin=str(adapter_dir))


def read_init_source(path: str | Path, model: torch.nn.Module, lora_alpha: float) -> AdapterFactors:
    """Factors from a run directory, an adapter directory or a loralib checkpoint file."""
    path = Path(path)
    if path.is_file() and path.suffix in LORALIB_SUFFIXES:
        from .loralib import loralib_factors, read_loralib_state

        return loralib_factors(read_loralib_state(path), model, lora_alpha, origin=str(path))
    for candidate in (path, path / "adapter"):
        if (candidate / ADAPTER_CONFIG).is_file():
            return read_peft_factors(candidate)
    if (path / "model" / "config.json").is_file() or (path / "config.json").is_file():
        raise ConfigError(f"init_from={path} holds a full model, not an adapter; start from it with "
                          f"model.name={path / 'model' if (path / 'model').is_dir() else path} instead")
    raise ConfigError(f"init_from={path} is not a run directory with adapter/, an adapter directory or a loralib "
                      f"checkpoint ({', '.join(LORALIB_SUFFIXES)}); check the path")


def init_adapters_from(adapted: AdaptedModel, path: str | Path, lora_alpha: float,
                       echo: Callable[[str], None] | None = log.info) -> dict[str, list[str]]:
    """Copy another adapter into ``adapted`` (see the module docstring); returns what was done, also told
    to ``echo`` in one line (by default a status message, :mod:`rankadapt.core.messages`)."""
    if not adapted.adapters:
        raise ConfigError(f"init_from needs an adapter method (lora, adalora, elalora, sora, rmlora), "
                          f"not {adapted.method}; for full fine-tuning from a run use model.name=RUN_DIR/model")
    source = read_init_source(path, adapted.model, lora_alpha)
    done: dict[str, list[str]] = {"copied": [], "truncated": [], "fresh": [], "unused": [], "head": [], "head_skipped": []}
    for name, layer in adapted.adapters.items():
        if name not in source.factors:
            done["fresh"].append(name)
            continue
        A, B, scale = source.factors[name]
        if A.shape[1] != layer.in_features or B.shape[0] != layer.out_features:
            raise ModelError(f"init_from: {name} is {B.shape[0]} x {A.shape[1]} in {source.origin} but "
                             f"{layer.out_features} x {layer.in_features} here; use the same base model")
        truncated = copy_factors(layer, A, B, scale)
        done["truncated" if truncated else "copied"].append(name)
    done["unused"] = sorted(set(source.factors) - set(adapted.adapters))
    _copy_head(adapted, source, done)
    if echo is not None:
        echo(_summary(source.origin, done))
    return done


@torch.no_grad()
def copy_factors(layer: AdapterLinear, A: torch.Tensor, B: torch.Tensor, scale: float) -> bool:
    """Write ΔW = scale · B @ A into ``layer``'s active slots; True if it had to be truncated."""
    slots = torch.nonzero(layer.rank_mask != 0, as_tuple=False).flatten()
    rank = A.shape[0]
    k = min(rank, slots.numel())
    use = slots[:k]
    dtype = layer.lora_A.dtype
    if not layer.gate_trainable and rank <= k:
        layer.lora_A[use] = A.to(dtype)
        layer.lora_B[:, use] = (B * (scale / layer.scale)).to(dtype)
        return False
    delta = (B.double() * scale) @ A.double() / layer.scale
    U, S, Vh = torch.linalg.svd(delta, full_matrices=False)
    if layer.gate_trainable:
        layer.lora_A[use] = Vh[:k].to(dtype)
        layer.lora_B[:, use] = U[:, :k].to(dtype)
        layer.lora_E[use] = S[:k].to(dtype)
    else:
        root = S[:k].sqrt()
        layer.lora_A[use] = (root[:, None] * Vh[:k]).to(dtype)
        layer.lora_B[:, use] = (U[:, :k] * root).to(dtype)
    return rank > k


def _copy_head(adapted: AdaptedModel, source: AdapterFactors, done: dict[str, list[str]]) -> None:
    """Copy each head module whose tensors all match in shape (not a classifier of other width)."""
    for head in adapted.head_modules:
        module = adapted.model.get_submodule(head)
        own = module.state_dict()
        theirs = {k[len(head) + 1:]: v for k, v in source.others.items() if k.startswith(head + ".")}
        if theirs and set(theirs) == set(own) and all(theirs[k].shape == own[k].shape for k in own):
            module.load_state_dict(theirs)
            done["head"].append(head)
        else:
            done["head_skipped"].append(head)


def _summary(origin: str, done: dict[str, list[str]]) -> str:
    lines = [f"init_from {origin}: copied {len(done['copied']) + len(done['truncated'])} adapted matrices"]
    if done["truncated"]:
        lines.append(f"  truncated to this run's rank (best rank-k approximation): {', '.join(done['truncated'])}")
    if done["fresh"]:
        lines.append(f"  not in the source, usual init: {', '.join(done['fresh'])}")
    if done["unused"]:
        lines.append(f"  in the source but not adapted here, ignored: {', '.join(done['unused'])}")
    if done["head"]:
        lines.append(f"  head copied: {', '.join(done['head'])}")
    if done["head_skipped"]:
        lines.append(f"  head not copied (absent or another shape, e.g. another label count): {', '.join(done['head_skipped'])}")
    return "\n".join(lines)
