"""Hub datasets by name (issues 18 and 21): summarization (xsum, cnn_dailymail, samsum, data.hub_dataset)
and image classification (data.task=imagefolder data.hub_dataset=...). No network: ``datasets.load_dataset``
is replaced by a function returning small in-memory datasets built by ``datasets`` itself (ClassLabel and
Image features included), and records which id and config were asked for."""

from __future__ import annotations

import io
import json
import sys
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from rankadapt.core.config import DATA_DIR_ENV, DataConfig, RunConfig
from rankadapt.core.errors import DataError
from rankadapt.tasks import family_for_task
from rankadapt.tasks.image_classification import ImageClassificationFamily
from rankadapt.tasks.summarization import SummaryPair
from rankadapt.tasks.summarization.family import HUB_TASKS, SummarizationFamily

from image_helpers import make_image_folder, tiny_processor

datasets = pytest.importorskip("datasets")


@pytest.fixture(autouse=True)
def no_data_root(monkeypatch):
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)


def fake_hub(monkeypatch, splits: dict[str, datasets.Dataset]) -> list[tuple[str, str | None]]:
    """``datasets.load_dataset`` answering every id with ``splits``; returns the (id, config) asked for."""
    calls = []

    def load_dataset(hub_id, config=None, **kwargs):
        calls.append((hub_id, config))
        return datasets.DatasetDict(splits)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def run_config(**data) -> RunConfig:
    return RunConfig(data=DataConfig(**data))


# ==================================================================================================
# Summarization
# ==================================================================================================

def summaries(source: str, target: str, n: int, start: int = 0, **extra) -> datasets.Dataset:
    rows = {source: [f"document {i}. more text" for i in range(start, start + n)],
            target: [f"summary {i}" for i in range(start, start + n)],
            "id": [str(i) for i in range(start, start + n)]}
    rows.update(extra)
    return datasets.Dataset.from_dict(rows)


def load_summaries(**data):
    return SummarizationFamily().load_data(run_config(**data))


@pytest.mark.parametrize("task, hub, source, target", [
    ("xsum", ("xsum", None), "document", "summary"),
    ("cnn_dailymail", ("cnn_dailymail", "3.0.0"), "article", "highlights"),
    ("samsum", ("samsum", None), "dialogue", "summary"),
])
def test_named_summarization_tasks_read_their_hub_dataset(monkeypatch, task, hub, source, target):
    calls = fake_hub(monkeypatch, {"train": summaries(source, target, 3), "validation": summaries(source, target, 2, 10),
                                   "test": summaries(source, target, 1, 20)})
    data = load_summaries(task=task)
    assert calls == [hub]
    assert data.train == [SummaryPair(f"document {i}. more text", f"summary {i}", str(i)) for i in range(3)]
    assert [p.id for p in data.eval_splits["validation"]] == ["10", "11"] and list(data.eval_splits) == ["validation"]
    assert data.source == f"hub: {'/'.join(x for x in hub if x)} (train, validation)"
    assert data.spec.name == task and family_for_task(task) is family_for_task("summarization")
    assert HUB_TASKS[task].source == source


def test_hub_summaries_honour_columns_hub_dataset_and_limits(monkeypatch):
    splits = {"train": summaries("text", "abstract", 10, key=[f"k{i}" for i in range(10)]),
              "validation": summaries("text", "abstract", 4, 10, key=[f"k{i}" for i in range(10, 14)])}
    calls = fake_hub(monkeypatch, splits)
    data = load_summaries(task="summarization", hub_dataset="someone/papers:v2", text_column="text",
                          target_column="abstract", train_limit=4, eval_limit=2)
    assert calls == [("someone/papers", "v2")] and data.source == "hub: someone/papers/v2 (train, validation)"
    assert len(data.train) == 4 and len(data.eval_splits["validation"]) == 2
    assert [p.id for p in data.train] == sorted((p.id for p in data.train), key=int)  # hub order kept
    # the subset is the one the same rows written to a file give
    again = load_summaries(task="summarization", hub_dataset="someone/papers:v2", text_column="text",
                           target_column="abstract", train_limit=4, eval_limit=2)
    assert again.train == data.train
    load_summaries(task="cnn_dailymail", hub_dataset="abisee/cnn_dailymail", text_column="text",
                   target_column="abstract")
    assert calls[-1] == ("abisee/cnn_dailymail", "3.0.0")                # the id alone keeps the task's config
    load_summaries(task="cnn_dailymail", hub_dataset="mirror:", text_column="text", target_column="abstract")
    assert calls[-1] == ("mirror", None)
    options = RunConfig(data=DataConfig(task="summarization", hub_dataset="x", text_column="text",
                                        target_column="abstract"), task_options={"id_column": "key"})
    assert SummarizationFamily().load_data(options).train[0].id == "k0"


def test_hub_summaries_subset_equals_the_file_subset(monkeypatch, tmp_path):
    train, validation = summaries("document", "summary", 12), summaries("document", "summary", 3, 50)
    fake_hub(monkeypatch, {"train": train, "validation": validation})
    for name, split in (("train", train), ("validation", validation)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in split))
    from_hub = load_summaries(task="xsum", train_limit=5)
    from_files = load_summaries(task="xsum", train_file=str(tmp_path / "train.jsonl"),
                                eval_file=str(tmp_path / "validation.jsonl"), train_limit=5)
    assert from_hub.train == from_files.train and from_hub.eval_splits == from_files.eval_splits


@pytest.mark.parametrize("rows, message", [
    (dict(document=["a", "b"], summary=["s", "  "]),
     r"hub: xsum\[train\]: 1 empty target text\(s\) in column 'summary' \(first at row 2\)"),
    (dict(document=["a", None], summary=["s", "t"]), r"hub: xsum\[train\], row 2: column 'document' holds null, not text"),
    (dict(document=["a"], summary=[3]), r"hub: xsum\[train\], row 1: column 'summary' holds a int \(3\), not text"),
    (dict(text=["a"], summary=["s"]), r"hub: xsum\[train\] has no source column 'document' \(set data.text_column\); "
                                      r"found columns: 'text', 'summary'"),
])
def test_bad_hub_rows_get_the_errors_of_bad_file_rows(monkeypatch, rows, message):
    fake_hub(monkeypatch, {"train": datasets.Dataset.from_dict(rows),
                           "validation": summaries("document", "summary", 1)})
    with pytest.raises(DataError, match=message):
        load_summaries(task="xsum")


def test_missing_hub_split_names_what_to_pass(monkeypatch):
    fake_hub(monkeypatch, {"train": summaries("document", "summary", 2), "test": summaries("document", "summary", 1)})
    with pytest.raises(DataError, match=r"hub dataset 'xsum' has no split 'validation' \(it has train, test\); "
                                        r"pass data.eval_file"):
        load_summaries(task="xsum")


def test_local_summaries_win_over_the_hub(monkeypatch, tmp_path):
    calls = fake_hub(monkeypatch, {"train": summaries("document", "summary", 2, 100),
                                   "validation": summaries("document", "summary", 2, 200)})
    local = tmp_path / "root" / "xsum"
    local.mkdir(parents=True)
    for name, start in (("train", 0), ("validation", 10)):
        (local / f"{name}.jsonl").write_text("".join(json.dumps(row) + "\n"
                                                     for row in summaries("document", "summary", 2, start)))
    data = load_summaries(task="xsum", dir=str(tmp_path / "root"))                    # <root>/xsum/
    assert calls == [] and data.source == f"file: {local / 'train.jsonl'}, {local / 'validation.jsonl'}"
    monkeypatch.setenv(DATA_DIR_ENV, str(local))                                      # $RANKADAPT_DATA_DIR=<root>/xsum
    assert load_summaries(task="xsum").train == data.train and calls == []
    monkeypatch.delenv(DATA_DIR_ENV)
    mixed = load_summaries(task="xsum", train_file=str(local / "train.jsonl"))        # eval from the hub
    assert calls == [("xsum", None)] and [p.id for p in mixed.train] == ["0", "1"]
    assert [p.id for p in mixed.eval_splits["validation"]] == ["200", "201"]
    assert mixed.source == f"file: {local / 'train.jsonl'}; hub: xsum (validation)"
    empty_root = tmp_path / "glue-only"
    empty_root.mkdir()
    assert [p.id for p in load_summaries(task="xsum", dir=str(empty_root)).train] == ["100", "101"]


def _hub_failure(monkeypatch, failure: str, name: str) -> str:
    """Make the hub fail as ``failure`` says (no ``datasets`` package, or no network) and return the
    reason the error message must give for dataset ``name``."""
    if failure == "missing":
        monkeypatch.setitem(sys.modules, "datasets", None)
        return rf"the `datasets` package needed to fetch '{name}' from the Hugging Face hub is not installed"

    def load_dataset(hub_id, config=None, **kwargs):
        raise ConnectionError("no network")
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return rf"loading '{name}' from the hub failed \(ConnectionError: no network\)"


@pytest.mark.parametrize("failure", ["missing", "offline"])
def test_no_datasets_or_no_network_says_to_pass_local_files(monkeypatch, failure):
    reason = _hub_failure(monkeypatch, failure, "cnn_dailymail/3.0.0")
    with pytest.raises(DataError, match=r"no local data for data.task=cnn_dailymail: " + reason +
                       r"\. Pass local files with data.train_file and data.eval_file .*under <root>/cnn_dailymail/"):
        load_summaries(task="cnn_dailymail")


def test_plain_summarization_needs_files_or_a_hub_dataset(monkeypatch):
    calls = fake_hub(monkeypatch, {})
    with pytest.raises(DataError, match=r"data.task=summarization needs data.train_file and data.eval_file .*"
                                        r"or data.hub_dataset=<id>\[:config\]"):
        load_summaries(task="summarization")
    assert calls == []


# ==================================================================================================
# Image classification
# ==================================================================================================

def color(row: int, label: int) -> tuple[int, int, int]:
    return (row % 256, 60 * label % 256, 200)


def image_split(labels, names, image="img", label="label", start=0, extra_labels=None, size=(6, 4)):
    """Rows of solid-colour PNG images (the colour encodes row and label) with a ClassLabel column."""
    columns = {image: [Image.new("RGB", size, color(start + i, y)) for i, y in enumerate(labels)], label: list(labels)}
    features = {image: datasets.Image(), label: datasets.ClassLabel(names=list(names))}
    for name, (values, value_names) in (extra_labels or {}).items():
        columns[name], features[name] = values, datasets.ClassLabel(names=list(value_names))
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))


def pixel(path) -> tuple[int, int, int]:
    with Image.open(path) as image:
        return image.convert("RGB").getpixel((0, 0))


def load_images(tmp_path, task_options=None, **data):
    config = RunConfig(data=DataConfig(task="imagefolder", cache_dir=str(tmp_path / "cache"), **data),
                       task_options=task_options or {})
    return ImageClassificationFamily().load_data(config)


NAMES = ("zebra", "apple", "mango")  # not sorted: the ClassLabel order must be kept


def test_hub_images_cifar100_layout_class_order_and_the_test_split(monkeypatch, tmp_path):
    coarse = ([0, 1, 0, 1, 0, 1, 0], ("animal", "fruit"))
    train = image_split([1, 0, 2, 1, 0, 2, 1], NAMES, label="fine_label", extra_labels={"coarse_label": coarse})
    test = image_split([2, 0], NAMES, label="fine_label", start=100, extra_labels={"coarse_label": ([1, 0], coarse[1])})
    calls = fake_hub(monkeypatch, {"train": train, "validation": image_split([0], NAMES, label="fine_label"),
                                   "test": test})
    data = load_images(tmp_path, hub_dataset="cifar100")
    assert calls == [("cifar100", None)] and data.source == "hub: cifar100 (train, test)"
    assert data.spec.label_names == NAMES and data.train.label_names == NAMES
    assert Counter(data.train.labels) == {0: 2, 1: 3, 2: 2}
    # the label of each example is the one its image was stored with (the colour encodes both)
    assert all(pixel(path)[1] == 60 * label % 256 for path, label in zip(data.train.paths, data.train.labels))
    assert sorted(pixel(path)[0] for path in data.train.paths) == list(range(7))
    assert list(data.eval_splits) == ["validation"]                  # full protocol: the test split is the eval set
    evaluation = data.eval_splits["validation"]
    assert evaluation.where == "hub: cifar100[test]" and evaluation.labels == (0, 2)
    assert sorted(pixel(p)[0] for p in evaluation.paths) == [100, 101]
    # written once as <cache_dir>/hub-images/<hash>/<class id>/<row>.png, then found again
    root = tmp_path / "cache" / "hub-images"
    assert {p.relative_to(root).parts[1:] for p in data.train.paths} == \
        {("0", "1.png"), ("0", "4.png"), ("1", "0.png"), ("1", "3.png"), ("1", "6.png"), ("2", "2.png"), ("2", "5.png")}
    folders = sorted(p.name for p in root.iterdir())
    assert len(folders) == 2 and not any(name.startswith(".") for name in folders)
    stamp = data.train.paths[0].stat().st_mtime_ns
    again = load_images(tmp_path, hub_dataset="cifar100")
    assert again.train == data.train and data.train.paths[0].stat().st_mtime_ns == stamp
    assert sorted(p.name for p in root.iterdir()) == folders


def test_hub_images_without_test_use_validation_and_detect_the_image_feature(monkeypatch, tmp_path):
    splits = {"train": image_split([0, 1, 1], ("b", "a"), image="picture", label="category"),
              "validation": image_split([1], ("b", "a"), image="picture", label="category", start=50)}
    splits["train"] = splits["train"].add_column("caption", ["x", "y", "z"])
    calls = fake_hub(monkeypatch, splits)
    data = load_images(tmp_path, hub_dataset="tanganke/dtd:default")   # first ClassLabel, the Image feature
    assert calls == [("tanganke/dtd", "default")] and data.source == "hub: tanganke/dtd/default (train, validation)"
    assert data.spec.label_names == ("b", "a") and data.eval_splits["validation"].labels == (1,)
    assert pixel(data.eval_splits["validation"].paths[0])[0] == 50


def test_hub_image_column_and_label_overrides(monkeypatch, tmp_path):
    images = [Image.new("RGB", (4, 4), color(i, 0)) for i in range(2)]
    split = datasets.Dataset.from_dict(
        {"small": images, "large": images, "label": [0, 1], "other": [1, 0]},
        features=datasets.Features({"small": datasets.Image(), "large": datasets.Image(),
                                    "label": datasets.ClassLabel(names=list(NAMES[:2])),
                                    "other": datasets.ClassLabel(names=["x", "y"])}))
    fake_hub(monkeypatch, {"train": split, "test": split})
    data = load_images(tmp_path, hub_dataset="x", label_column="other", task_options={"image_column": "large"})
    assert data.spec.label_names == ("x", "y") and data.train.labels == (0, 1)
    ordered = load_images(tmp_path, hub_dataset="x", label_names=["apple", "zebra"])  # data.label_names: the order
    assert ordered.spec.label_names == ("apple", "zebra") and ordered.train.labels == (1, 0)
    with pytest.raises(DataError, match=r"hub: x\[train\] has no label column 'nope' \(data.label_column\)"):
        load_images(tmp_path, hub_dataset="x", label_column="nope")
    with pytest.raises(DataError, match=r"hub: x\[train\] has no image column 'pixels' \(task_options.image_column\)"):
        load_images(tmp_path, hub_dataset="x", task_options={"image_column": "pixels"})


def test_hub_images_with_plain_string_labels_and_jpeg_bytes_kept(monkeypatch, tmp_path):
    jpeg = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 200, 30)).save(jpeg, "JPEG")
    rows = {"image": [{"bytes": jpeg.getvalue(), "path": None}] * 3, "label": ["dog", "cat", "dog"]}
    split = datasets.Dataset.from_dict(rows, features=datasets.Features({"image": datasets.Image(),
                                                                          "label": datasets.Value("string")}))
    fake_hub(monkeypatch, {"train": split, "test": split})
    data = load_images(tmp_path, hub_dataset="pets")
    assert data.spec.label_names == ("cat", "dog") and data.train.labels == (0, 1, 1)   # sorted, as for tables
    assert all(p.suffix == ".jpg" and p.read_bytes() == jpeg.getvalue() for p in data.train.paths)


def test_hub_images_under_the_vtab_1k_protocol(monkeypatch, tmp_path):
    labels = [i % 4 for i in range(1200)]
    fake_hub(monkeypatch, {"train": image_split(labels, ("a", "b", "c", "d"), size=(2, 2)),
                           "test": image_split([0, 1, 2, 3, 3], ("a", "b", "c", "d"), start=5000, size=(2, 2))})
    data = load_images(tmp_path, {"protocol": "vtab-1k"}, hub_dataset="oxford_flowers102", split_seed=7)
    assert len(data.train) == 800 and len(data.eval_splits["validation"]) == 200
    assert data.eval_splits["test"].labels == (0, 1, 2, 3, 3) and data.eval_splits["test"].where.endswith("[test]")
    assert Counter(data.train.labels) == {0: 200, 1: 200, 2: 200, 3: 200}
    assert not set(data.train.paths) & set(data.eval_splits["validation"].paths)
    # the same 800/200 as the same images in a local folder give
    folder = Path(data.train.paths[0]).parents[1]
    local = load_images(tmp_path, {"protocol": "vtab-1k"}, train_dir=str(folder), split_seed=7,
                        eval_dir=str(Path(data.eval_splits["test"].paths[0]).parents[1]))
    assert [p.name for p in local.train.paths] == [p.name for p in data.train.paths]
    assert [p.name for p in local.eval_splits["validation"].paths] == \
        [p.name for p in data.eval_splits["validation"].paths]


def test_hub_images_feed_the_pixel_cache(monkeypatch, tmp_path):
    fake_hub(monkeypatch, {"train": image_split([0, 1, 2], NAMES), "test": image_split([1], NAMES)})
    config = RunConfig(data=DataConfig(task="imagefolder", hub_dataset="x", cache_dir=str(tmp_path)))
    family = ImageClassificationFamily()
    data = family.load_data(config)
    encoded = family.encode("train", data.train, tiny_processor(), config, data.spec, show_progress=False)
    assert encoded.pixels.shape == (3, 3, 32, 32) and encoded.labels.tolist() == list(data.train.labels)
    assert len(list(tmp_path.glob("*.safetensors"))) == 1


def test_local_images_win_over_the_hub(monkeypatch, tmp_path):
    calls = fake_hub(monkeypatch, {"train": image_split([0, 1], ("x", "y")), "test": image_split([0], ("x", "y"))})
    train = make_image_folder(tmp_path / "train", {"cat": 2, "dog": 1})
    evaluation = make_image_folder(tmp_path / "eval", {"cat": 1})
    data = load_images(tmp_path, hub_dataset="cifar100", train_dir=str(train), eval_dir=str(evaluation))
    assert calls == [] and data.spec.label_names == ("cat", "dog") and data.source.startswith("local: ")
    # a local eval set with the hub's training images: the test split is not used
    mixed = load_images(tmp_path, hub_dataset="cifar100", eval_dir=str(make_image_folder(tmp_path / "e2", {"y": 2})))
    assert calls == [("cifar100", None)] and mixed.eval_splits["validation"].labels == (1, 1)
    assert mixed.source == f"hub: cifar100 (train); local: {tmp_path / 'e2'}"


def test_hub_image_split_errors(monkeypatch, tmp_path):
    fake_hub(monkeypatch, {"train": image_split([0], ("x",))})
    with pytest.raises(DataError, match=r"hub dataset 'x' has no test or validation split \(it has train\); pass "
                                        r"local images \(data.train_dir / data.eval_dir\), or use task_options.protocol"):
        load_images(tmp_path, hub_dataset="x")
    fake_hub(monkeypatch, {"test": image_split([0], ("x",))})
    with pytest.raises(DataError, match=r"hub dataset 'x' has no train split"):
        load_images(tmp_path, hub_dataset="x")
    unlabelled = datasets.Dataset.from_dict(                         # ClassLabel -1: no label (a hidden test set)
        {"img": [Image.new("RGB", (2, 2))] * 2, "label": [-1, -1]},
        features=datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=["x", "y"])}))
    fake_hub(monkeypatch, {"train": image_split([0, 1], ("x", "y")), "test": unlabelled})
    with pytest.raises(DataError, match=r"hub: x\[test\]: 2 image\(s\) have no class \(label -1 in column 'label', "
                                        r"first at row 1\); the split is unlabelled"):
        load_images(tmp_path, hub_dataset="x")
    texts = datasets.Dataset.from_dict({"text": ["a"], "label": [0]})
    fake_hub(monkeypatch, {"train": texts, "test": texts})
    with pytest.raises(DataError, match=r"hub: x\[train\] has no image column \(a datasets.Image feature\); its "
                                        r"columns: text \(Value\), label \(Value\)"):
        load_images(tmp_path, hub_dataset="x")


@pytest.mark.parametrize("failure", ["missing", "offline"])
def test_hub_images_without_datasets_or_network_say_to_pass_local_images(monkeypatch, tmp_path, failure):
    reason = _hub_failure(monkeypatch, failure, "cifar100")
    with pytest.raises(DataError, match=r"data.task=imagefolder with data.hub_dataset=cifar100: " + reason +
                       r"\. Pass local images with data.train_dir \(DIR/<class>/\*.jpg\) and data.eval_dir"):
        load_images(tmp_path, hub_dataset="cifar100")


def test_imagefolder_config_accepts_a_hub_dataset_instead_of_local_images():
    assert DataConfig(task="imagefolder", hub_dataset="cifar100").hub_dataset == "cifar100"
    with pytest.raises(ValueError, match=r"needs data.train_dir .* or data.hub_dataset=<id> when online"):
        DataConfig(task="imagefolder")
