"""The text-classification family (IMDB, the nine GLUE tasks, custom files) behind the TaskFamily interface.

The methods are thin: reading is :mod:`.loading`, encoding and batching :mod:`.encoding`, the
consistency objectives :mod:`.augment`, metrics :mod:`.metrics`, predicting :func:`predict_texts`.
An export's ``rankadapt.json`` carries ``task``, ``label_names``, ``max_length`` and ``is_pair``, so
that ``predict`` encodes a text exactly as evaluation did.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from ...core.config import RunConfig
from ...core.errors import ConfigError
from ...core.models import fit_max_length, load_model, load_model_config, load_tokenizer
from ...core.progress import bar
from ..base import TaskFamily
from .augment import build_objective, check_objective
from .encoding import encode_split, text_collator
from .loading import load_task_data
from .metrics import compute_metrics, predictions_from_logits
from .records import TaskData
from .specs import CUSTOM, TASKS, TaskSpec, custom_task, get_task


class TextClassificationFamily(TaskFamily):
    name: ClassVar[str] = "text-classification"
    tasks: ClassVar[tuple[str, ...]] = (*TASKS, CUSTOM)
    peft_task_type: ClassVar[str] = "SEQ_CLS"
    uses_augmentation: ClassVar[bool] = True

    def load_data(self, config: RunConfig) -> TaskData:
        return load_task_data(config.data)

    def check_config(self, config: RunConfig, spec: TaskSpec) -> None:
        check_objective(config.train, spec.is_regression, spec.name)

    def load_processor(self, model_name: str):
        return load_tokenizer(model_name)

    def fit_config(self, config: RunConfig) -> RunConfig:
        return fit_max_length(config, load_model_config(config.model.name))

    def load_model(self, config: RunConfig, spec: TaskSpec, processor) -> torch.nn.Module:
        return load_model(config.model, spec.num_labels, spec.label_names)

    def encode(self, split: str, examples, processor, config: RunConfig, spec: TaskSpec, show_progress: bool):
        return encode_split(config, spec.name, split, examples, processor, show_progress)

    def collator(self, processor, config: RunConfig):
        return text_collator(config, processor)

    def objective(self, config: RunConfig, model: torch.nn.Module):
        """The task loss, or Cutoff / R-drop's loss with its second forward pass (:mod:`.augment`)."""
        return build_objective(config.train, getattr(model, "module", model).get_input_embeddings())

    def eval_step(self, model, batch, spec: TaskSpec, config: RunConfig):
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        return {"logits": model(**inputs).logits.float(), "labels": batch["labels"]}

    def compute_metrics(self, spec: TaskSpec, outputs, processor, examples: Sequence[Any]) -> dict[str, float]:
        logits, labels = torch.cat(outputs["logits"]), torch.cat(outputs["labels"])
        metrics = compute_metrics(spec, predictions_from_logits(spec, logits.numpy()), labels.numpy())
        metrics["loss"] = eval_loss(spec, logits, labels)
        return metrics

    def predict(self, model, processor, inputs: list[str], meta: dict[str, Any], show_progress: bool):
        texts, pairs = split_pairs(inputs, meta)
        return predict_texts(model, processor, texts, pairs, meta.get("label_names"), max_length=meta["max_length"],
                             show_progress=show_progress)

    def describe_prediction(self, meta: dict[str, Any]) -> str:
        labels = ", ".join(meta["label_names"]) if meta.get("label_names") else "a regression score"
        inputs = "sentence pairs (first<TAB>second)" if meta.get("is_pair") else "single texts"
        return f"task {meta['task']}: {inputs}, truncated to {meta['max_length']} tokens, labels {labels}"

    def export_metadata(self, spec: TaskSpec, config: RunConfig) -> dict[str, Any]:
        """``label_names`` (class i is ``label_names[i]``) also give a stock PEFT model its labels
        (README, "Exported adapters and PEFT")."""
        return {"task": spec.name, "family": self.name, "label_names": spec.label_names,
                "max_length": config.data.max_length, "is_pair": spec.is_pair}

    def spec_from_metadata(self, meta: dict[str, Any], config: RunConfig) -> TaskSpec:
        """The built-in task's spec with the export's labels, or a custom spec from them."""
        task = meta.get("task") or config.data.task
        labels = meta.get("label_names")
        is_pair = meta.get("is_pair")
        if task != CUSTOM:
            spec = get_task(task)
            if labels and spec.label_names and tuple(labels) != spec.label_names:
                spec = custom_task(labels, spec.is_pair if is_pair is None else bool(is_pair))
            return spec
        if not labels:
            return TaskSpec(name=CUSTOM, label_names=None, metrics=("pearson",), main_metric="pearson",
                            is_pair=bool(is_pair))
        return custom_task(labels, bool(is_pair if is_pair is not None else config.data.text_pair_column))

    def metadata_settings(self, meta: dict[str, Any]) -> dict[str, Any]:
        """The task and max length an export records. A ``custom`` task is left out: its files are not
        part of the export, so evaluating needs them as ``data.*`` overrides anyway."""
        data = {"max_length": meta.get("max_length", 128)}
        if meta.get("task", CUSTOM) != CUSTOM:
            data["task"] = meta["task"]
        return {"data": data}


def eval_loss(spec: TaskSpec, logits: torch.Tensor, labels: torch.Tensor) -> float:
    if spec.is_regression:
        return torch.nn.functional.mse_loss(logits.squeeze(-1), labels.float()).item()
    return torch.nn.functional.cross_entropy(logits, labels.long()).item()


def split_pairs(inputs: list[str], meta: dict[str, Any]) -> tuple[list[str], list[str] | None]:
    """(texts, second texts or None): a pair task's inputs are ``first<TAB>second``."""
    if not meta.get("is_pair"):
        return inputs, None
    unpaired = [text for text in inputs if "\t" not in text]
    if unpaired:
        raise ConfigError(f"the model classifies sentence pairs (task {meta.get('task')}); give each input as "
                          f"'first sentence<TAB>second sentence' (e.g. one pair per line of --file); "
                          f"without a tab: {unpaired[0][:60]!r}")
    first, second = zip(*(text.split("\t", 1) for text in inputs))
    return list(first), list(second)


@torch.no_grad()
def predict_texts(model, tokenizer, texts: list[str], pairs: list[str] | None = None,
                  label_names: Sequence[str] | None = None, max_length: int = 128, batch_size: int = 32,
                  show_progress: bool = False) -> list[dict[str, Any]]:
    """Label and probability (or score, for regression) of each text."""
    out = []
    device = next(model.parameters()).device
    starts = range(0, len(texts), batch_size)
    for start in bar(len(starts), "predict", "batch", show_progress and len(starts) > 1, leave=False, iterable=starts):
        chunk = texts[start:start + batch_size]
        pair = pairs[start:start + batch_size] if pairs else None
        enc = tokenizer(chunk, pair, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        logits = model(**{k: v.to(device) for k, v in enc.items()}).logits.float().cpu()
        inputs = [{"text": t} if pair is None else {"text": t, "text_pair": p} for t, p in zip(chunk, pair or chunk)]
        if logits.shape[-1] == 1:
            out.extend({**i, "score": float(s)} for i, s in zip(inputs, logits[:, 0]))
            continue
        probs = logits.softmax(-1)
        for i, p in zip(inputs, probs):
            idx = int(p.argmax())
            label = label_names[idx] if label_names else str(idx)
            out.append({**i, "label": label, "probability": float(p[idx])})
    return out
