"""What ``rankadapt eval``, ``predict`` and ``export`` do with a trained run or adapter, and the evaluation
pass the training recipe runs too (:func:`evaluate_loaders`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError
from ..core.models import fitted_max_length
from ..core.progress import phase
from ..tasks.text_classification import load_task_data
from .trained import load_trained, predict_texts, prediction_settings, run_config_for, split_pairs
import torch
from torch.utils.data import DataLoader

from ..core.config import RunConfig
from ..core.models import fit_max_length, load_model, load_tokenizer
from ..core.progress import bar
from ..methods.loralib import load_loralib
from ..runtime.accelerator import make_accelerator
from ..runtime.loaders import make_eval_loaders
from ..tasks.text_classification import encode_eval_splits, text_collator
from ..tasks.text_classification.metrics import compute_metrics, predictions_from_logits


def evaluate_path(path: str | Path, overrides: list[str]) -> dict[str, Any]:
    """Metrics of a trained run/adapter on the configured eval split(s)."""
    config = run_config_for(path, overrides)
    data = load_task_data(config.data)
    trained = load_trained(path, config, data.task.num_labels, data.task.label_names)
    config = fit_max_length(config, trained.model.config)
    accelerator = make_accelerator(config)
    show = accelerator.is_main_process and config.train.progress
    eval_sets = encode_eval_splits(config, data, trained.tokenizer, show_progress=show)
    loaders = make_eval_loaders(config, eval_sets, text_collator(config, trained.tokenizer), accelerator.num_processes)
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
    from ..methods.export import export_merged

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


@torch.no_grad()
def evaluate_loaders(model, loaders: dict[str, DataLoader], task, accelerator,
                     show_progress: bool = False) -> dict[str, float]:
    """Metrics on every eval split, gathered over processes (no duplicates: gather_for_metrics).

    With several splits (MNLI) each metric is prefixed by its split: ``matched_accuracy``.
    ``show_progress``: a bar per split (batches), gone when the split is done.
    """
    was_training = model.training
    model.eval()
    metrics: dict[str, float] = {}
    for split, loader in loaders.items():
        logits, labels = [], []
        for batch in bar(len(loader), f"eval {split}", "batch", show_progress, leave=False, iterable=loader):
            inputs = {k: v for k, v in batch.items() if k != "labels"}
            out = model(**inputs).logits.float()
            out, lab = accelerator.gather_for_metrics((out, batch["labels"]))
            logits.append(out.cpu())
            labels.append(lab.cpu())
        logits_t, labels_t = torch.cat(logits), torch.cat(labels)
        split_metrics = compute_metrics(task, predictions_from_logits(task, logits_t.numpy()), labels_t.numpy())
        split_metrics["loss"] = _eval_loss(task, logits_t, labels_t)
        prefix = "" if len(loaders) == 1 else split.removeprefix("validation_") + "_"
        metrics.update({prefix + k: float(v) for k, v in split_metrics.items()})
    model.train(was_training)
    return metrics


def _eval_loss(task, logits: torch.Tensor, labels: torch.Tensor) -> float:
    if task.is_regression:
        return torch.nn.functional.mse_loss(logits.squeeze(-1), labels.float()).item()
    return torch.nn.functional.cross_entropy(logits, labels.long()).item()


def evaluate_loralib(config: RunConfig, lora_path: str | Path) -> dict[str, Any]:
    """Metrics of ``config.model.name`` + a loralib checkpoint (alpha = ``config.method.lora_alpha``)."""
    data = load_task_data(config.data)
    tokenizer = load_tokenizer(config.model.name)
    model = load_model(config.model, data.task.num_labels, data.task.label_names)
    adapted = load_loralib(model, lora_path, config.method.lora_alpha)
    model.eval()
    accelerator = make_accelerator(config)
    eval_sets = encode_eval_splits(config, data, tokenizer)
    loaders = make_eval_loaders(config, eval_sets, text_collator(config, tokenizer), accelerator.num_processes)
    prepared, *prepared_loaders = accelerator.prepare(model, *loaders.values())
    metrics = evaluate_loaders(prepared, dict(zip(loaders, prepared_loaders)), data.task, accelerator)
    return {"task": data.task.name, "source": str(lora_path), "data": data.source,
            "eval_examples": {k: len(v) for k, v in data.eval_splits.items()},
            "ranks": {n: layer.capacity for n, layer in adapted.adapters.items()},
            "lora_alpha": config.method.lora_alpha, "metrics": metrics}
