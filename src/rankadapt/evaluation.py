"""What ``rankadapt eval``, ``predict`` and ``export`` do with a trained run or adapter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .data import get_task, load_task_data
from .inference import label_names_for, load_trained, predict_texts, run_config_for


def evaluate_path(path: str | Path, overrides: list[str]) -> dict[str, Any]:
    """Metrics of a trained run/adapter on the configured eval split(s)."""
    from .train import encode_splits, evaluate_loaders, make_accelerator, make_loaders

    config = run_config_for(path, overrides)
    data = load_task_data(config.data)
    trained = load_trained(path, config, data.task.num_labels, data.task.label_names)
    accelerator = make_accelerator(config)
    train_set, eval_sets = encode_splits(config, data, trained.tokenizer)
    _, loaders = make_loaders(config, train_set, eval_sets, trained.tokenizer, accelerator.num_processes)
    model, *prepared = accelerator.prepare(trained.model, *loaders.values())
    metrics = evaluate_loaders(model, dict(zip(loaders, prepared)), data.task, accelerator)
    return {"task": data.task.name, "source": str(trained.source), "data": data.source,
            "eval_examples": {k: len(v) for k, v in data.eval_splits.items()}, "metrics": metrics}


def predict_path(path: str | Path, texts: list[str], max_length: int = 128) -> list[dict[str, Any]]:
    config = run_config_for(path, [])
    labels = label_names_for(path) or get_task(config.data.task).label_names
    num_labels = len(labels) if labels else 1
    trained = load_trained(path, config, num_labels, labels)
    return predict_texts(trained, texts, max_length=max_length)


def export_merged_path(path: str | Path, out_dir: str | Path) -> Path:
    from .export import export_merged

    config = run_config_for(path, [])
    labels = label_names_for(path) or get_task(config.data.task).label_names
    trained = load_trained(path, config, len(labels) if labels else 1, labels)
    return export_merged(trained.adapted, out_dir, tokenizer=trained.tokenizer)
