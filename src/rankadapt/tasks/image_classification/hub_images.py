"""Image-classification splits from the Hugging Face hub (``data.hub_dataset=cifar100``, ``dtd`` ...).

A hub split holds its images inside the dataset (encoded bytes in Arrow), not as files, while the rest
of this package works on files: :class:`.images.ImageExamples` holds paths, the pixel cache
(:mod:`.pixels`) is keyed by the bytes of those files, and ``predict`` reads files. Rather than give
every one of those a second, in-memory kind of example, a hub split is written **once** to disk as an
image folder and then read by the image-folder reader like any local folder::

    <cache_dir>/hub-images/<hash>/<class id>/<row>.<png|jpg|...>

(``<cache_dir>`` is ``data.cache_dir``, default ``~/.cache/rankadapt``.) The folder is
content-addressed: ``<hash>`` covers every image's bytes and label, so the same split is written once
and found again by every later run, method and seed (the hashing pass reads the encoded bytes only,
decoding nothing), and a changed dataset gets a new folder. It is written under a temporary name and
renamed into place, so a folder that exists is complete (two processes writing it at once are fine).

Images keep the bytes the hub stores (PNG, JPEG ...: no re-encoding loss, no growth from writing a
JPEG as PNG); an image in a format the folder reader does not take by extension is decoded and written
as PNG. Class folders are the zero-padded class ids, not the class names, so any name (with ``/``, a
leading dot, names equal but for case) is safe and the folders sort in id order; the examples read
back are relabelled with the dataset's class names in its ``ClassLabel`` order. Rows come back grouped
by class, in row order within a class, as from a local folder of the same images.

Columns: the image column is ``task_options.image_column`` when set to another name than its default,
else the column whose feature is ``datasets.Image`` (``img`` / ``image`` first if there are several;
a column named so if none is); the label column is
``data.label_column``, else ``label``, ``fine_label``, or the first ``ClassLabel`` feature. A
``ClassLabel`` gives the class names; a plain column's labels are mapped as a table's (class names
from ``data.label_names``, else its distinct values sorted).
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from ...core.errors import DataError
from ..text_classification.labels import class_ids, infer_label_names
from ..text_classification.records import RawTable
from .images import UNREADABLE, ImageExamples, read_image_folder

HUB_IMAGES_DIR = "hub-images"
DEFAULT_CACHE_ROOT = Path("~/.cache/rankadapt")
FOLDER_FORMAT = "1"
"""Bump when the folder layout or the bytes written change, so old folders are not reused."""
IMAGE_COLUMNS = ("img", "image")
LABEL_COLUMNS = ("label", "fine_label")
_SUFFIXES = {"PNG": ".png", "JPEG": ".jpg", "MPO": ".jpg", "GIF": ".gif", "BMP": ".bmp", "WEBP": ".webp",
             "TIFF": ".tif"}
_BATCH = 256
_SHOWN = 5


def hub_images_root(cache_dir: str | Path | None) -> Path:
    """``<cache_dir>/hub-images`` (default ``~/.cache/rankadapt/hub-images``)."""
    return (Path(cache_dir) if cache_dir else DEFAULT_CACHE_ROOT).expanduser() / HUB_IMAGES_DIR


def read_hub_images(split, where: str, root: Path, image_column: str | None = None, label_column: str | None = None,
                    label_names: Sequence[str] | None = None) -> ImageExamples:
    """One hub split (a ``datasets.Dataset``) as :class:`ImageExamples` over files under ``root`` (module doc).

    ``where`` (``hub: cifar100[train]``) names the split in messages and in the examples;
    ``label_names`` maps a plain (not ``ClassLabel``) label column, as for tables.
    """
    import datasets

    if len(split) == 0:
        raise DataError(f"{where} has no images; use another split or local images (data.train_dir / data.eval_dir)")
    image = _image_column(split, image_column, where)
    label = _label_column(split, label_column, image, where)
    feature = split.features[label]
    values = split.select_columns([label]).to_dict()[label]
    if isinstance(feature, datasets.ClassLabel):
        names = tuple(feature.names)
        bad = [i for i, v in enumerate(values) if not isinstance(v, int) or not 0 <= v < len(names)]
        if bad:
            raise DataError(f"{where}: {len(bad)} image(s) have no class (label {values[bad[0]]!r} in column "
                            f"{label!r}, first at row {bad[0] + 1}); the split is unlabelled: pass labelled "
                            "images with data.eval_dir / data.train_dir, or a data.hub_dataset with labels")
        ids = list(values)
    else:
        table = RawTable(where, [""] * len(values), None, values)
        names = tuple(label_names) if label_names is not None else infer_label_names(table)
        ids = class_ids(table, names)
    folder = _materialize(split.select_columns([image]).cast_column(image, datasets.Image(decode=False)), image,
                          ids, len(names), root, where)
    found = read_image_folder(folder, where)
    return ImageExamples(found.paths, tuple(int(found.label_names[i]) for i in found.labels), names, where)


def _image_column(split, chosen: str | None, where: str) -> str:
    import datasets

    if chosen is not None:
        if chosen not in split.column_names:
            raise DataError(f"{where} has no image column {chosen!r} (task_options.image_column); "
                            f"its columns: {_columns(split)}")
        return chosen
    images = [name for name, feature in split.features.items() if isinstance(feature, datasets.Image)]
    images = images or [name for name in IMAGE_COLUMNS if name in split.column_names]  # paths or bytes, by name
    if not images:
        raise DataError(f"{where} has no image column (a datasets.Image feature); its columns: {_columns(split)}; "
                        "set task_options.image_column, or pass local images with data.train_dir")
    return next((name for name in IMAGE_COLUMNS if name in images), images[0])


def _label_column(split, chosen: str | None, image: str, where: str) -> str:
    import datasets

    if chosen is not None:
        if chosen not in split.column_names:
            raise DataError(f"{where} has no label column {chosen!r} (data.label_column); its columns: {_columns(split)}")
        return chosen
    found = next((name for name in LABEL_COLUMNS if name in split.column_names), None)
    found = found or next((name for name, feature in split.features.items()
                           if isinstance(feature, datasets.ClassLabel)), None)
    if found is None:
        raise DataError(f"{where} has no label column (label, fine_label or a ClassLabel feature); its columns: "
                        f"{_columns(split)}; set data.label_column")
    return found


def _columns(split) -> str:
    return ", ".join(f"{name} ({type(feature).__name__})" for name, feature in split.features.items())


# ==================================================================================================
# Writing the folder
# ==================================================================================================

def _materialize(split, column: str, ids: list[int], num_classes: int, root: Path, where: str) -> Path:
    """The split's images as ``root/<hash>/<class id>/<row>.<suffix>``, written unless already there."""
    class_width, row_width = len(str(max(num_classes - 1, 0))), len(str(max(len(ids) - 1, 0)))
    digest = hashlib.sha256(f"v{FOLDER_FORMAT}\x00{class_width}\x00{row_width}\x00{len(ids)}\x00".encode())
    for (row, data), label in zip(_encoded(split, column, where), ids):
        digest.update(label.to_bytes(8, "little", signed=True) + hashlib.sha256(data).digest())
    folder = root / digest.hexdigest()[:32]
    if folder.is_dir():
        return folder
    temporary = root / f".{folder.name}.tmp-{os.getpid()}"
    try:
        shutil.rmtree(temporary, ignore_errors=True)
        failures = []
        for (row, data), label in zip(_encoded(split, column, where), ids):
            directory = temporary / f"{label:0{class_width}d}"
            directory.mkdir(parents=True, exist_ok=True)
            try:
                _write_image(directory / f"{row:0{row_width}d}", data)
            except UNREADABLE as err:
                failures.append((row, err))
        if failures:
            shown = "; ".join(f"row {row + 1} ({str(err).strip() or type(err).__name__})" for row, err in failures[:_SHOWN])
            raise DataError(f"{where}: {len(failures)} image(s) cannot be read: {shown}"
                            f"{' ...' if len(failures) > _SHOWN else ''}; use another split or local images")
        try:
            temporary.rename(folder)
        except OSError:
            if not folder.is_dir():  # not another process that wrote the same folder first
                raise
    except OSError as err:
        raise DataError(f"cannot write the images of {where} under {root} ({err}); set data.cache_dir to a "
                        "writable directory with room for them") from None
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return folder


def _encoded(split, column: str, where: str) -> Iterator[tuple[int, bytes]]:
    """(row, encoded image bytes) of every row; ``split``'s image column is cast with ``decode=False``."""
    row = 0
    for batch in split.iter(batch_size=_BATCH):
        for value in batch[column]:
            yield row, _image_bytes(value, row, where)
            row += 1


def _image_bytes(value: Any, row: int, where: str) -> bytes:
    data = value.get("bytes") if isinstance(value, dict) else None
    if data is None and isinstance(value, dict) and value.get("path"):
        try:
            data = Path(value["path"]).read_bytes()
        except OSError as err:
            raise DataError(f"{where}, row {row + 1}: cannot read its image file {value['path']} ({err})") from None
    if data is None:
        raise DataError(f"{where}, row {row + 1}: no image (null); drop the row or use local images")
    return data


def _write_image(stem: Path, data: bytes) -> None:
    """``data`` as ``stem.<suffix>`` of its format, or decoded and written as PNG when the image-folder
    reader would not take that format's suffix. Raises one of :data:`UNREADABLE` for a bad image."""
    with Image.open(io.BytesIO(data)) as image:
        suffix = _SUFFIXES.get(image.format or "")
        if suffix is not None:
            stem.with_suffix(suffix).write_bytes(data)
            return
        image.load()
        if image.mode not in ("1", "L", "LA", "I", "P", "RGB", "RGBA"):
            image = image.convert("RGB")
        image.save(stem.with_suffix(".png"), "PNG")
