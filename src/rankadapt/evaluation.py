"""What ``rankadapt eval``, ``predict`` and ``export`` do with a trained run or adapter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .data import get_task, load_task_data
from .errors import ConfigError
from .inference import label_names_for, load_trained, predict_texts, run_config_for
from .models import fitted_max_length


def evaluate_path(path: str | Path, overrides: list[str]) -> dict[str, Any]:
    """Metrics of a trained run/adapter on the configured eval split(s)."""
    from .train import fit_max_length, encode_splits, evaluate_loaders, make_accelerator, make_loaders

    config = run_config_for(path, overrides)
    data = load_task_data(config.data)
    trained = load_trained(path, config, data.task.num_labels, data.task.label_names)
    config = fit_max_length(config, trained.model.config)
    accelerator = make_accelerator(config)
    train_set, eval_sets = encode_splits(config, data, trained.tokenizer)
    _, loaders = make_loaders(config, train_set, eval_sets, trained.tokenizer, accelerator.num_processes)
    model, *prepared = accelerator.prepare(trained.model, *loaders.values())
    metrics = evaluate_loaders(model, dict(zip(loaders, prepared)), data.task, accelerator)
    return {"task": data.task.name, "source": str(trained.source), "data": data.source,
            "eval_examples": {k: len(v) for k, v in data.eval_splits.items()}, "metrics": metrics}


def predict_path(path: str | Path, texts: list[str], max_length: int | None = None) -> list[dict[str, Any]]:
    """Labels of ``texts``; inputs are truncated to ``max_length`` tokens (default 128, or fewer if
    the model has fewer positions); a ``max_length`` beyond the model's positions is refused."""
    config = run_config_for(path, [])
    labels = label_names_for(path) or get_task(config.data.task).label_names
    num_labels = len(labels) if labels else 1
    trained = load_trained(path, config, num_labels, labels)
    explicit = max_length is not None
    max_length = fitted_max_length(trained.model.config, max_length or 128, "--max-length", explicit)
    return predict_texts(trained, texts, max_length=max_length)


def export_merged_path(path: str | Path, out_dir: str | Path) -> Path:
    from .export import export_merged

    _refuse_overlap(Path(path), Path(out_dir))
    config = run_config_for(path, [])
    labels = label_names_for(path) or get_task(config.data.task).label_names
    trained = load_trained(path, config, len(labels) if labels else 1, labels)
    return export_merged(trained.adapted, out_dir, tokenizer=trained.tokenizer)


def _refuse_overlap(source: Path, out_dir: Path) -> None:
    """The merged model may not be written over, into or around what it is made from."""
    src, out = source.resolve(), out_dir.resolve()
    if out == src or src in out.parents or out in src.parents:
        raise ConfigError(f"--merged {out_dir} overlaps {source}, which the merged model is made from; writing it "
                          "there would replace the run or adapter. Choose a directory outside it")
