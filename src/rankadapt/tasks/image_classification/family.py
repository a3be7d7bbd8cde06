"""The image-classification task family: the TaskFamily methods (design15 §1) over this package's blocks.

Data keys (the contract; ``data.train_dir`` and ``data.eval_dir`` join DataConfig when the family is
wired in): ``data.task=imagefolder``; ``data.train_dir`` / ``data.eval_dir`` (image-folder layout) or
``data.train_file`` / ``data.eval_file`` (CSV/JSONL with ``task_options.image_column`` and
``data.label_column``); ``data.train_limit``, ``data.eval_limit``, ``data.split_seed``,
``data.cache_dir`` as for text. ``task_options.protocol``:

- ``full``: train on all of train, evaluate on the eval set as ``validation``;
- ``vtab-1k``: train on 800 images drawn from train, select on the 200 others (``validation``),
  report on the eval set as ``test`` (VTAB-1k; see :func:`.images.vtab1k_split`).

Without data.train_dir / data.train_file, ``data.hub_dataset`` (``id`` or ``id:config``: ``cifar100``,
``dtd``, ``oxford_flowers102`` ...) reads the hub dataset's ``train`` split, and its ``test`` split
(``validation`` when it has no test) as the eval set unless data.eval_dir / data.eval_file is set; the
splits are written once as image folders under ``data.cache_dir`` and read as local folders
(:mod:`.hub_images`), under the same protocol. Local files always take precedence over the hub.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from ...core.errors import DataError
from ...core.progress import phase
from ..base import TaskFamily
from ..hub import hub_label, load_hub_dataset, split_hub_name
from .hub_images import hub_images_root, read_hub_images
from .images import (UNREADABLE, ImageExamples, align_to_training, limit_examples, load_rgb, read_images,
                     unreadable_images_error, vtab1k_split)
from .metrics import TOP_K, classification_metrics, top_k_predictions
from .models import interpolate_positions, load_image_model, load_image_processor, resized_processor
from .pixels import ImageCollator, encode_images

FAMILY = "image-classification"
TASK = "imagefolder"


class ImageClassificationSettings(BaseModel):
    """The ``task_options:`` section when ``data.task=imagefolder``."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    protocol: Literal["full", "vtab-1k"] = "full"
    """``vtab-1k``: 800 train + 200 validation drawn from train with data.split_seed, the eval set is
    ``test``; ``full``: all of train, the eval set is ``validation``."""
    image_column: str = "image"
    """Column of image paths in data.train_file / data.eval_file (relative to the file); with
    data.hub_dataset, a name other than the default picks the hub's image column (else it is found)."""
    top_k: int = Field(TOP_K, gt=0)
    """How many labels ``rankadapt predict`` prints per image."""
    image_size: int | None = Field(None, ge=14)
    """Train and evaluate at this many pixels square instead of the checkpoint's own size (e.g. 112 on
    a CPU: a quarter of the patches of 224); null keeps the processor's."""


@dataclass(frozen=True)
class ImageTaskSpec:
    name: str
    label_names: tuple[str, ...]
    metrics: tuple[str, ...]
    main_metric: str = "accuracy"

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


def image_task_spec(label_names: tuple[str, ...], name: str = TASK) -> ImageTaskSpec:
    metrics = ("accuracy", f"top{TOP_K}_accuracy") if len(label_names) > TOP_K else ("accuracy",)
    return ImageTaskSpec(name=name, label_names=label_names, metrics=metrics)


@dataclass
class ImageTaskData:
    spec: ImageTaskSpec
    train: ImageExamples
    eval_splits: dict[str, ImageExamples] = field(default_factory=dict)
    source: str = ""


def load_image_data(train: str, evaluation: str | None, options: ImageClassificationSettings, *,
                    label_column: str = "label", label_names: Sequence[str] | None = None, seed: int = 1234,
                    train_limit: int | None = None, eval_limit: int | None = None) -> ImageTaskData:
    """Train and eval splits under ``options.protocol`` (module doc); limits are seeded, stratified subsets.

    ``label_names`` fixes the class order (e.g. to match a checkpoint's head); by default it is the
    sorted class folders, or the sorted labels of a table.
    """
    train_set = read_images(train, "data.train_dir", options.image_column, label_column, label_names)
    if label_names is not None:
        train_set = align_to_training(train_set, tuple(label_names), "data.train_dir", "data.label_names")
    held_out = None
    if evaluation is not None:
        held_out = read_images(evaluation, "data.eval_dir", options.image_column, label_column, train_set.label_names)
    source = f"local: {train_set.where}" + (f", {evaluation}" if evaluation else "")
    return protocol_splits(train_set, held_out, options, source, seed=seed, train_limit=train_limit,
                           eval_limit=eval_limit)


def protocol_splits(train_set: ImageExamples, held_out: ImageExamples | None, options: ImageClassificationSettings,
                    source: str, *, seed: int = 1234, train_limit: int | None = None,
                    eval_limit: int | None = None) -> ImageTaskData:
    """The splits of ``options.protocol`` (module doc) from a train set and an optional eval set, wherever
    they were read; the eval set is relabelled with the training class ids by name."""
    splits: dict[str, ImageExamples] = {}
    if options.protocol == "vtab-1k":
        train_set, splits["validation"] = vtab1k_split(train_set, seed)
    if held_out is not None:
        splits["test" if options.protocol == "vtab-1k" else "validation"] = \
            align_to_training(held_out, train_set.label_names)
    if not splits:
        raise DataError("image classification needs an evaluation set: set data.eval_dir (or data.eval_file), "
                        "or task_options.protocol=vtab-1k to hold 200 training images out")
    splits = {name: limit_examples(split, eval_limit, seed) for name, split in splits.items()}
    return ImageTaskData(image_task_spec(train_set.label_names), limit_examples(train_set, train_limit, seed), splits, source)


def load_hub_image_data(data, options: ImageClassificationSettings) -> ImageTaskData:
    """``data.hub_dataset``'s train split, and its test (else validation) split as the eval set unless
    data.eval_dir / data.eval_file is set, under ``options.protocol`` (module doc, :mod:`.hub_images`)."""
    hub_id, config = split_hub_name(data.hub_dataset, (data.hub_dataset, None))
    name = hub_label(hub_id, config)
    dataset = load_hub_dataset(hub_id, config, lambda reason: _no_hub(data, reason))
    local_eval = data.eval_dir or data.eval_file
    eval_split = None if local_eval else next((s for s in ("test", "validation") if s in dataset), None)
    if "train" not in dataset or (eval_split is None and not local_eval and options.protocol != "vtab-1k"):
        missing = "train" if "train" not in dataset else "test or validation"
        raise DataError(f"hub dataset {name!r} has no {missing} split (it has {', '.join(dataset)}); pass local "
                        "images (data.train_dir / data.eval_dir)"
                        + ("" if missing == "train" else ", or use task_options.protocol=vtab-1k"))
    root = hub_images_root(data.cache_dir)
    # task_options.image_column names a table's column of paths ("image" by default): a value other than
    # the default picks the hub's column; the default lets the datasets.Image feature be found.
    default = ImageClassificationSettings.model_fields["image_column"].default
    image_column = options.image_column if options.image_column != default else None
    train_set = read_hub_images(dataset["train"], f"hub: {name}[train]", root, image_column, data.label_column,
                                data.label_names)
    if data.label_names is not None:
        train_set = align_to_training(train_set, tuple(data.label_names), f"hub: {name}[train]", "data.label_names")
    held_out = None
    if local_eval:
        held_out = read_images(local_eval, "data.eval_dir", options.image_column, data.label_column or "label",
                               train_set.label_names)
    elif eval_split is not None:
        held_out = read_hub_images(dataset[eval_split], f"hub: {name}[{eval_split}]", root, image_column,
                                   data.label_column, train_set.label_names)
    source = f"hub: {name} ({', '.join(['train'] + ([eval_split] if eval_split else []))})"
    source += f"; local: {local_eval}" if local_eval else ""
    return protocol_splits(train_set, held_out, options, source, seed=data.split_seed,
                           train_limit=data.train_limit, eval_limit=data.eval_limit)


def _no_hub(data, reason: str) -> DataError:
    return DataError(f"data.task=imagefolder with data.hub_dataset={data.hub_dataset}: {reason}. Pass local images "
                     "with data.train_dir (DIR/<class>/*.jpg) and data.eval_dir, or data.train_file / "
                     "data.eval_file (CSV/JSONL of image paths and labels), or install `datasets` and go online")


def eval_outputs(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-example logits and labels of one eval batch."""
    return {"logits": model(pixel_values=batch["pixel_values"]).logits, "labels": batch["labels"]}


def predict_images(model: torch.nn.Module, processor, paths: Sequence[str], label_names: Sequence[str],
                   k: int = TOP_K, batch_size: int = 32) -> list[dict[str, Any]]:
    """One record per image, in input order: its best label, that label's probability, and under
    ``top_k`` the k most probable labels as ``[label, probability]`` pairs, best first."""
    records = []
    for start in range(0, len(paths), batch_size):
        chunk = list(paths[start:start + batch_size])
        images, failures = [], []
        for path in chunk:
            try:
                images.append(load_rgb(Path(path)))
            except UNREADABLE as err:
                failures.append((Path(path), err))
        if failures:
            raise unreadable_images_error(failures, "rankadapt predict")
        pixels = processor(images=images, return_tensors="pt")["pixel_values"]
        device = next(model.parameters()).device
        with torch.no_grad():
            logits = model(pixel_values=pixels.to(device)).logits.float().cpu()
        for path, top in zip(chunk, top_k_predictions(logits, label_names, k)):
            records.append({"image": path, "label": top[0][0], "probability": top[0][1],
                            "top_k": [[label, p] for label, p in top]})
    return records


class ImageClassificationFamily(TaskFamily):
    """Image classification on any ``AutoModelForImageClassification`` checkpoint (module doc)."""

    name: ClassVar[str] = FAMILY
    tasks: ClassVar[tuple[str, ...]] = (TASK,)
    peft_task_type: ClassVar[str] = "SEQ_CLS"
    """PEFT's sequence-classification wrapper passes ``pixel_values`` through to the model (tested:
    stock PEFT reproduces the logits), and adds the ``classifier`` to modules_to_save."""
    Settings: ClassVar[type[BaseModel]] = ImageClassificationSettings

    def load_data(self, config) -> ImageTaskData:
        data, options = config.data, _options(config)
        train = data.train_dir or data.train_file
        evaluation = data.eval_dir or data.eval_file
        if not train and data.hub_dataset:
            return load_hub_image_data(data, options)
        if not train:
            raise DataError("data.task=imagefolder needs data.train_dir (DIR/<class>/*.jpg) or data.train_file "
                            "(a CSV/JSONL of image paths and labels), or data.hub_dataset=<id> when online")
        return load_image_data(train, evaluation, options, label_column=data.label_column or "label",
                               label_names=data.label_names, seed=data.split_seed,
                               train_limit=data.train_limit, eval_limit=data.eval_limit)

    def load_processor(self, model_name: str):
        return load_image_processor(model_name)

    def prepare_processor(self, processor, config):
        """The checkpoint's processor, at ``task_options.image_size`` when it is set."""
        size = _options(config).image_size
        return resized_processor(processor, size) if size else processor

    def load_model(self, config, spec: ImageTaskSpec, processor) -> torch.nn.Module:
        model = load_image_model(config.model, spec.label_names)
        if _options(config).image_size:
            interpolate_positions(model)
        return model

    def encode(self, split: str, examples: ImageExamples, processor, config, spec, show_progress: bool):
        with phase(f"decoding {len(examples):,} {split} images", show_progress and config.train.progress):
            return encode_images(examples, processor, config.data.cache_dir)

    def collator(self, processor, config) -> Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]:
        return ImageCollator(processor)

    def eval_step(self, model, batch, spec, config) -> dict[str, torch.Tensor]:
        return eval_outputs(model, batch)

    def compute_metrics(self, spec, outputs: dict[str, list[torch.Tensor]], processor, examples) -> dict[str, float]:
        logits, labels = torch.cat(outputs["logits"]).float(), torch.cat(outputs["labels"])
        metrics = classification_metrics(logits, labels)
        metrics["loss"] = torch.nn.functional.cross_entropy(logits, labels.long()).item()
        return metrics

    def predict(self, model, processor, inputs: list[str], meta: dict[str, Any],
                show_progress: bool) -> list[dict[str, Any]]:
        return predict_images(model, processor, inputs, meta["label_names"], int(meta.get("top_k", TOP_K)))

    def describe_prediction(self, meta: dict[str, Any]) -> str:
        return (f"task {meta.get('task', TASK)}: image files, {len(meta['label_names'])} classes, "
                f"top {meta.get('top_k', TOP_K)} labels per image")

    def export_metadata(self, spec: ImageTaskSpec, config) -> dict[str, Any]:
        options = _options(config)
        return {"task": spec.name, "family": FAMILY, "label_names": list(spec.label_names),
                "top_k": options.top_k, "protocol": options.protocol, "image_size": options.image_size}

    def spec_from_metadata(self, meta: dict[str, Any], config) -> ImageTaskSpec:
        labels = meta.get("label_names") or config.data.label_names
        if not labels:
            raise DataError("this export records no class names (rankadapt.json label_names or the model's "
                            "id2label); set data.label_names=[...] in the class order it was trained with")
        return image_task_spec(tuple(labels))

    def metadata_settings(self, meta: dict[str, Any]) -> dict[str, Any]:
        options = {k: meta[k] for k in ("top_k", "protocol", "image_size") if meta.get(k) is not None}
        return {"data": {"task": TASK}, "task_options": options}


def _options(config) -> ImageClassificationSettings:
    return getattr(config, "task_options", None) or ImageClassificationSettings()
