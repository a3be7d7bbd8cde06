"""Image-classification data: image folders and tables, class alignment, VTAB-1k, decoding, the pixel
cache, and the real CIFAR-10 files in ../shared/data/cifar10 (skipped when absent)."""

from __future__ import annotations

import json
import logging
from collections import Counter

import pytest
import torch
from PIL import Image

from rankadapt.core.config import DataConfig, RunConfig
from rankadapt.core.errors import DataError
from rankadapt.tasks.image_classification import (ImageClassificationFamily, ImageClassificationSettings,
                                                  ImageCollator, align_to_training, encode_images,
                                                  load_image_data, load_rgb, preprocess, read_image_folder,
                                                  read_image_table, vtab1k_split)
from rankadapt.tasks.image_classification import pixels as pixels_module

from image_helpers import CIFAR10, make_image_folder, tiny_processor, write_image

CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


# -- image folders ------------------------------------------------------------------------------------
def test_image_folder_class_order_labels_and_ignored_files(tmp_path):
    root = make_image_folder(tmp_path / "train", {"zebra": 2, "apple": 3, "Mango": 1})
    write_image(root / "apple" / "nested" / "deep.jpg")       # subfolders of a class belong to it
    (root / "apple" / "notes.txt").write_text("not an image")
    write_image(root / "apple" / ".hidden.png")
    write_image(root / ".cache" / "x.png")                     # hidden folder: not a class
    examples = read_image_folder(root)
    assert examples.label_names == ("Mango", "apple", "zebra")  # sorted folder names, as ImageFolder
    assert Counter(examples.labels) == {0: 1, 1: 4, 2: 2}
    assert root / "apple" / "nested" / "deep.jpg" in examples.paths
    assert all(p.suffix in (".png", ".jpg") and not p.name.startswith(".") for p in examples.paths)
    assert [examples.label_names[label] for label in examples.labels] == [p.relative_to(root).parts[0]
                                                                          for p in examples.paths]


@pytest.mark.parametrize("layout, message", [
    ("missing", r"data.train_dir=.*is missing; point it to a directory of class folders"),
    ("file", r"is a file, not a directory"),
    ("nothing", r"has no class folders; put each class's images in its own folder"),
    ("loose", r"holds 2 image\(s\) but no class folders"),
    ("empty class", r"1 class folder\(s\) hold no image .*/cat; add images or remove the folder"),
    ("only text", r"1 class folder\(s\) hold no image .*/dog"),
])
def test_bad_image_folders_get_clear_errors(tmp_path, layout, message):
    root = tmp_path / "data"
    if layout == "file":
        root.write_text("x")
    elif layout == "nothing":
        root.mkdir()
    elif layout == "loose":
        write_image(root / "a.png"), write_image(root / "b.png")
    elif layout == "empty class":
        make_image_folder(root, {"bird": 2})
        (root / "cat").mkdir()
    elif layout == "only text":
        make_image_folder(root, {"bird": 2})
        (root / "dog").mkdir()
        (root / "dog" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match=message):
        read_image_folder(root)


def test_eval_classes_are_aligned_by_name_and_unknown_classes_rejected(tmp_path):
    train = read_image_folder(make_image_folder(tmp_path / "train", {"a": 1, "b": 1, "c": 1}))
    subset = read_image_folder(make_image_folder(tmp_path / "eval", {"c": 2}), "data.eval_dir")
    aligned = align_to_training(subset, train.label_names)
    assert aligned.labels == (2, 2) and aligned.label_names == ("a", "b", "c")
    other = read_image_folder(make_image_folder(tmp_path / "other", {"c": 1, "d": 1}), "data.eval_dir")
    with pytest.raises(DataError, match=r"data.eval_dir .* has classes the training data lacks: d; the classes "
                                        r"there are a, b, c"):
        align_to_training(other, train.label_names)


# -- tables -------------------------------------------------------------------------------------------
def test_csv_and_jsonl_tables_with_relative_paths_names_and_ids(tmp_path):
    write_image(tmp_path / "img" / "x.png"), write_image(tmp_path / "img" / "y.png")
    csv_file = tmp_path / "train.csv"
    csv_file.write_text("path,kind\nimg/x.png,dog\nimg/y.png,cat\nimg/x.png,dog\n")
    table = read_image_table(csv_file, image_column="path", label_column="kind")
    assert table.label_names == ("cat", "dog") and table.labels == (1, 0, 1)
    assert table.paths[0] == tmp_path / "img" / "x.png"
    jsonl = tmp_path / "eval.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in [{"image": str(tmp_path / "img" / "y.png"), "label": 1},
                                                        {"image": "img/x.png", "label": "cat"}]))
    evaluation = read_image_table(jsonl, label_names=table.label_names)
    assert evaluation.labels == (1, 0) and evaluation.paths[0].is_absolute()


def test_table_errors_name_the_fix(tmp_path):
    write_image(tmp_path / "x.png")
    missing = tmp_path / "missing.csv"
    missing.write_text("image,label\nx.png,a\nnope.png,b\n")
    with pytest.raises(DataError, match=r"1 image file\(s\) named in column 'image' do not exist: .*nope.png"):
        read_image_table(missing)
    wrong_label = tmp_path / "labels.csv"
    wrong_label.write_text("image,label\nx.png,zebra\n")
    with pytest.raises(DataError, match=r"outside the task's label set: 'zebra'"):
        read_image_table(wrong_label, label_names=("a", "b"))
    with pytest.raises(DataError, match="column"):
        read_image_table(wrong_label, image_column="path")


# -- VTAB-1k ------------------------------------------------------------------------------------------
def test_vtab1k_split_sizes_disjoint_stratified_and_seeded(tmp_path):
    examples = read_image_folder(make_image_folder(tmp_path / "t", {"a": 300, "b": 900}, suffix=".bmp"))
    train, validation = vtab1k_split(examples, seed=7)
    assert (len(train), len(validation)) == (800, 200)
    assert not set(train.paths) & set(validation.paths)
    assert Counter(validation.labels) == {0: 50, 1: 150}            # class shares of the 1,200 kept
    assert vtab1k_split(examples, seed=7) == (train, validation)
    assert vtab1k_split(examples, seed=8)[1].paths != validation.paths
    small = examples.subset(range(999))
    with pytest.raises(DataError, match=r"VTAB-1k protocol needs 1,000 training images .* has 999"):
        vtab1k_split(small, seed=7)


# -- decoding -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode, color, expected", [
    ("L", 100, (100, 100, 100)),                # grayscale: replicated to three channels
    ("RGBA", (10, 20, 30, 0), (255, 255, 255)),   # fully transparent: white, not the stored colour
    ("RGBA", (10, 20, 30, 255), (10, 20, 30)),    # opaque: unchanged
    ("LA", (50, 255), (50, 50, 50)),
    ("CMYK", (0, 0, 0, 0), (255, 255, 255)),
])
def test_decoding_gives_rgb_for_every_mode(tmp_path, mode, color, expected):
    path = write_image(tmp_path / "x.png" if mode != "CMYK" else tmp_path / "x.jpg", color=color, mode=mode)
    image = load_rgb(path)
    assert image.mode == "RGB" and image.size == (40, 24)
    assert all(abs(a - b) <= 1 for a, b in zip(image.getpixel((3, 3)), expected))


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 24), (1, 2, 3))
    exif = image.getexif()
    exif[0x0112] = 6  # rotated 90 degrees: stored landscape, shown portrait
    image.save(tmp_path / "r.jpg", exif=exif)
    assert load_rgb(tmp_path / "r.jpg").size == (24, 40)


def test_unreadable_images_are_all_listed_in_one_error(tmp_path):
    root = make_image_folder(tmp_path / "t", {"a": 3, "b": 3})
    (root / "a" / "001.png").write_bytes(b"not an image at all")
    good = (root / "b" / "002.png").read_bytes()
    (root / "b" / "002.png").write_bytes(good[: len(good) // 2])   # truncated
    examples = read_image_folder(root)
    with pytest.raises(DataError, match=r"2 image\(s\) cannot be read: .*a/001.png .*b/002.png .*replace or remove"):
        preprocess(examples, tiny_processor())


# -- preprocessing and the cache ----------------------------------------------------------------------
def test_cached_pixels_normalised_by_the_collator_match_the_processor(tmp_path):
    examples = read_image_folder(make_image_folder(tmp_path / "t", {"a": 3, "b": 2}, suffix=".jpg"))
    processor = tiny_processor()
    dataset = encode_images(examples, processor, tmp_path / "cache")
    assert dataset.pixels.dtype == torch.uint8 and dataset.pixels.shape == (5, 3, 32, 32)
    assert dataset.labels.tolist() == list(examples.labels) and dataset.lengths is None
    batch = ImageCollator(processor)([dataset[i] for i in range(5)])
    direct = processor(images=[load_rgb(p) for p in examples.paths], return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(batch["pixel_values"], direct, atol=1e-6, rtol=0)
    assert batch["labels"].dtype == torch.long


def test_cache_is_reused_and_keyed_by_file_bytes_labels_and_processor(tmp_path, monkeypatch):
    root = make_image_folder(tmp_path / "t", {"a": 2, "b": 2})
    examples = read_image_folder(root)
    cache = tmp_path / "cache"
    first = encode_images(examples, tiny_processor(), cache)
    files = list(cache.glob("*.safetensors"))
    assert len(files) == 1
    calls = []
    real = pixels_module.preprocess
    monkeypatch.setattr(pixels_module, "preprocess", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = encode_images(examples, tiny_processor(), cache)
    assert not calls and torch.equal(again.pixels, first.pixels)
    encode_images(examples, tiny_processor(size=16), cache)                       # processor settings
    write_image(root / "a" / "000.png", color=(1, 2, 3))                           # file contents
    changed = encode_images(read_image_folder(root), tiny_processor(), cache)
    encode_images(examples.subset([1, 0, 2, 3]), tiny_processor(), cache)          # labels / order
    assert len(calls) == 3 and len(list(cache.glob("*.safetensors"))) == 4
    assert not torch.equal(changed.pixels[0], first.pixels[0])


def test_a_corrupt_cache_entry_is_recomputed_not_an_error(tmp_path, caplog):
    examples = read_image_folder(make_image_folder(tmp_path / "t", {"a": 2}))
    first = encode_images(examples, tiny_processor(), tmp_path / "cache")
    (entry,) = (tmp_path / "cache").glob("*.safetensors")
    entry.write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING):
        again = encode_images(examples, tiny_processor(), tmp_path / "cache")
    assert torch.equal(again.pixels, first.pixels) and "ignoring unreadable pixel cache" in caplog.text


# -- the family's data entry point --------------------------------------------------------------------
def _Data(**data) -> RunConfig:  # noqa: N802  (reads as the config section it fills)
    """A run config of ``data.task=imagefolder`` with these data keys (the family reads config.data)."""
    return RunConfig(data=DataConfig(**data))


def test_family_reads_dirs_with_protocols_limits_and_needs_an_eval_set(tmp_path):
    train = make_image_folder(tmp_path / "train", {"a": 6, "b": 6})
    evaluation = make_image_folder(tmp_path / "eval", {"b": 2, "a": 3})
    family = ImageClassificationFamily()
    data = family.load_data(_Data(task="imagefolder", train_dir=str(train), eval_dir=str(evaluation),
                                  train_limit=4))
    assert len(data.train) == 4 and Counter(data.train.labels) == {0: 2, 1: 2}
    assert list(data.eval_splits) == ["validation"] and data.eval_splits["validation"].labels == (0, 0, 0, 1, 1)
    assert data.spec.label_names == ("a", "b") and data.spec.metrics == ("accuracy",)
    ordered = family.load_data(_Data(task="imagefolder", train_dir=str(train), eval_dir=str(evaluation),
                                     label_names=["b", "a"]))             # data.label_names sets the order
    assert ordered.spec.label_names == ("b", "a") and Counter(ordered.train.labels) == {0: 6, 1: 6}
    assert ordered.eval_splits["validation"].labels == (1, 1, 1, 0, 0)
    with pytest.raises(DataError, match=r"data.train_dir .* has classes data.label_names lacks: b"):
        family.load_data(_Data(task="imagefolder", train_dir=str(train), eval_dir=str(evaluation),
                               label_names=["a"]))
    with pytest.raises(DataError, match="needs an evaluation set: set data.eval_dir"):
        family.load_data(_Data(task="imagefolder", train_dir=str(train)))
    with pytest.raises(ValueError, match="needs data.train_dir"):  # refused when the config is validated
        family.load_data(_Data(task="imagefolder"))


# -- the real CIFAR-10 files --------------------------------------------------------------------------
needs_cifar = pytest.mark.skipif(not (CIFAR10 / "train").is_dir(), reason="../shared/data/cifar10 is absent")


@needs_cifar
def test_real_cifar10_counts_labels_and_class_order():
    train = read_image_folder(CIFAR10 / "train")
    test = read_image_folder(CIFAR10 / "test", "data.eval_dir")
    assert train.label_names == test.label_names == CIFAR_CLASSES
    assert (len(train), len(test)) == (1000, 2000)
    assert Counter(train.labels) == dict.fromkeys(range(10), 100)
    assert Counter(test.labels) == dict.fromkeys(range(10), 200)
    assert all(p.parent.name == CIFAR_CLASSES[label] for p, label in zip(train.paths, train.labels))
    image = load_rgb(train.paths[0])
    assert image.mode == "RGB" and image.size == (32, 32)


@needs_cifar
def test_real_cifar10_under_the_vtab1k_protocol():
    data = load_image_data(str(CIFAR10 / "train"), str(CIFAR10 / "test"), ImageClassificationSettings(protocol="vtab-1k"))
    assert {name: len(split) for name, split in data.eval_splits.items()} == {"validation": 200, "test": 2000}
    assert len(data.train) == 800 and Counter(data.train.labels) == dict.fromkeys(range(10), 80)
    assert Counter(data.eval_splits["validation"].labels) == dict.fromkeys(range(10), 20)
    assert data.spec.metrics == ("accuracy", "top5_accuracy")
