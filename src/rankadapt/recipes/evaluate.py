"""What ``rankadapt eval``, ``predict`` and ``export`` do with a trained run or adapter, and the evaluation
pass the training recipe runs too (:func:`evaluate_loaders`), for every task family."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from ..core.config import RunConfig
from ..core.errors import ConfigError
from ..core.models import fitted_max_length
from ..core.progress import bar, phase
from ..methods.loralib import load_loralib
from ..runtime.accelerator import make_accelerator
from ..runtime.loaders import make_eval_loaders
from ..tasks import TaskFamily, family_for_task
from .trained import completed_meta, load_trained, run_config_for

Outputs = dict[str, list[torch.Tensor]]


@torch.no_grad()
def evaluate_loaders(model, loaders: dict[str, DataLoader], family: TaskFamily, spec, config: RunConfig, accelerator,
                     processor, examples: dict[str, Any], show_progress: bool = False,
                     keep_outputs: dict[str, Outputs] | None = None) -> dict[str, float]:
    """Metrics on every eval split, gathered over processes (no duplicates: gather_for_metrics).

    Each batch goes through ``family.eval_step``; the per-example outputs of a split are gathered
    (dim 1 padded across processes where lengths differ, as generated sequences do) and handed to
    ``family.compute_metrics``. With several splits (MNLI) each metric is prefixed by its split:
    ``matched_accuracy``, except a split named ``test``, whose metrics keep their plain names (VTAB-1k:
    ``validation_accuracy`` selects, ``accuracy`` on test is reported). ``keep_outputs``: filled with each split's outputs (for predictions files).
    ``show_progress``: a bar per split (batches), gone when the split is done.
    """
    was_training = model.training
    model.eval()
    padding = family.eval_padding(processor)
    metrics: dict[str, float] = {}
    for split, loader in loaders.items():
        outputs: Outputs = {}
        for batch in bar(len(loader), f"eval {split}", "batch", show_progress, leave=False, iterable=loader):
            out = family.eval_step(model, batch, spec, config)
            if accelerator.num_processes > 1:
                out = {k: accelerator.pad_across_processes(v, dim=1, pad_index=padding.get(k, 0)) if v.ndim > 1 else v
                       for k, v in out.items()}
            for key, value in accelerator.gather_for_metrics(out).items():
                outputs.setdefault(key, []).append(value.cpu())
        split_metrics = family.compute_metrics(spec, outputs, processor, examples[split])
        if keep_outputs is not None:
            keep_outputs[split] = outputs
        # Several splits: each metric is prefixed by its split (matched_accuracy, validation_accuracy), but
        # a "test" split (VTAB-1k's reported figures, selected on "validation") keeps the plain names.
        prefix = "" if len(loaders) == 1 or split == "test" else split.removeprefix("validation_") + "_"
        metrics.update({prefix + k: float(v) for k, v in split_metrics.items()})
    model.train(was_training)
    return metrics


def encode_eval_splits(family: TaskFamily, data, processor, config: RunConfig, show_progress: bool = False
                       ) -> dict[str, Any]:
    """Every eval split of ``data``, encoded by its family (what the loaders of an evaluation read)."""
    return {name: family.encode(name, split, processor, config, data.spec, show_progress)
            for name, split in data.eval_splits.items()}


def evaluate_path(path: str | Path, overrides: list[str]) -> dict[str, Any]:
    """Metrics of a trained run/adapter on the configured eval split(s)."""
    config = run_config_for(path, overrides)
    trained = load_trained(path, config)
    family, spec = trained.family, trained.spec
    data = family.load_data(config)
    config = family.fit_config(config)
    accelerator = make_accelerator(config)
    show = accelerator.is_main_process and config.train.progress
    eval_sets = encode_eval_splits(family, data, trained.processor, config, show)
    loaders = make_eval_loaders(config, eval_sets, family.collator(trained.processor, config), accelerator.num_processes)
    model, *prepared = accelerator.prepare(trained.model, *loaders.values())
    metrics = evaluate_loaders(model, dict(zip(loaders, prepared)), family, spec, config, accelerator,
                               trained.processor, data.eval_splits, show_progress=show)
    return {"task": spec.name, "source": str(trained.source), "data": data.source,
            "eval_examples": {k: len(v) for k, v in data.eval_splits.items()}, "metrics": metrics}


def predict_path(path: str | Path, inputs: list[str], max_length: int | None = None,
                 echo: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Predictions with the run's own settings (max length, labels, input kind, generation);
    ``max_length`` overrides the stored length. ``echo`` is told the settings used (and a progress
    bar is shown on stderr)."""
    config = run_config_for(path, [])
    family, _, meta = completed_meta(path, config)
    if max_length is not None:
        meta["max_length"] = max_length
    if echo:
        echo(f"predict: {family.describe_prediction(meta)}")
    trained = load_trained(path, config)
    if "max_length" in meta:
        # An explicit --max-length beyond the model's positions is refused; a stored one is lowered to fit.
        meta["max_length"] = fitted_max_length(trained.model.config, meta["max_length"], "--max-length",
                                               max_length is not None)
    return family.predict(trained.model, trained.processor, inputs, {**trained.meta, **meta},
                          show_progress=echo is not None)


def export_merged_path(path: str | Path, out_dir: str | Path) -> Path:
    from ..methods.export import export_merged

    _refuse_overlap(Path(path), Path(out_dir))
    config = run_config_for(path, [])
    trained = load_trained(path, config)
    # The merged model carries the run's settings too, so that predict/eval on it match the run.
    with phase(f"exporting {out_dir}", show=True):
        return export_merged(trained.adapted, out_dir, tokenizer=trained.processor, meta=trained.meta)


def _refuse_overlap(source: Path, out_dir: Path) -> None:
    """The merged model may not be written over, into or around what it is made from."""
    src, out = source.resolve(), out_dir.resolve()
    if out == src or src in out.parents or out in src.parents:
        raise ConfigError(f"--merged {out_dir} overlaps {source}, which the merged model is made from; writing it "
                          "there would replace the run or adapter. Choose a directory outside it")


def evaluate_loralib(config: RunConfig, lora_path: str | Path) -> dict[str, Any]:
    """Metrics of ``config.model.name`` + a loralib checkpoint (alpha = ``config.method.lora_alpha``);
    loralib checkpoints are text classifiers (microsoft/LoRA's NLU examples)."""
    family = family_for_task(config.data.task)
    data = family.load_data(config)
    spec = data.spec
    tokenizer = family.load_processor(config.model.name)
    model = family.load_model(config, spec, tokenizer)
    adapted = load_loralib(model, lora_path, config.method.lora_alpha)
    model.eval()
    accelerator = make_accelerator(config)
    eval_sets = encode_eval_splits(family, data, tokenizer, config)
    loaders = make_eval_loaders(config, eval_sets, family.collator(tokenizer, config), accelerator.num_processes)
    prepared, *prepared_loaders = accelerator.prepare(model, *loaders.values())
    metrics = evaluate_loaders(prepared, dict(zip(loaders, prepared_loaders)), family, spec, config, accelerator,
                               tokenizer, data.eval_splits)
    return {"task": spec.name, "source": str(lora_path), "data": data.source,
            "eval_examples": {k: len(v) for k, v in data.eval_splits.items()},
            "ranks": {n: layer.capacity for n, layer in adapted.adapters.items()},
            "lora_alpha": config.method.lora_alpha, "metrics": metrics}
