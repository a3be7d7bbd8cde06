"""Loading what training produced, for ``rankadapt eval``, ``predict`` and ``export``.

Accepted locations:
- a run directory (``config.yaml`` + ``adapter/`` or ``model/``);
- an adapter directory (``adapter_config.json``; rankadapt's export or any PEFT LoRA for a
  sequence classifier) — the base model comes from ``base_model_name_or_path`` unless ``model.name``
  is overridden;
- a transformers model directory (``config.json``), e.g. a merged export.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..core.config import RunConfig
from ..core.config_files import build_config, parse_overrides, read_yaml, _deep_merge
from ..core.errors import ConfigError, ModelError
from ..core.models import load_model, load_tokenizer
from ..methods.adapting import AdaptedModel, prepare_model
from ..methods.export import ADAPTER_CONFIG, RANKADAPT_META, load_peft_adapter
from ..tasks.text_classification import get_task


@dataclass
class Trained:
    config: RunConfig
    model: torch.nn.Module
    tokenizer: Any
    adapted: AdaptedModel | None
    label_names: tuple[str, ...] | None
    source: Path


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
    """The run's own config.yaml (if any), then what the adapter's metadata knows, then overrides."""
    path = Path(path)
    weights, kind = locate(path)
    data: dict[str, Any] = {}
    run_dir = path if (path / "config.yaml").is_file() else weights.parent
    if (run_dir / "config.yaml").is_file():
        data = read_yaml(run_dir / "config.yaml")
    else:
        name = (json.loads((weights / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
                if kind == "adapter" else str(weights))
        data = {"model": {"name": name}, "data": _stored_data_settings(_meta(weights))}
    data.pop("output_dir", None)
    data.setdefault("method", {})
    # Evaluation loads the trained weights; the method block only describes how they were made.
    data["method"] = {"name": "none"}
    return build_config(_deep_merge(data, parse_overrides(overrides or [])))


def load_trained(path: str | Path, config: RunConfig, num_labels: int,
                 label_names: tuple[str, ...] | None) -> Trained:
    """A trained run, adapter or model directory, loaded for inference (eval mode, adapters merged)."""
    weights, kind = locate(path)
    if kind == "model":
        model_cfg = config.model.model_copy(update={"name": str(weights)})
        model = load_model(model_cfg, num_labels, label_names)
        tokenizer = load_tokenizer(str(weights) if (weights / "tokenizer_config.json").is_file() else config.model.name)
        adapted = prepare_model(model, config.method)
    else:
        base_name = config.model.name
        if not base_name:
            raise ModelError(f"{weights} names no base model; set model.name=...")
        model = load_model(config.model, num_labels, label_names)
        adapted = load_peft_adapter(model, weights)
        tokenizer = load_tokenizer(str(weights) if (weights / "tokenizer_config.json").is_file() else base_name)
    adapted.merge()  # inference only: ΔW folded into W once, so predictions cost what the base model's do
    model.eval()
    return Trained(config, model, tokenizer, adapted, label_names, weights)


def _stored_data_settings(meta: dict[str, Any]) -> dict[str, Any]:
    """The task and max length an exported directory records. A ``custom`` task is left out: its
    files are not part of the export, so evaluating needs them as ``data.*`` overrides anyway."""
    data = {"max_length": meta.get("max_length", 128)}
    if meta.get("task", "custom") != "custom":
        data["task"] = meta["task"]
    return data


def _meta(weights: Path) -> dict[str, Any]:
    path = weights / RANKADAPT_META
    return json.loads(path.read_text()) if path.is_file() else {}


def label_names_for(path: str | Path) -> tuple[str, ...] | None:
    weights, _ = locate(path)
    names = _meta(weights).get("label_names")
    if names:
        return tuple(names)
    config_path = weights / "config.json"
    if config_path.is_file():
        id2label = json.loads(config_path.read_text()).get("id2label") or {}
        return tuple(id2label[k] for k in sorted(id2label, key=int)) or None
    return None


@dataclass(frozen=True)
class PredictionSettings:
    """How ``predict`` encodes its inputs: the settings the run trained and evaluated with, so that a
    prediction equals what evaluation would have computed for the same text."""

    task: str
    max_length: int
    label_names: tuple[str, ...] | None
    is_pair: bool

    def describe(self) -> str:
        labels = ", ".join(self.label_names) if self.label_names else "a regression score"
        inputs = "sentence pairs (first<TAB>second)" if self.is_pair else "single texts"
        return f"task {self.task}: {inputs}, truncated to {self.max_length} tokens, labels {labels}"


def prediction_settings(path: str | Path, config: RunConfig, max_length: int | None = None) -> PredictionSettings:
    """The stored settings of a run/adapter/model directory (``config.yaml``, ``rankadapt.json``),
    with ``max_length`` as an explicit override."""
    weights, _ = locate(path)
    meta = _meta(weights)
    task = meta.get("task") or config.data.task
    spec = None if task == "custom" else get_task(task)
    labels = label_names_for(path) or (spec.label_names if spec else None)
    is_pair = meta.get("is_pair", spec.is_pair if spec else config.data.text_pair_column is not None)
    return PredictionSettings(task, max_length or config.data.max_length, labels, bool(is_pair))


def split_pairs(inputs: list[str], settings: PredictionSettings) -> tuple[list[str], list[str] | None]:
    """(texts, second texts or None): a pair task's inputs are ``first<TAB>second``."""
    if not settings.is_pair:
        return inputs, None
    unpaired = [text for text in inputs if "\t" not in text]
    if unpaired:
        raise ConfigError(f"the model classifies sentence pairs (task {settings.task}); give each input as "
                          f"'first sentence<TAB>second sentence' (e.g. one pair per line of --file); "
                          f"without a tab: {unpaired[0][:60]!r}")
    first, second = zip(*(text.split("\t", 1) for text in inputs))
    return list(first), list(second)


@torch.no_grad()
def predict_texts(trained: Trained, texts: list[str], pairs: list[str] | None = None,
                  max_length: int = 128, batch_size: int = 32, show_progress: bool = False) -> list[dict[str, Any]]:
    """Label and probability (or score, for regression) of each text."""
    from ..core.progress import bar

    out = []
    device = next(trained.model.parameters()).device
    starts = range(0, len(texts), batch_size)
    for start in bar(len(starts), "predict", "batch", show_progress and len(starts) > 1, leave=False, iterable=starts):
        chunk = texts[start:start + batch_size]
        pair = pairs[start:start + batch_size] if pairs else None
        enc = trained.tokenizer(chunk, pair, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        logits = trained.model(**{k: v.to(device) for k, v in enc.items()}).logits.float().cpu()
        inputs = [{"text": t} if pair is None else {"text": t, "text_pair": p}
                  for t, p in zip(chunk, pair or chunk)]
        if logits.shape[-1] == 1:
            out.extend({**i, "score": float(s)} for i, s in zip(inputs, logits[:, 0]))
            continue
        probs = logits.softmax(-1)
        for i, p in zip(inputs, probs):
            idx = int(p.argmax())
            label = trained.label_names[idx] if trained.label_names else str(idx)
            out.append({**i, "label": label, "probability": float(p[idx])})
    return out
