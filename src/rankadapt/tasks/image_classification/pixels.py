"""Decoding and preprocessing every image once, caching the pixels, and batching them.

Decoding a JPEG and resizing it costs more than a ViT-S forward pass on CPU, and it is the same for
every epoch, method and seed of a sweep, so :func:`encode_images` runs the checkpoint's own image
processor once and stores the result on disk, as tokenisation is cached for text.

What is stored: the processor's output *before* rescaling and normalisation, as uint8 (resize and
crop give whole pixel values), a quarter of the float32 size (1,000 images at 224 x 224: 150 MB
instead of 600 MB). :class:`ImageCollator` applies the processor's own rescale and normalisation,
``(x · rescale_factor − mean) / std``, per batch; the result matches the processor's output to
float rounding (tested at 1e-6). A processor whose output cannot be split that way (no
``do_rescale``/``do_normalize`` switches, or fractional pixel values) is cached as its float32 output.

The cache is a safetensors file (tensors and string metadata only: loading it runs no code),
named by a hash of everything that changes the pixels: the bytes of every image file, the labels,
the processor's class and settings. An unreadable entry is recomputed; an unwritable cache directory
is logged, never an error.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from ...core.ownership import write_atomically
from .images import UNREADABLE, ImageExamples, load_rgb, unreadable_images_error

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path("~/.cache/rankadapt/pixels")
CACHE_FORMAT = "1"
"""Bump when the cached tensors change meaning, so old files are not misread."""
CHUNK = 64


class PixelDataset(torch.utils.data.Dataset):
    """Preprocessed images ``pixels`` [N, C, H, W] (uint8 before normalisation, or float32) and ``labels`` [N]."""

    lengths = None
    """Every image costs the same: the loader uses a plain seeded permutation (TaskFamily.encode)."""

    def __init__(self, pixels: torch.Tensor, labels: torch.Tensor) -> None:
        if len(pixels) != len(labels):
            raise ValueError(f"{len(pixels)} images for {len(labels)} labels")
        self.pixels = pixels
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"pixel_values": self.pixels[index], "labels": self.labels[index]}


# ==================================================================================================
# Preprocessing
# ==================================================================================================

def deferred_normalization(processor) -> bool:
    """Whether the processor can leave rescaling and normalisation to the collator (see module doc)."""
    return isinstance(getattr(processor, "do_rescale", None), bool) and \
        isinstance(getattr(processor, "do_normalize", None), bool)


def preprocess(examples: ImageExamples, processor, progress: Callable[[int], None] | None = None) -> PixelDataset:
    """Decode and preprocess every image; raise one DataError listing all unreadable files."""
    deferred = deferred_normalization(processor)
    kwargs = {"do_rescale": False, "do_normalize": False} if deferred else {}
    chunks, failures = [], []
    for start in range(0, len(examples), CHUNK):
        images = []
        for path in examples.paths[start:start + CHUNK]:
            try:
                images.append(load_rgb(path))
            except UNREADABLE as err:
                failures.append((path, err))
        if not failures:  # after a failure, only keep looking for more bad files
            chunks.append(processor(images=images, return_tensors="pt", **kwargs)["pixel_values"])
        if progress is not None:
            progress(len(examples.paths[start:start + CHUNK]))
    if failures:
        raise unreadable_images_error(failures, examples.where)
    pixels = torch.cat(chunks) if chunks else torch.zeros(0, 3, 1, 1)
    labels = torch.tensor(examples.labels, dtype=torch.long)
    return PixelDataset(_as_uint8(pixels) if deferred else pixels.float(), labels)


def _as_uint8(pixels: torch.Tensor) -> torch.Tensor:
    """Whole values in 0..255 (what resize and crop of an 8-bit image give) as uint8."""
    if pixels.dtype == torch.uint8:
        return pixels
    if pixels.min() < 0 or pixels.max() > 255 or not torch.equal(pixels, pixels.round()):
        raise ValueError("the image processor returns fractional pixel values before rescaling; "
                         "this processor cannot defer normalisation")
    return pixels.to(torch.uint8)


def normalize(pixels: torch.Tensor, processor) -> torch.Tensor:
    """The processor's rescale and normalisation of uint8 pixels; float pixels pass unchanged."""
    if pixels.dtype != torch.uint8:
        return pixels
    out = pixels.float()
    if processor.do_rescale:
        out = out * float(processor.rescale_factor)
    if processor.do_normalize:
        shape = (1, -1, 1, 1) if out.ndim == 4 else (-1, 1, 1)
        mean = torch.as_tensor(processor.image_mean, dtype=out.dtype).view(shape)
        std = torch.as_tensor(processor.image_std, dtype=out.dtype).view(shape)
        out = (out - mean) / std
    return out


class ImageCollator:
    """Items -> ``{"pixel_values": float [B, C, H, W], "labels": long [B]}`` (normalised here)."""

    def __init__(self, processor) -> None:
        self.processor = processor

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        pixels = torch.stack([item["pixel_values"] for item in items])
        labels = torch.stack([torch.as_tensor(item["labels"]) for item in items]).long()
        return {"pixel_values": normalize(pixels, self.processor), "labels": labels}


# ==================================================================================================
# Caching
# ==================================================================================================

def encode_images(examples: ImageExamples, processor, cache_dir: str | Path | None,
                  progress: Callable[[int], None] | None = None) -> PixelDataset:
    """The preprocessed pixels of ``examples``, from the cache when present (see module doc)."""
    path = cache_path(examples, processor, cache_dir)
    cached = _load(path)
    if cached is not None:
        return cached
    dataset = preprocess(examples, processor, progress)
    _save(dataset, path)
    return dataset


def cache_path(examples: ImageExamples, processor, cache_dir: str | Path | None) -> Path:
    """``<cache_dir>/<hash>.safetensors``; the hash covers file bytes, labels and processor settings."""
    digest = hashlib.sha256()
    settings = processor.to_json_string() if hasattr(processor, "to_json_string") else repr(processor)
    for part in (f"v{CACHE_FORMAT}", type(processor).__name__, settings, str(deferred_normalization(processor)),
                 str(len(examples))):
        digest.update(part.encode("utf-8") + b"\x00")
    for path, label in zip(examples.paths, examples.labels):
        digest.update(_file_digest(path) + label.to_bytes(8, "little", signed=True))
    directory = Path(cache_dir).expanduser() if cache_dir else DEFAULT_CACHE_DIR.expanduser()
    return directory / f"{digest.hexdigest()[:32]}.safetensors"


def _file_digest(path: Path) -> bytes:
    """The file's bytes hashed (an unreadable file hashes its name: decoding reports it later)."""
    try:
        return hashlib.sha256(path.read_bytes()).digest()
    except OSError:
        return hashlib.sha256(b"unreadable:" + str(path).encode("utf-8", "surrogatepass")).digest()


def _load(path: Path) -> PixelDataset | None:
    if not path.is_file():
        return None
    try:
        tensors = load_file(str(path))
        if tensors["format"].tolist() != [int(CACHE_FORMAT)]:
            raise ValueError("cache format changed")
        return PixelDataset(tensors["pixel_values"], tensors["labels"])
    except (OSError, ValueError, KeyError, SafetensorError) as err:
        log.warning("ignoring unreadable pixel cache %s (%s); preprocessing the images again", path, err)
        return None


def _save(dataset: PixelDataset, path: Path) -> None:
    data = save({"pixel_values": dataset.pixels.contiguous(), "labels": dataset.labels.contiguous(),
                 "format": torch.tensor([int(CACHE_FORMAT)])})
    try:
        write_atomically(path, data)
    except OSError as err:
        log.warning("could not write the pixel cache %s (%s); set data.cache_dir to a writable "
                    "directory to reuse preprocessed images", path, err)
