"""Image-classification evaluation: accuracy and top-5 by hand, predictions as top-k labels with
probabilities, and the family's eval_step / compute_metrics / predict / export_metadata on a tiny ViT."""

from __future__ import annotations

import math

import pytest
import torch

from rankadapt.core.config import DataConfig, RunConfig
from rankadapt.tasks.image_classification import (ImageClassificationFamily, ImageClassificationSettings,
                                                  ImageCollator, accuracy, classification_metrics, encode_images,
                                                  image_task_spec, read_image_folder, top_k_accuracy,
                                                  top_k_predictions)

from image_helpers import make_image_folder, tiny_processor, tiny_vision_model, write_image

# Six classes; the label's rank among the logits is 1, 2, 6 and 5 (1 = highest).
LOGITS = torch.tensor([[9.0, 1, 2, 3, 4, 5],
                       [1.0, 2, 3, 4, 5, 9],
                       [0.0, 1, 2, 3, 4, 5],
                       [5.0, 4, 3, 2, 1, 0]])
LABELS = torch.tensor([0, 4, 0, 4])


def test_accuracy_and_top5_by_hand():
    assert accuracy(LOGITS, LABELS) == 0.25
    assert top_k_accuracy(LOGITS, LABELS, k=5) == 0.75      # ranks 1, 2, 5 are within the top 5
    assert top_k_accuracy(LOGITS, LABELS, k=2) == 0.5
    metrics = classification_metrics(LOGITS, LABELS)
    assert metrics["accuracy"] == 0.25 and metrics["top5_accuracy"] == 0.75
    assert metrics["loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(LOGITS, LABELS)))


def test_top5_only_with_more_than_five_classes():
    metrics = classification_metrics(LOGITS[:, :5], torch.tensor([0, 4, 0, 4]))
    assert set(metrics) == {"accuracy", "loss"}
    assert image_task_spec(("a", "b", "c", "d", "e")).metrics == ("accuracy",)
    assert image_task_spec(tuple("abcdef")).metrics == ("accuracy", "top5_accuracy")


def test_mismatched_or_empty_inputs_raise():
    with pytest.raises(ValueError, match="do not match"):
        accuracy(LOGITS, LABELS[:3])
    with pytest.raises(ValueError, match="no examples"):
        accuracy(LOGITS[:0], LABELS[:0])
    with pytest.raises(ValueError, match="6 logits per example for 2 label names"):
        top_k_predictions(LOGITS, ["a", "b"])


def test_top_k_predictions_are_labels_with_softmax_probabilities_best_first():
    names = ["plane", "car", "bird", "cat", "deer", "dog"]
    predictions = top_k_predictions(LOGITS, names, k=3)
    assert [label for label, _ in predictions[0]] == ["plane", "dog", "deer"]
    probabilities = LOGITS[0].softmax(-1)
    assert predictions[0][0][1] == pytest.approx(float(probabilities[0]))
    assert all(p[0][1] >= p[1][1] >= p[2][1] for p in predictions)
    assert len(top_k_predictions(LOGITS[:, :2], names[:2], k=5)[0]) == 2   # k capped at the class count
    assert math.isclose(sum(p for _, p in top_k_predictions(LOGITS, names, k=6)[1]), 1.0, rel_tol=1e-6)


def test_family_evaluates_predicts_and_describes_its_export(tmp_path):
    family = ImageClassificationFamily()
    root = make_image_folder(tmp_path / "eval", {"a": 2, "b": 2, "c": 1})
    examples = read_image_folder(root)
    processor = tiny_processor()
    model = tiny_vision_model("vit", num_labels=3)
    config = RunConfig(data=DataConfig(task="imagefolder", train_dir=str(root), cache_dir=str(tmp_path / "cache")))
    dataset = family.encode("validation", examples, processor, config, None, False)
    collate = family.collator(processor, config)
    outputs = {"logits": [], "labels": []}
    for start in (0, 3):  # two batches, as the runtime collects them
        out = family.eval_step(model, collate([dataset[i] for i in range(start, min(start + 3, 5))]), None, config)
        for key, value in out.items():
            outputs[key].append(value.detach())
    spec = image_task_spec(examples.label_names)
    metrics = family.compute_metrics(spec, outputs, processor, examples)
    direct = model(pixel_values=ImageCollator(processor)([dataset[i] for i in range(5)])["pixel_values"]).logits
    assert metrics["accuracy"] == accuracy(direct, torch.tensor(examples.labels))
    write_image(tmp_path / "gray.png", color=90, mode="L")
    settings = family.export_metadata(spec, config)
    assert settings == {"task": "imagefolder", "family": "image-classification", "label_names": ["a", "b", "c"],
                        "top_k": 5, "protocol": "full", "image_size": None}
    records = family.predict(model, processor, [str(examples.paths[0]), str(tmp_path / "gray.png")],
                             {**settings, "top_k": 2}, show_progress=False)
    assert [r["image"] for r in records] == [str(examples.paths[0]), str(tmp_path / "gray.png")]
    assert all(len(r["top_k"]) == 2 and r["label"] == r["top_k"][0][0] and r["probability"] == r["top_k"][0][1]
               for r in records)
    assert ImageClassificationSettings(top_k=3).top_k == 3


def test_predict_names_an_unreadable_image(tmp_path):
    from rankadapt.core.errors import DataError

    (tmp_path / "bad.jpg").write_bytes(b"\x00\x01")
    with pytest.raises(DataError, match=r"rankadapt predict: 1 image\(s\) cannot be read: .*bad.jpg"):
        ImageClassificationFamily().predict(tiny_vision_model("vit"), tiny_processor(), [str(tmp_path / "bad.jpg")],
                                            {"label_names": ["a", "b", "c"]}, show_progress=False)


def test_encode_via_the_family_uses_the_pixel_cache(tmp_path):
    examples = read_image_folder(make_image_folder(tmp_path / "t", {"a": 1, "b": 1}))
    config = RunConfig(data=DataConfig(task="imagefolder", train_dir=str(tmp_path / "t"), cache_dir=str(tmp_path / "c")))
    ImageClassificationFamily().encode("train", examples, tiny_processor(), config, None, False)
    assert len(list((tmp_path / "c").glob("*.safetensors"))) == 1
    assert encode_images(examples, tiny_processor(), tmp_path / "c").pixels.shape == (2, 3, 32, 32)
