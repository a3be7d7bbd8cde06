"""What ``rankadapt eval``, ``predict`` and ``export`` do with a trained run or adapter."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .data import load_task_data
from .errors import ConfigError
from .inference import load_trained, predict_texts, prediction_settings, run_config_for, split_pairs
from .models import fitted_max_length
from .progress import phase


def evaluate_path(path: str | Path, overrides: list[str]) -> dict[str, Any]:
    """Metrics of a trained run/adapter on the configured eval split(s)."""
    from .train import fit_max_length, encode_splits, evaluate_loaders, make_accelerator, make_loaders

    config = run_config_for(path, overrides)
    data = load_task_data(config.data)
    trained = load_trained(path, config, data.task.num_labels, data.task.label_names)
    config = fit_max_length(config, trained.model.config)
    accelerator = make_accelerator(config)
    show = accelerator.is_main_process and config.train.progress
    train_set, eval_sets = encode_splits(config, data, trained.tokenizer, show_progress=show)
    _, loaders = make_loaders(config, train_set, eval_sets, trained.tokenizer, accelerator.num_processes)
    model, *prepared = accelerator.prepare(trained.model, *loaders.values())
    metrics = evaluate_loaders(model, dict(zip(loaders, prepared)), data.task, accelerator, show_progress=show)
    return {"task": data.task.name, "source": str(trained.source), "data": data.source,
            "eval_examples": {k: len(v) for k, v in data.eval_splits.items()}, "metrics": metrics}


def predict_path(path: str | Path, inputs: list[str], max_length: int | None = None,
                 echo: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Predictions with the run's own max length, labels and input kind (single texts or pairs);
    ``max_length`` overrides the stored length. ``echo`` is told the settings used (and a progress bar
    is shown on stderr)."""
    config = run_config_for(path, [])
    settings = prediction_settings(path, config, max_length)
    texts, pairs = split_pairs(inputs, settings)
    if echo:
        echo(f"predict: {settings.describe()}")
    labels = settings.label_names
    trained = load_trained(path, config, len(labels) if labels else 1, labels)
    # An explicit --max-length beyond the model's positions is refused; a stored one is lowered to fit.
    length = fitted_max_length(trained.model.config, settings.max_length, "--max-length", max_length is not None)
    return predict_texts(trained, texts, pairs, max_length=length, show_progress=echo is not None)


def export_merged_path(path: str | Path, out_dir: str | Path) -> Path:
    from .export import export_merged

    _refuse_overlap(Path(path), Path(out_dir))
    config = run_config_for(path, [])
    settings = prediction_settings(path, config)
    labels = settings.label_names
    trained = load_trained(path, config, len(labels) if labels else 1, labels)
    # The merged model carries the run's settings too, so that predict/eval on it match the run.
    meta = {"task": settings.task, "label_names": labels, "max_length": settings.max_length,
            "is_pair": settings.is_pair}
    with phase(f"exporting {out_dir}", show=True):
        return export_merged(trained.adapted, out_dir, tokenizer=trained.tokenizer, meta=meta)


def _refuse_overlap(source: Path, out_dir: Path) -> None:
    """The merged model may not be written over, into or around what it is made from."""
    src, out = source.resolve(), out_dir.resolve()
    if out == src or src in out.parents or out in src.parents:
        raise ConfigError(f"--merged {out_dir} overlaps {source}, which the merged model is made from; writing it "
                          "there would replace the run or adapter. Choose a directory outside it")
