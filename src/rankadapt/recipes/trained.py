"""Loading what training produced, for ``rankadapt eval``, ``predict`` and ``export``.

Accepted locations:
- a run directory (``config.yaml`` + ``adapter/`` or ``model/``);
- an adapter directory (``adapter_config.json``; rankadapt's export or any PEFT LoRA of a model the
  task families load) — the base model comes from ``base_model_name_or_path`` unless ``model.name``
  is overridden;
- a transformers model directory (``config.json``), e.g. a merged export.

What the run was (task, family, labels, lengths, generation settings) comes from ``rankadapt.json``
beside the weights (the family's ``export_metadata``), else from the run's config.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..core.config import RunConfig
from ..core.config_files import _deep_merge, build_config, parse_overrides, read_yaml
from ..core.errors import ModelError
from ..methods.adapting import AdaptedModel, prepare_model
from ..methods.export import ADAPTER_CONFIG, load_peft_adapter, read_meta
from ..tasks import TaskFamily, family_for_task, get_family


@dataclass
class Trained:
    config: RunConfig
    model: torch.nn.Module
    processor: Any
    """The tokenizer or image processor the run encoded its inputs with."""
    adapted: AdaptedModel | None
    family: TaskFamily
    spec: Any
    meta: dict[str, Any]
    """The export's metadata, completed from the config (what ``predict`` reads its settings from)."""
    source: Path

    @property
    def tokenizer(self) -> Any:
        return self.processor

    @property
    def label_names(self) -> tuple[str, ...] | None:
        names = self.meta.get("label_names")
        return tuple(names) if names else None


def locate(path: str | Path) -> tuple[Path, str]:
    """(directory holding the weights, kind) with kind in {"adapter", "model"}."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path} does not exist; pass a run directory, an adapter directory or a model directory")
    for candidate, kind in ((path, "adapter"), (path / "adapter", "adapter"), (path, "model"), (path / "model", "model")):
        marker = ADAPTER_CONFIG if kind == "adapter" else "config.json"
        if (candidate / marker).is_file():
            return candidate, kind
    raise ModelError(f"{path} holds no adapter (adapter_config.json), model (config.json) or run "
                     "(adapter/ or model/ inside); for a run that is still training use its checkpoint via train.resume")


def run_config_for(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """The run's own config.yaml (if any), then what the export's metadata knows, then overrides."""
    path = Path(path)
    weights, kind = locate(path)
    run_dir = path if (path / "config.yaml").is_file() else weights.parent
    if (run_dir / "config.yaml").is_file():
        data: dict[str, Any] = read_yaml(run_dir / "config.yaml")
    else:
        meta = read_meta(weights)
        name = (json.loads((weights / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
                if kind == "adapter" else str(weights))
        family = get_family(meta["family"]) if meta.get("family") else family_for_task(meta.get("task", "custom"))
        data = {"model": {"name": name}, **family.metadata_settings(meta)}
    data.pop("output_dir", None)
    # Evaluation loads the trained weights; the method block only describes how they were made.
    data["method"] = {"name": "none"}
    return build_config(_deep_merge(data, parse_overrides(overrides or [])))


def completed_meta(path: str | Path, config: RunConfig) -> tuple[TaskFamily, Any, dict[str, Any]]:
    """(family, task spec, metadata) of a trained directory: its ``rankadapt.json``, the class names
    of its ``config.json`` when that lacks them, and the family's defaults for the config's task."""
    weights, _ = locate(path)
    meta = read_meta(weights)
    meta.setdefault("task", config.data.task)
    if not meta.get("label_names"):
        meta.pop("label_names", None)
        names = _id2label(weights)
        if names:
            meta["label_names"] = list(names)
    family = get_family(meta["family"]) if meta.get("family") else family_for_task(meta["task"])
    spec = family.spec_from_metadata(meta, config)
    return family, spec, {**family.export_metadata(spec, config), **meta}


def _id2label(weights: Path) -> tuple[str, ...] | None:
    config_path = weights / "config.json"
    if not config_path.is_file():
        return None
    id2label = json.loads(config_path.read_text()).get("id2label") or {}
    names = tuple(id2label[k] for k in sorted(id2label, key=int))
    # transformers writes LABEL_0, LABEL_1 ... when a model was given no names: not names at all.
    return None if not names or all(n == f"LABEL_{i}" for i, n in enumerate(names)) else names


def load_trained(path: str | Path, config: RunConfig) -> Trained:
    """A trained run, adapter or model directory, loaded for inference (eval mode, adapters merged)."""
    weights, kind = locate(path)
    family, spec, meta = completed_meta(path, config)
    saved_processor = any((weights / name).is_file() for name in ("tokenizer_config.json", "preprocessor_config.json"))
    base_name = str(weights) if kind == "model" else config.model.name
    if not base_name:
        raise ModelError(f"{weights} names no base model; set model.name=...")
    processor = family.prepare_processor(family.load_processor(str(weights) if saved_processor else base_name), config)
    model_config = config.model_copy(update={"model": config.model.model_copy(update={"name": base_name})})
    model = family.load_model(model_config, spec, processor)
    if kind == "model":
        adapted = prepare_model(model, config.method)
    else:
        adapted = load_peft_adapter(model, weights)
    adapted.merge()  # inference only: ΔW folded into W once, so predictions cost what the base model's do
    model.eval()
    return Trained(config, model, processor, adapted, family, spec, meta, weights)
