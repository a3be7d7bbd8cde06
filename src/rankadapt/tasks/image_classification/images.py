"""Reading image-classification examples: image folders, CSV/JSONL tables, the VTAB-1k split, decoding.

Two layouts are read:

- the image-folder layout of Hugging Face ``datasets``' ``imagefolder`` and torchvision's
  ``ImageFolder``: ``DIR/<class>/**/*.jpg|png|...``; class ``i`` is the ``i``-th class folder in
  sorted order, files that are not images (``.txt``, ``.DS_Store``) and hidden entries are ignored;
- a CSV/TSV/JSONL table with an image-path column and a label column (paths relative to the
  table's own directory), labels written as names or as class ids.

An evaluation set is mapped onto the training classes *by name*: it may hold fewer classes than
train (its labels keep the training ids), never a class the model was not trained on.

The VTAB-1k protocol (Zhai et al. 2019, §3) trains on 1,000 images of a task's train split:
800 for training and 200 for validation, and reports accuracy on the test split.
:func:`vtab1k_split` draws them with a fixed seed (stratified by class), so every run and method
sees the same 800/200.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageOps

from ..text_classification.files import read_table
from ..text_classification.labels import class_ids, infer_label_names, sample_indices
from ...core.errors import DataError

# What Pillow raises for a file that is not a readable image (DecompressionBombError is no OSError).
UNREADABLE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
VTAB_TRAIN, VTAB_VALIDATION = 800, 200
_SHOWN = 5


@dataclass(frozen=True)
class ImageExamples:
    """One split: image files with class ids; ``label_names[i]`` names class ``i``."""

    paths: tuple[Path, ...]
    labels: tuple[int, ...]
    label_names: tuple[str, ...]
    where: str
    """Where the split came from, for messages and ``results.json`` (a directory or a file)."""

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices: Sequence[int] | np.ndarray) -> ImageExamples:
        idx = [int(i) for i in indices]
        return ImageExamples(tuple(self.paths[i] for i in idx), tuple(self.labels[i] for i in idx),
                             self.label_names, self.where)


# ==================================================================================================
# Image folders
# ==================================================================================================

def read_image_folder(directory: str | Path, key: str = "data.train_dir") -> ImageExamples:
    """Every image under ``directory/<class>/``, classes in sorted folder order.

    ``key`` names the setting the directory came from, so messages say what to change.
    """
    root = Path(directory).expanduser()
    if not root.is_dir():
        kind = "a file, not a directory" if root.exists() else "missing"
        raise DataError(f"{key}={root} is {kind}; point it to a directory of class folders (DIR/<class>/*.jpg)")
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        loose = _images_in(root, recursive=False)
        what = f"holds {len(loose)} image(s) but no class folders" if loose else "has no class folders"
        raise DataError(f"{key}={root} {what}; put each class's images in its own folder: {root}/<class>/*.jpg")
    files = {c.name: _images_in(c, recursive=True) for c in classes}
    empty = [c for c in classes if not files[c.name]]
    if empty:
        shown = ", ".join(str(c) for c in empty[:_SHOWN]) + (" ..." if len(empty) > _SHOWN else "")
        raise DataError(f"{key}: {len(empty)} class folder(s) hold no image ({'/'.join(IMAGE_SUFFIXES)}): {shown}; "
                        "add images or remove the folder(s) (class ids follow the sorted folder names)")
    names = tuple(c.name for c in classes)
    paths = [path for name in names for path in files[name]]
    labels = [i for i, name in enumerate(names) for _ in files[name]]
    return ImageExamples(tuple(paths), tuple(labels), names, str(root))


def _images_in(directory: Path, recursive: bool) -> list[Path]:
    """Image files by extension, sorted; hidden files and folders skipped."""
    found = directory.rglob("*") if recursive else directory.iterdir()
    return sorted(p for p in found if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(directory).parts))


# ==================================================================================================
# Tables
# ==================================================================================================

def read_image_table(path: str | Path, image_column: str = "image", label_column: str = "label",
                     label_names: Sequence[str] | None = None) -> ImageExamples:
    """A CSV/TSV/JSONL file of image paths and labels; paths are relative to the file's directory.

    Labels are names or class ids of ``label_names``; without ``label_names`` the classes are the
    distinct labels, sorted (numerically when they are all integers), as for text files.
    """
    path = Path(path).expanduser()
    table = read_table(path, image_column, label_column=label_column)
    names = tuple(label_names) if label_names is not None else infer_label_names(table)
    labels = class_ids(table, names)
    paths = [_resolve(path.parent, value) for value in table.text]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        shown = ", ".join(str(p) for p in missing[:_SHOWN]) + (" ..." if len(missing) > _SHOWN else "")
        raise DataError(f"{path}: {len(missing)} image file(s) named in column {image_column!r} do not exist: "
                        f"{shown}; paths are read relative to {path.parent}")
    return ImageExamples(tuple(paths), tuple(labels), names, str(path))


def _resolve(base: Path, value: str) -> Path:
    image = Path(value.strip()).expanduser()
    return image if image.is_absolute() else base / image


def read_images(location: str | Path, key: str, image_column: str = "image", label_column: str = "label",
                label_names: Sequence[str] | None = None) -> ImageExamples:
    """A directory (image-folder layout) or a table file, whichever ``location`` is."""
    if Path(location).expanduser().is_dir():
        return read_image_folder(location, key)
    return read_image_table(location, image_column, label_column, label_names)


# ==================================================================================================
# Aligning evaluation classes, VTAB-1k
# ==================================================================================================

def align_to_training(evaluation: ImageExamples, train_names: tuple[str, ...], key: str = "data.eval_dir",
                      reference: str = "the training data") -> ImageExamples:
    """``evaluation`` relabelled with the training class ids, matched by class name.

    Fewer classes than train is fine (a test set may miss a class); a class train lacks is an error,
    since the model has no output for it. ``reference`` names where ``train_names`` came from.
    """
    unknown = [name for name in evaluation.label_names if name not in train_names]
    if unknown:
        raise DataError(f"{key} ({evaluation.where}) has classes {reference} lacks: "
                        f"{', '.join(unknown[:_SHOWN])}{' ...' if len(unknown) > _SHOWN else ''}; the classes "
                        f"there are {', '.join(train_names)}; rename or remove those classes, or add them there")
    ids = tuple(train_names.index(evaluation.label_names[label]) for label in evaluation.labels)
    return ImageExamples(evaluation.paths, ids, train_names, evaluation.where)


def limit_examples(examples: ImageExamples, size: int | None, seed: int) -> ImageExamples:
    """A seeded subset of ``size`` images, stratified by class (all of them when ``size`` is None)."""
    if size is None or size >= len(examples):
        return examples
    return examples.subset(sample_indices(examples.labels, size, seed))


def vtab1k_split(examples: ImageExamples, seed: int) -> tuple[ImageExamples, ImageExamples]:
    """(800 training, 200 validation) images drawn from ``examples`` with ``seed``, stratified by class.

    A train split larger than 1,000 images is first subsampled to 1,000 (VTAB-1k's size), then
    split; the result depends only on the labels and the seed.
    """
    needed = VTAB_TRAIN + VTAB_VALIDATION
    if len(examples) < needed:
        raise DataError(f"the VTAB-1k protocol needs {needed:,} training images ({VTAB_TRAIN} train + "
                        f"{VTAB_VALIDATION} validation) but {examples.where} has {len(examples):,}; "
                        "add images or use the full protocol")
    pool = examples.subset(sample_indices(examples.labels, needed, seed)) if len(examples) > needed else examples
    validation = set(sample_indices(pool.labels, VTAB_VALIDATION, seed + 1).tolist())
    train = [i for i in range(len(pool)) if i not in validation]
    return pool.subset(train), pool.subset(sorted(validation))


# ==================================================================================================
# Decoding
# ==================================================================================================

def load_rgb(path: Path) -> Image.Image:
    """The image at ``path`` as 3-channel RGB, upright (EXIF orientation applied).

    Grayscale, palette and CMYK images are converted; transparent ones (RGBA, LA, P with a
    transparent colour) are composited onto white, as transformers' ``convert_to_rgb`` does, so
    transparent pixels do not turn into whatever colour they happen to store. Raises ``OSError``
    (or another of :data:`UNREADABLE`) for a file that is not a readable image.
    """
    with Image.open(path) as image:
        image.load()
        image = ImageOps.exif_transpose(image)
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def unreadable_images_error(failures: list[tuple[Path, Exception]], where: str) -> DataError:
    shown = "; ".join(f"{p} ({_reason(err)})" for p, err in failures[:_SHOWN])
    more = f" and {len(failures) - _SHOWN} more" if len(failures) > _SHOWN else ""
    return DataError(f"{where}: {len(failures)} image(s) cannot be read: {shown}{more}; "
                     "replace or remove these files")


def _reason(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
