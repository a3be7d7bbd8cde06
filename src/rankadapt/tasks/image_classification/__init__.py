"""Image classification on ViT-family models (issue 21): the blocks of a task family.

- :mod:`.images`: image folders and CSV/JSONL tables -> :class:`ImageExamples`; VTAB-1k split; decoding;
- :mod:`.hub_images`: a hub split written once as an image folder under the cache, then read as one;
- :mod:`.pixels`: preprocess once with the checkpoint's image processor, safetensors cache, collator;
- :mod:`.models`: the ViT/DeiT/BEiT/DINOv2 module-name map, loading a checkpoint and its processor;
- :mod:`.metrics`: accuracy, top-5 accuracy, top-k labels with probabilities;
- :mod:`.family`: :class:`ImageClassificationFamily`, the TaskFamily methods over these blocks.
"""

from .family import (ImageClassificationFamily, ImageClassificationSettings, ImageTaskData, ImageTaskSpec,
                     eval_outputs, image_task_spec, load_image_data, predict_images)
from .images import (ImageExamples, align_to_training, limit_examples, load_rgb, read_image_folder,
                     read_image_table, read_images, vtab1k_split)
from .metrics import accuracy, classification_metrics, top_k_accuracy, top_k_predictions
from .models import VIT_FAMILY_MODULES, image_model_from_config, load_image_model, load_image_processor
from .pixels import ImageCollator, PixelDataset, encode_images, normalize, preprocess

__all__ = [
    "ImageClassificationFamily", "ImageClassificationSettings", "ImageCollator", "ImageExamples", "ImageTaskData",
    "ImageTaskSpec", "PixelDataset", "VIT_FAMILY_MODULES", "accuracy", "align_to_training",
    "classification_metrics", "encode_images", "eval_outputs", "image_model_from_config", "image_task_spec",
    "limit_examples", "load_image_data", "load_image_model", "load_image_processor", "load_rgb", "normalize",
    "predict_images", "preprocess", "read_image_folder", "read_image_table", "read_images", "top_k_accuracy",
    "top_k_predictions", "vtab1k_split",
]
