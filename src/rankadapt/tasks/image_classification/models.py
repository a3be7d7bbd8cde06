"""ViT-family image classifiers: the module-name map, loading a checkpoint with a fresh head, its processor.

The source repositories name the adapted maps by their role in a BERT block (``query, key, value,
attention.output, intermediate, layer.output``). The installed transformers names them, in ViT,
DeiT, BEiT and DINOv2 alike, ``attention.q_proj/k_proj/v_proj/o_proj`` and ``mlp.fc1/fc2``
(DINOv2 with SwiGLU: ``mlp.gate_proj, up_proj`` in, ``down_proj`` out); transformers 4.x used the
BERT-like ``attention.attention.query``, ``attention.output.dense``, ``intermediate.dense``,
``output.dense`` (DINOv2: ``mlp.fc1/fc2``, SwiGLU ``mlp.weights_in/weights_out``).
:data:`VIT_FAMILY_MODULES` maps every role onto both spellings, so a checkpoint's adapter works
whichever release loads it. Other architectures take ``method.target_modules``.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ...core.config import ModelConfig
from ...core.errors import ModelError
from ...core.models import resolve_model_path
from ...core.targets import MODULE_MAPS

VIT_FAMILY_MODULES = {
    "query": r"\.attention\.(q_proj|attention\.query)$",
    "key": r"\.attention\.(k_proj|attention\.key)$",
    "value": r"\.attention\.(v_proj|attention\.value)$",
    "attention.output": r"\.attention\.(o_proj|output\.dense)$",
    "intermediate": r"\.(mlp\.(fc1|gate_proj|up_proj|weights_in)|intermediate\.dense)$",
    "layer.output": r"\.(mlp\.(fc2|down_proj|weights_out)|layers?\.\d+\.output\.dense)$",
}
VIT_FAMILY = ("vit", "deit", "beit", "dinov2")

# One table entry per architecture, as for the text encoders (core/targets.py takes them at merge time).
for _model_type in VIT_FAMILY:
    MODULE_MAPS.setdefault(_model_type, VIT_FAMILY_MODULES)


def image_model_from_config(config) -> torch.nn.Module:
    """``AutoModelForImageClassification.from_config``, also for a config without ``architectures``.

    transformers' auto class iterates ``config.architectures`` when a model type has several heads
    (DeiT: with and without the distillation token) and fails on ``None``; an empty list picks the
    first, plain classifier.
    """
    from transformers import AutoModelForImageClassification

    if getattr(config, "architectures", None) is None:
        config.architectures = []
    return AutoModelForImageClassification.from_config(config)


def load_image_processor(name: str):
    """The checkpoint's own image processor (offline first: local directory, packaged copy, hub)."""
    from transformers import AutoImageProcessor

    path = resolve_model_path(name)
    try:
        return AutoImageProcessor.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise ModelError(_unloadable(name, path, "image processor", err)) from None


def load_image_model(cfg: ModelConfig, label_names: Sequence[str]) -> torch.nn.Module:
    """The checkpoint with a fresh classifier of ``len(label_names)`` outputs named after the classes.

    A checkpoint saved with another head (a backbone, ImageNet's 1,000 classes) loads with its
    classifier replaced (``ignore_mismatched_sizes``); ``model.cls_dropout`` does not apply (ViT
    heads have no dropout setting).
    """
    from transformers import AutoConfig, AutoModelForImageClassification
    from transformers.utils import logging as hf_logging

    path = resolve_model_path(cfg.name)
    try:
        config = AutoConfig.from_pretrained(path, num_labels=len(label_names))
    except (OSError, ValueError) as err:
        raise ModelError(_unloadable(cfg.name, path, "model", err)) from None
    config.problem_type = "single_label_classification"
    config.id2label = dict(enumerate(label_names))
    config.label2id = {label: i for i, label in enumerate(label_names)}
    if getattr(config, "architectures", None) is None:
        config.architectures = []
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # "newly initialised classifier" is what we asked for
    try:
        return AutoModelForImageClassification.from_pretrained(path, config=config, ignore_mismatched_sizes=True)
    except (OSError, ValueError) as err:
        raise ModelError(_unloadable(cfg.name, path, "model", err)) from None
    finally:
        hf_logging.set_verbosity(verbosity)


def _unloadable(name: str, path: str, what: str, err: Exception) -> str:
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    where = f"from {path}" if path != name else "(not a local directory, so it must come from the hub: offline?)"
    first = first if len(first) <= 160 else first[:157] + "..."
    return (f"cannot load the {what} of {name!r} {where}: {first}; image classification needs an image "
            "classification checkpoint with its image processor: set model.name to one (a local directory such "
            "as ../shared/models/dinov2-small, or a hub id when online)")


# ==================================================================================================
# Another image size than the checkpoint's (task_options.image_size)
# ==================================================================================================

def interpolate_positions(model: torch.nn.Module) -> None:
    """Make ``model`` take images of another size than its checkpoint's: ViT, DeiT and BEiT
    interpolate their position embeddings only when asked (``interpolate_pos_encoding=True``, which
    is then bound into ``forward``; pass it yourself to a stock model); DINOv2 always does."""
    import functools
    import inspect

    if "interpolate_pos_encoding" in inspect.signature(model.forward).parameters:
        model.forward = functools.partial(model.forward, interpolate_pos_encoding=True)


def resized_processor(processor, image_size: int):
    """A copy of ``processor`` that gives ``image_size`` × ``image_size`` pixels: the crop (when it
    crops) at that size with the resize keeping the checkpoint's resize/crop ratio (DINOv2: 256 → 224),
    else the resize itself. ViT-family models interpolate their position embeddings to the new grid."""
    import copy

    out = copy.deepcopy(processor)
    size = dict(getattr(out, "size", None) or {})
    if getattr(out, "do_center_crop", False) and getattr(out, "crop_size", None):
        crop = dict(out.crop_size)
        ratio = (size.get("shortest_edge") or size.get("height") or crop["height"]) / crop["height"]
        out.crop_size = {"height": image_size, "width": image_size}
        edge = max(image_size, round(image_size * ratio))
        out.size = {"shortest_edge": edge} if "shortest_edge" in size else {"height": edge, "width": edge}
    else:
        out.size = {"height": image_size, "width": image_size}
    return out
