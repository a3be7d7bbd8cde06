"""Image classification through the command line (``data.task=imagefolder``): every method trains on a
tiny ViT from image folders, writes the output contract (results.json accuracy / top-5, an adapter that
stock PEFT loads with the same logits), resumes exactly, and ``predict``/``eval`` use the run's settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from helpers import EIGHT_STEP_METHOD_ARGS, assert_resume_equals_straight_run
from image_helpers import make_image_folder, tiny_processor, tiny_vision_model
from seq2seq_fixtures import one_thread  # noqa: F401  (fixture)
from test_cli import events, invoke, train_ok

METHOD_ARGS = {
    "none": [], "head": [], "full": ["train.learning_rate=1e-3"],
    "lora": ["method.lora_r=4", "method.lora_module=[query,value,intermediate]"],
    **EIGHT_STEP_METHOD_ARGS,
}
CLASSES = {"apple": 8, "berry": 8, "cherry": 8}


@pytest.fixture(autouse=True)
def _one_thread(one_thread):  # noqa: F811
    yield


@pytest.fixture(scope="module")
def vision(tmp_path_factory) -> dict[str, Path]:
    """A saved tiny ViT (with its processor) and train / eval image folders of three coloured classes."""
    tmp = tmp_path_factory.mktemp("vision")
    model = tiny_vision_model("vit", num_labels=3)
    model.save_pretrained(tmp / "model")
    tiny_processor().save_pretrained(tmp / "model")
    return {"model": tmp / "model", "train": make_image_folder(tmp / "train", CLASSES),
            "eval": make_image_folder(tmp / "eval", {name: 3 for name in CLASSES}), "tmp": tmp}


def image_args(vision: dict[str, Path], run_dir: Path, method: str = "lora") -> list[str]:
    return [f"model.name={vision['model']}", "data.task=imagefolder", f"data.train_dir={vision['train']}",
            f"data.eval_dir={vision['eval']}", f"data.cache_dir={vision['tmp'] / 'cache'}", f"method.name={method}",
            "train.batch_size=8", "train.max_steps=8", "train.eval_strategy=steps", "train.eval_steps=4",
            "train.learning_rate=1e-2", "train.progress=false", "train.logging_steps=1", "train.device=cpu",
            f"output_dir={run_dir}", *METHOD_ARGS[method]]


def test_lora_on_images_writes_the_contract_and_loads_in_stock_peft(vision, tmp_path):
    import peft
    from transformers import AutoModelForImageClassification

    run_dir = tmp_path / "run"
    train_ok(*image_args(vision, run_dir))
    results = json.loads((run_dir / "results.json").read_text())
    assert results["family"] == "image-classification" and results["task"] == "imagefolder"
    assert set(results["final_metrics"]) == {"accuracy", "loss"}  # three classes: no top-5
    assert results["train_examples"] == 24 and results["eval_examples"] == {"validation": 9}
    adapter = run_dir / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    meta = json.loads((adapter / "rankadapt.json").read_text())
    assert config["task_type"] == "SEQ_CLS" and config["modules_to_save"] == ["classifier"]
    assert meta["label_names"] == sorted(CLASSES) and meta["family"] == "image-classification"
    assert meta["step"] == results["best_step"]  # the export is the best evaluation's model, the final one included

    base = AutoModelForImageClassification.from_pretrained(vision["model"], num_labels=3)
    stock = peft.PeftModel.from_pretrained(base, adapter).eval()
    from rankadapt.recipes.trained import load_trained, run_config_for

    ours = load_trained(run_dir, run_config_for(run_dir))
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(stock(pixel_values=pixels).logits, ours.model(pixel_values=pixels).logits,
                                   atol=1e-5, rtol=0)

    evaluated = json.loads(invoke("eval", run_dir).stdout)
    # adapter/ holds the best model (train.export=best), so eval on it gives the best evaluation's figures
    assert evaluated["metrics"]["accuracy"] == pytest.approx(results["best_metrics"]["accuracy"])
    image = next((vision["eval"] / "berry").iterdir())
    result = invoke("predict", run_dir, image)
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip())
    assert record["image"] == str(image) and record["label"] in CLASSES
    assert record["top_k"] == sorted(record["top_k"], key=lambda t: -t[1]) and len(record["top_k"]) == 3
    assert record["top_k"][0] == [record["label"], record["probability"]]
    assert sum(p for _, p in record["top_k"]) == pytest.approx(1.0, abs=1e-5)
    assert "image files, 3 classes" in result.stderr


@pytest.mark.parametrize("method", list(METHOD_ARGS))
def test_every_method_trains_on_images(method, vision, tmp_path):
    run_dir = tmp_path / "run"
    train_ok(*image_args(vision, run_dir, method))
    results = json.loads((run_dir / "results.json").read_text())
    assert results["method"] == method and 0.0 <= results["final_metrics"]["accuracy"] <= 1.0
    exported = run_dir / ("model" if method in ("head", "full") else "adapter")
    assert exported.is_dir() or method == "none"
    if method in ("adalora", "elalora"):
        assert events(run_dir, "ranks"), "rank decisions are logged"


@pytest.mark.parametrize("method", ["full", "lora", "adalora", "elalora", "sora", "rmlora"])
def test_resume_on_images_equals_an_uninterrupted_run(method, vision, tmp_path, monkeypatch):
    assert_resume_equals_straight_run(lambda run_dir: image_args(vision, run_dir, method), tmp_path / "straight",
                                      tmp_path / "interrupted", monkeypatch, stop_at=6)


def test_more_than_five_classes_report_top5_and_vtab_protocol(vision, tmp_path):
    classes = {f"c{i}": 6 for i in range(6)}
    train = make_image_folder(tmp_path / "train6", classes)
    test = make_image_folder(tmp_path / "test6", {name: 2 for name in classes})
    args = image_args(vision, tmp_path / "run", "head")
    args = [a for a in args if not a.startswith(("data.train_dir", "data.eval_dir"))]
    # VTAB-1k holds out 200 images: with 36 it asks for more than there are, and says so.
    result = invoke("train", *args, f"data.train_dir={train}", f"data.eval_dir={test}", "task_options.protocol=vtab-1k")
    assert result.exit_code == 2 and "the VTAB-1k protocol needs 1,000 training images" in result.output
    train_ok(*args, f"data.train_dir={train}", f"data.eval_dir={test}", "task_options.top_k=2")
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert {"accuracy", "top5_accuracy"} <= set(results["final_metrics"])
    image = next((test / "c1").iterdir())
    record = json.loads(invoke("predict", tmp_path / "run", image).stdout.strip())
    assert len(record["top_k"]) == 2


def test_image_settings_errors_are_clear(vision, tmp_path):
    args = image_args(vision, tmp_path / "run")
    missing = [a for a in args if not a.startswith("data.train_dir")]
    result = invoke("train", *missing)
    assert result.exit_code == 2 and "data.task=imagefolder needs data.train_dir" in result.output
    result = invoke("train", *args, "train.reg_loss_wgt=1.0")
    assert result.exit_code == 2 and "is for text classification" in result.output
    result = invoke("train", *args, "task_options.protocl=full")
    assert result.exit_code == 2 and "protocl" in result.output
    text_run = [a for a in args if not a.startswith(("data.", "task_options"))] + ["data.task=sst2",
                                                                                    "task_options.top_k=3"]
    result = invoke("train", *text_run)
    assert result.exit_code == 2 and "takes no task_options" in result.output
    (vision["tmp"] / "empty").mkdir(exist_ok=True)
    result = invoke("train", *[a for a in args if not a.startswith("data.train_dir")],
                    f"data.train_dir={vision['tmp'] / 'empty'}")
    assert result.exit_code == 2 and "error:" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run" / "results.json").exists()


def test_image_size_option_resizes_what_the_model_sees(vision, tmp_path):
    from rankadapt.tasks.image_classification.family import resized_processor

    processor = resized_processor(tiny_processor(), 16)
    assert processor.size == {"height": 16, "width": 16}
    train_ok(*image_args(vision, tmp_path / "run", "lora"), "task_options.image_size=16")
    saved = json.loads((tmp_path / "run" / "adapter" / "preprocessor_config.json").read_text())
    assert saved["size"] == {"height": 16, "width": 16}


@pytest.mark.parametrize("method", ["lora", "adalora"])
def test_a_budget_sets_the_ranks_on_images(method, vision, tmp_path):
    # 6 matrices (query, value, intermediate of 2 blocks) of the tiny ViT; one rank of each costs
    # S = 2 x ((32 + 32) x 2 + (32 + 64)) = 448 parameters, so 896 is rank 2 for LoRA and a final
    # total rank of 896 / (448 / 6) = 12 for AdaLoRA
    args = [a for a in image_args(vision, tmp_path / "run", method) if not a.startswith(("method.lora_r",
                                                                                        "method.target_rank"))]
    train_ok(*args, "method.lora_module=[query,value,intermediate]", "method.budget=896")
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["budget"] == 896
    if method == "lora":
        assert set(results["rank_pattern"].values()) == {2} and results["adapter_parameters"] == 896
    else:
        assert sum(results["rank_pattern"].values()) == round(896 / (448 / 6))  # the final total rank
