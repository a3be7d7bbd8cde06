"""Building blocks of the image-classification tests: tiny ViT-family classifiers (2 layers, hidden 32,
32 x 32 images in 8 x 8 patches) built from configs, a matching image processor, and small image folders
written on the fly. No download."""

from __future__ import annotations

from pathlib import Path

import torch
import transformers
from PIL import Image

from rankadapt.tasks.image_classification import image_model_from_config

VISION_ARCHITECTURES = ("vit", "deit", "beit", "dinov2")
IMAGE_SIZE = 32
CIFAR10 = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "cifar10"
DINOV2_SMALL = Path(__file__).resolve().parents[2].parent / "shared" / "models" / "dinov2-small"


def tiny_vision_config(arch: str, num_labels: int = 3) -> transformers.PretrainedConfig:
    cls = {"vit": transformers.ViTConfig, "deit": transformers.DeiTConfig, "beit": transformers.BeitConfig,
           "dinov2": transformers.Dinov2Config}[arch]
    sizes = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=IMAGE_SIZE, patch_size=8,
                 num_labels=num_labels)
    if arch == "dinov2":
        return cls(mlp_ratio=2, **sizes)
    return cls(intermediate_size=64, **sizes)


def tiny_vision_model(arch: str = "vit", num_labels: int = 3, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return image_model_from_config(tiny_vision_config(arch, num_labels)).eval()


def tiny_pixels(batch: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(seed))


def tiny_processor(size: int = IMAGE_SIZE):
    """A ViT image processor resizing to ``size`` (the PIL backend when torchvision is absent)."""
    cls = getattr(transformers, "ViTImageProcessorPil", transformers.ViTImageProcessor)
    return cls(size={"height": size, "width": size})


def write_image(path: Path, color=(200, 30, 30), mode: str = "RGB", size=(40, 24)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)
    return path


def make_image_folder(root: Path, classes: dict[str, int], suffix: str = ".png") -> Path:
    """``root/<class>/<i><suffix>``: per class a distinct colour, each image a slightly different shade."""
    for c, (name, count) in enumerate(sorted(classes.items())):
        for i in range(count):
            write_image(root / name / f"{i:03d}{suffix}", color=(40 * c % 256, 10 * i % 256, 255 - 30 * c % 256))
    return root
