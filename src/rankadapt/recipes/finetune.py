"""The training recipe: one explicit loop on Hugging Face Accelerate.

``train(config)`` builds everything (data, model, method, optimizer, schedule), then runs
:func:`_training_loop`, the one long function of the package, where the order of the optimizer step
(docs/methods/README.md) can be read top to bottom:

    loss = task loss + policy.regularization        # γ·orthogonal term, SoRA's L1
    backward                                         # (loss / grad_accum; DDP sync on the last micro-batch)
    -- at an accumulation boundary only --
    policy.before_optimizer_step                     # RM-LoRA gradient masks
    clip gradients → optimizer.step()
    policy.after_optimizer_step                      # SoRA proximal step, with the lr just used
    lr_scheduler.step()
    policy.after_scheduler_step                      # AdaLoRA/ElaLoRA importance + rank decisions
    zero_grad(); step += 1

The same code runs on CPU, one GPU and several processes (``torchrun``/``accelerate launch``, DDP
through Accelerate). ``train.batch_size`` is the global micro-batch: each process takes a slice of
the very batch a single process would take (:mod:`.distributed`), weighted so that DDP's gradient
average is the gradient of the global mean. The number of batches per epoch, T and every schedule are
therefore those of a single-process run, and the logged loss is the global batch's mean. Only the
main process writes files and shows progress; every process evaluates its shard and the predictions
are gathered; rank decisions are checked identical and broadcast from rank 0 (``broadcast_state``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from ..core.config import RunConfig
from ..core.distributed import assert_identical, gather_objects, rank, sum_over_processes
from ..core.dropout import fast_dropout
from ..core.errors import ConfigError, TrainingError
from ..core.ownership import (RunLock, clear_run_outputs, crash_point, make_run_dir, refuse_foreign_outputs,
                              restore_interrupted_swap)
from ..core.progress import bar, phase
from ..core.versions import package_versions
from ..methods import StepContext
from ..methods.adapting import AdaptedModel, prepare_model, trainable_state_dict
from ..methods.budget import apply_budget
from ..methods.init_from import init_adapters_from
from ..runtime.accelerator import make_accelerator
from ..runtime.checkpoint import (CHECKPOINT_DIR, LoopState, has_checkpoint, load_checkpoint, recover_checkpoint,
                                  rng_state, rng_state_for, save_checkpoint, set_rng_state)
from ..runtime.loaders import make_loaders
from ..runtime.memory import freed_memory_kept
from ..runtime.optim import make_optimizer, schedule_lengths
from ..runtime.phases import PhaseClock
from ..runtime.resume import SCHEDULED_METHODS, check_resume_changes, config_changes
from ..runtime.tracking import RunLogger
from ..tasks import TaskFamily, family_for_task
from ..tasks.base import TaskData
from .evaluate import Outputs, encode_eval_splits, evaluate_loaders

RESULTS_FILE = "results.json"
CONFIG_FILE = "config.yaml"

log = logging.getLogger(__name__)


@dataclass
class Run:
    """Everything the loop needs, built once by :func:`build_run`."""

    config: RunConfig
    run_dir: Path
    accelerator: Any
    family: TaskFamily
    data: TaskData
    processor: Any
    """The tokenizer or image processor (saved with exports)."""
    adapted: AdaptedModel
    model: torch.nn.Module
    train_loader: DataLoader
    eval_loaders: dict[str, DataLoader]
    optimizer: Any
    scheduler: Any
    total_steps: int
    steps_per_epoch: int
    logger: RunLogger
    clock: PhaseClock
    """Wall seconds per phase (``results.json``'s ``phase_seconds``)."""

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def status(self, message: str) -> None:
        """A status line (stderr, :mod:`rankadapt.core.messages`), from the main process only."""
        if self.is_main:
            log.info(message)


# ==================================================================================================
# Building a run
# ==================================================================================================


def build_run(config: RunConfig) -> Run:
    from accelerate.utils import set_seed

    clock = PhaseClock()
    with clock.phase("setup"):
        accelerator = make_accelerator(config)
        run_dir = config.resolved_output_dir()
        family = family_for_task(config.data.task)
    with clock.phase("data"):
        data = family.load_data(config)
        family.check_config(config, data.spec)
        processor = family.prepare_processor(family.load_processor(config.model.name), config)
        config = family.fit_config(config)
        show = accelerator.is_main_process
        train_set = family.encode("train", data.train, processor, config, data.spec, show)
        eval_sets = encode_eval_splits(family, data, processor, config, show)
    with clock.phase("model"):
        # Seed everything before the head and the adapters are created, so their init is reproducible.
        set_seed(config.train.seed)
        model = family.load_model(config, data.spec, processor)
        echo = log.info if accelerator.is_main_process else None
        patterns, heads = family.role_patterns(model), family.head_modules(model)
        config = apply_budget(config, model, echo, patterns, heads)  # method.budget -> ranks; needs the shapes
        adapted = prepare_model(model, config.method, patterns, heads)
        if config.init_from:  # before any checkpoint is loaded: train.resume continues from the checkpoint
            init_adapters_from(adapted, config.init_from, getattr(config.method, "lora_alpha", None), echo)
    with clock.phase("setup"):
        return _assemble_run(config, run_dir, accelerator, family, data, processor, adapted, model, train_set,
                             eval_sets, clock)


def _assemble_run(config: RunConfig, run_dir: Path, accelerator: Any, family: TaskFamily, data: TaskData,
                  processor: Any, adapted: AdaptedModel, model: torch.nn.Module, train_set: Any, eval_sets: dict,
                  clock: PhaseClock) -> Run:
    """Loaders, optimizer, schedule and logger around the prepared model (build_run's last part)."""
    from transformers import get_linear_schedule_with_warmup

    if hasattr(adapted.policy, "seed"):
        adapted.policy.seed = config.train.seed
    train_loader, eval_loaders = make_loaders(config, train_set, eval_sets, family.collator(processor, config),
                                              accelerator.num_processes,
                                              accelerator.process_index, pin_memory=accelerator.device.type == "cuda")
    optimizer = make_optimizer(config, model) if adapted.trainable_parameters() else None
    # The training loader is already sharded (GlobalBatchSampler); the loop moves its batches to the device.
    model, *rest = accelerator.prepare(model, *eval_loaders.values(), *([optimizer] if optimizer else []))
    eval_loaders = dict(zip(eval_loaders, rest[:len(eval_loaders)]))
    optimizer = rest[len(eval_loaders)] if optimizer else None
    total_steps, steps_per_epoch = schedule_lengths(config, len(train_loader))
    warmup = config.train.warmup_steps or int(config.train.warmup_ratio * total_steps)
    # The scheduler is deliberately not given to accelerate: it steps exactly once per optimizer step.
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup, total_steps) if optimizer else None
    if optimizer:
        adapted.policy.setup(adapted.adapters, total_steps)
    logger = RunLogger(run_dir, tensorboard=config.train.tensorboard, enabled=accelerator.is_main_process)
    return Run(config, run_dir, accelerator, family, data, processor, adapted, model, train_loader, eval_loaders,
               optimizer, scheduler, total_steps, steps_per_epoch, logger, clock)


# ==================================================================================================
# Evaluation
# ==================================================================================================

def evaluate(run: Run, keep_outputs: dict[str, Outputs] | None = None) -> dict[str, float]:
    """Metrics on the eval splits, computed with ΔW merged into W (the same function, cheaper)."""
    with run.clock.phase("evaluation"), run.adapted.merged_for_evaluation():
        return evaluate_loaders(run.model, run.eval_loaders, run.family, run.data.spec, run.config, run.accelerator,
                                run.processor, run.data.eval_splits, show_progress=run.is_main and run.config.train.progress,
                                keep_outputs=keep_outputs)


def best_metric_name(run: Run) -> str:
    if run.config.train.metric_for_best:
        return run.config.train.metric_for_best
    main = run.data.spec.main_metric
    first = next(iter(run.eval_loaders))
    return main if len(run.eval_loaders) == 1 else first.removeprefix("validation_") + "_" + main


# ==================================================================================================
# The loop
# ==================================================================================================

def train(config: RunConfig) -> dict[str, Any]:
    """Run one fine-tuning job end to end; returns the ``results.json`` record."""
    with _claimed_run_dir(config):
        run = build_run(config)
        try:
            return _train(run)
        finally:
            run.logger.close()


@contextmanager
def _claimed_run_dir(config: RunConfig):
    """Hold the run directory's lock for the whole run (main process only: the others write nothing),
    after checking it can be written and that a fresh run would replace only rankadapt's own outputs."""
    if os.environ.get("RANK", "0") != "0":
        yield
        return
    run_dir = config.resolved_output_dir()
    make_run_dir(run_dir)
    with RunLock(run_dir):
        if not config.train.resume:
            refuse_foreign_outputs(run_dir)
        elif (run_dir / CONFIG_FILE).is_file() and not getattr(config.method, "budget", None):
            # Early, before building anything that a changed setting could break; the length check
            # (and a budget's derived ranks) needs the built run and the checkpoint: see _resume.
            check_resume_changes(config_changes((run_dir / CONFIG_FILE).read_text(), config.to_yaml()), run_dir,
                                 longer=True)
        yield


def _train(run: Run) -> dict[str, Any]:
    config = run.config
    with run.clock.phase("resume" if config.train.resume else "run_dir"):
        loop = _start_or_resume(run)
    run.status(run.adapted.summary())
    run.status(f"data: {run.data.source}; train {len(run.data.train):,} examples, "
               + ", ".join(f"{k} {len(v):,}" for k, v in run.data.eval_splits.items())
               + f"; {run.total_steps} optimizer steps"
               + (f" on {run.accelerator.num_processes} processes (global batch {config.train.batch_size})"
                  if run.accelerator.num_processes > 1 else ""))
    start = time.perf_counter()
    if loop.final_metrics is not None and loop.step >= run.total_steps:
        final = loop.final_metrics  # a finished run resumed: its final evaluation is already logged
    else:
        with freed_memory_kept(config.train.reuse_freed_memory, run.accelerator.device.type):
            if run.optimizer is not None and loop.step < run.total_steps:
                cheaper_masks = fast_dropout(run.adapted.model) if config.train.fast_dropout else nullcontext()
                with cheaper_masks:
                    _training_loop(run, loop)
            final = _final_evaluation(run, loop)
    results = _results(run, loop, final, wall=time.perf_counter() - start)
    if run.is_main:
        crash_point("train: before results.json")
        _write_json(run.run_dir / RESULTS_FILE, results)
    run.accelerator.wait_for_everyone()
    return results


def _final_evaluation(run: Run, loop: LoopState) -> dict[str, float]:
    """Evaluate, log, write the family's predictions files, export and checkpoint the end of the
    run (unless train.save_final_checkpoint=false); the checkpoint marks it finished, so a resume
    with a longer schedule extends it."""
    outputs: dict[str, Outputs] = {}
    final = evaluate(run, keep_outputs=outputs)
    run.logger.log("eval", loop.step, final=True, **final)
    with run.clock.phase("predictions"):
        if run.is_main:
            for split, split_outputs in outputs.items():
                run.family.write_predictions(run.run_dir, split, run.data.spec, split_outputs, run.processor,
                                             run.data.eval_splits[split])
    _require_finite_evaluation(run, loop, final)
    improved = _update_best(run, loop, final)
    _export(run, loop, final_pass=True, improved=improved)
    loop.final_metrics = final
    if run.optimizer is not None and run.config.train.save_final_checkpoint:
        _save(run, loop)
    return final


def _training_loop(run: Run, loop: LoopState) -> None:
    config, accelerator, policy = run.config, run.accelerator, run.adapted.policy
    adapters, model, optimizer, scheduler = run.adapted.adapters, run.model, run.optimizer, run.scheduler
    accum = config.train.grad_accum
    trainable = [p for p in model.parameters() if p.requires_grad]
    best_name = best_metric_name(run)
    num_epochs = math.ceil(run.total_steps / run.steps_per_epoch)
    progress = _progress_bar(run, loop.step)
    batches, device, num_processes = run.train_loader.batch_sampler, accelerator.device, accelerator.num_processes
    window = _restored_window(run, loop)
    # The family's loss (text: the task loss, or Cutoff / R-drop's with a second forward pass).
    objective = run.family.objective(config, accelerator.unwrap_model(model))
    if policy.rank_adaptive and loop.step == 0:
        run.logger.log("ranks", 0, ranks=run.adapted.rank_pattern(), total=sum(run.adapted.rank_pattern().values()))
    model.train()
    for epoch in range(loop.epoch, num_epochs):
        loop.epoch = epoch
        batches.set_epoch(epoch)
        assert_identical(f"the data order of epoch {epoch + 1}", [torch.tensor(batches.epoch_order())],
                         hint="every process must read the same data files with the same train.seed")
        # Resuming mid-epoch: the order depends only on (seed, epoch) and the position counts global
        # micro-batches, so skipping replays it on any number of processes.
        batches.skip(loop.batches_in_epoch)
        batches_left = len(batches) - loop.batches_in_epoch
        tic = time.perf_counter()
        for batch in run.train_loader:
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            # This process's part of the global batch; DDP averages over processes, so weighting the
            # local mean by local·N/global makes the gradient that of the global mean (a weight of 0
            # marks a stand-in example given to a process whose slice of a short last batch is empty).
            local_rows, global_rows = batches.shares(loop.batches_in_epoch)
            share = local_rows * num_processes / global_rows
            loop.batches_in_epoch += 1
            batches_left -= 1
            boundary = loop.batches_in_epoch % accum == 0 or batches_left == 0
            # ---- forward and backward (no gradient all-reduce until the last micro-batch) ----------
            with (nullcontext() if boundary else accelerator.no_sync(model)):
                task_loss = objective(model, batch)
                reg = policy.regularization(adapters)
                _check_finite(run, loop, task_loss if reg is None else task_loss + reg)
                weighted = task_loss if share == 1.0 else task_loss * share
                loss = weighted if reg is None else weighted + reg
                accelerator.backward(loss / accum)
            window["loss"] += task_loss.item() * (local_rows / global_rows)  # summed over processes when logged
            window["reg"] += 0.0 if reg is None else reg.item()
            window["batches"] += 1
            window["samples"] += global_rows
            loop.samples_seen += global_rows
            if not boundary:
                continue
            # ---- the optimizer step, in the order of docs/methods/README.md ----------------------
            ctx = StepContext(step=loop.step, total_steps=run.total_steps,
                              lr=optimizer.param_groups[0]["lr"], optimizer=optimizer)
            policy.before_optimizer_step(adapters, ctx)
            if config.train.max_grad_norm:
                accelerator.clip_grad_norm_(trainable, config.train.max_grad_norm)
            optimizer.step()
            ranks_changed = False
            # fp16: a step whose gradients overflowed is skipped by the GradScaler (weights unchanged, a
            # smaller scale next time). The hooks must skip it too: AdaLoRA/ElaLoRA would fold the inf
            # gradients into their importance EMAs for good, SoRA would shrink gates without a step.
            # The scheduler waits as well, as the transformers Trainer's does; the step still counts.
            if not accelerator.optimizer_step_was_skipped:
                policy.after_optimizer_step(adapters, ctx)
                scheduler.step()
                ranks_changed = policy.after_scheduler_step(adapters, ctx)
            optimizer.zero_grad(set_to_none=True)
            loop.step += 1
            # ---- bookkeeping: ranks, logs, evaluation, checkpoints ---------------------------------
            if ranks_changed:
                policy.broadcast_state(adapters)
                pattern = run.adapted.rank_pattern()
                run.logger.log("ranks", loop.step, ranks=pattern, total=sum(pattern.values()))
            if loop.step % config.train.logging_steps == 0 or loop.step == run.total_steps:
                _log_train(run, loop, window, ctx, progress)
            _advance_bar(run, loop, window, ctx.lr, progress)
            epoch_end = batches_left == 0
            if _eval_due(config, loop.step, epoch_end, run.total_steps):
                loop.train_seconds += time.perf_counter() - tic
                metrics = evaluate(run)
                run.logger.log("eval", loop.step, epoch=epoch + 1, **metrics)
                run.status(f"step {loop.step}: " + _format_metrics(metrics))
                _require_finite_evaluation(run, loop, metrics)
                if _update_best(run, loop, metrics, best_name):
                    _export(run, loop)
                _save(run, loop, window)
                tic = time.perf_counter()
            if loop.step >= run.total_steps:
                break
        loop.train_seconds += time.perf_counter() - tic
        if loop.step >= run.total_steps:
            break
        loop.batches_in_epoch = 0
    progress.close()


def _check_finite(run: Run, loop: LoopState, loss: torch.Tensor) -> None:
    """Stop on a non-finite loss, on every process at once (one all-reduce, so none is left waiting)."""
    bad = torch.tensor(0.0 if torch.isfinite(loss.detach()) else 1.0, device=loss.device)
    if run.accelerator.num_processes > 1:
        bad = run.accelerator.reduce(bad, reduction="sum")
    if bad.item():
        kept = _kept_checkpoint(run)
        value = loss.item() if not torch.isfinite(loss.detach()) else "non-finite on another process"
        raise TrainingError(f"the training loss became {value} at optimizer step {loop.step} "
                            f"(epoch {loop.epoch + 1}); training stopped and {kept}. Lower train.learning_rate, "
                            "set train.max_grad_norm, or use train.mixed_precision=no")


def _require_finite_evaluation(run: Run, loop: LoopState, metrics: dict[str, float]) -> None:
    """Stop before a checkpoint is written after an evaluation that is not finite (the weights have
    diverged): the checkpoint kept is then the last good one, and resuming from it works."""
    bad = sorted(k for k, v in metrics.items() if not math.isfinite(v))
    if bad:
        raise TrainingError(f"the evaluation at optimizer step {loop.step} gave non-finite {', '.join(bad)}: the "
                            f"weights diverged; training stopped and {_kept_checkpoint(run)}. Lower "
                            "train.learning_rate, set train.max_grad_norm, or use train.mixed_precision=no")


def _kept_checkpoint(run: Run) -> str:
    ckpt = run.run_dir / CHECKPOINT_DIR
    return f"the last good checkpoint ({ckpt}) is kept" if has_checkpoint(run.run_dir) else "no checkpoint was written yet"


def _restored_window(run: Run, loop: LoopState) -> dict[str, Any]:
    """The running sums of the train loss since the last ``train`` event, as the checkpoint left them.

    With the world size unchanged every process takes its own; otherwise process 0 takes the sum of
    the loss shares (whose sum over processes is what is logged) and the others start from zero.
    """
    window = {"loss": 0.0, "reg": 0.0, "batches": 0, "samples": 0}
    saved, index = loop.train_windows, run.accelerator.process_index
    if saved:
        if len(saved) == run.accelerator.num_processes:
            window.update(saved[index])
        else:
            window.update(saved[0], loss=sum(w["loss"] for w in saved) if index == 0 else 0.0)
    window["start"] = time.perf_counter()
    window["shown_sps"] = "-"  # samples/s shown on the bar until the first train event
    return window


def _eval_due(config: RunConfig, step: int, epoch_end: bool, total: int) -> bool:
    if step >= total:
        return False  # the final evaluation happens once, after the loop
    if config.train.eval_strategy == "steps":
        return step % config.train.eval_steps == 0
    return config.train.eval_strategy == "epoch" and epoch_end


def _update_best(run: Run, loop: LoopState, metrics: dict[str, float], name: str | None = None) -> bool:
    name = name or best_metric_name(run)
    if name not in metrics:
        raise ConfigError(f"train.metric_for_best={name!r} is not among the eval metrics: {', '.join(metrics)}")
    value = metrics[name]
    lower_is_better = name.endswith("loss")
    better = loop.best_metric is None or (value < loop.best_metric if lower_is_better else value > loop.best_metric)
    if better:
        loop.best_metric, loop.best_step, loop.best_metrics = value, loop.step, dict(metrics)
    return better


# ==================================================================================================
# Start, resume, save, export, results
# ==================================================================================================

def _start_or_resume(run: Run) -> LoopState:
    if run.config.train.resume:
        return _resume(run)
    if run.is_main:
        _fresh_run_dir(run)
    run.accelerator.wait_for_everyone()
    return LoopState()


def _resume(run: Run) -> LoopState:
    """Continue the run in ``run_dir`` exactly where its newest complete checkpoint left it."""
    config = run.config
    if run.is_main:
        recover_checkpoint(run.run_dir)  # after a crash inside a swap; the run's lock is held
    run.accelerator.wait_for_everyone()
    model_state, state, loop = load_checkpoint(run.run_dir, recover=False)
    changes = _checked_config_changes(run, loop)
    model = run.accelerator.unwrap_model(run.model)
    missing = set(model_state) - set(model.state_dict())
    if missing:
        raise TrainingError(f"the checkpoint in {run.run_dir / CHECKPOINT_DIR} does not fit this model/method "
                            f"(unknown tensors such as {sorted(missing)[:3]}); resume with the run's own config.yaml")
    precision = run.accelerator.mixed_precision
    if loop.mixed_precision is not None and loop.mixed_precision != precision:
        raise ConfigError(f"the checkpoint in {run.run_dir / CHECKPOINT_DIR} was trained with mixed precision "
                          f"{loop.mixed_precision!r}, but train.mixed_precision={config.train.mixed_precision} gives "
                          f"{precision!r} on this machine; resume it where it gives {loop.mixed_precision!r} (or "
                          "start a new run): the rest of the run would not be the run it resumes")
    if loop.batch_size is not None and loop.batch_size != config.train.batch_size:
        raise ConfigError(f"the checkpoint in {run.run_dir / CHECKPOINT_DIR} was written with train.batch_size="
                          f"{loop.batch_size} and its position in the epoch counts such batches; resume with "
                          f"train.batch_size={loop.batch_size} (the global batch, whatever the number of processes)")
    try:
        model.load_state_dict(model_state, strict=False)
        if run.optimizer is not None:
            run.optimizer.load_state_dict(state["optimizer"])
            run.scheduler.load_state_dict(state["scheduler"])
        run.adapted.policy.load_state_dict(state["policy"])
        set_rng_state(rng_state_for(state["rng"], rank(), run.accelerator.num_processes))
    except (KeyError, ValueError, TypeError, RuntimeError) as err:
        raise TrainingError(f"the checkpoint in {run.run_dir / CHECKPOINT_DIR} does not fit this model/method "
                            f"({type(err).__name__}: {str(err)[:200]}); resume with the run's own config.yaml") from None
    if loop.final_metrics is not None and loop.step < run.total_steps:
        # A finished run trained for longer (train.max_steps/epochs grew): its results are no longer final.
        loop.final_metrics = None
        if run.is_main:
            (run.run_dir / RESULTS_FILE).unlink(missing_ok=True)
    run.logger.truncate_to(loop.events_logged, loop.step)
    if changes and run.is_main:
        _record_config_changes(run, loop, changes)
    moved = (f" (written by {loop.world_size} processes, continuing on {run.accelerator.num_processes})"
             if loop.world_size != run.accelerator.num_processes else "")
    run.status(f"resuming {run.run_dir} at optimizer step {loop.step}{moved}")
    return loop


def _checked_config_changes(run: Run, loop: LoopState) -> dict[str, tuple[Any, Any]]:
    """The settings that differ from the run's ``config.yaml``; unsafe ones are refused (:mod:`.resume`)."""
    saved = run.run_dir / CONFIG_FILE
    if not saved.is_file():
        return {}
    changes = config_changes(saved.read_text(), run.config.to_yaml())
    longer = (loop.total_steps is not None and run.total_steps > loop.total_steps
              and run.config.method.name not in SCHEDULED_METHODS)
    check_resume_changes(changes, run.run_dir, longer)
    return changes


def _record_config_changes(run: Run, loop: LoopState, changes: dict[str, tuple[Any, Any]]) -> None:
    record = {key: {"from": old, "to": new} for key, (old, new) in changes.items()}
    run.logger.log("config_changed", loop.step, changes=record)
    (run.run_dir / CONFIG_FILE).write_text(run.config.to_yaml())
    run.status("resumed with changed settings: " + ", ".join(f"{k} {o!r} -> {n!r}" for k, (o, n) in changes.items()))


def _fresh_run_dir(run: Run) -> None:
    make_run_dir(run.run_dir)  # train() made it already; build_run + _train callers may not have
    clear_run_outputs(run.run_dir)
    (run.run_dir / CONFIG_FILE).write_text(run.config.to_yaml())
    run.logger.log("start", 0, method=run.config.method.name, task=run.data.spec.name, model=run.config.model.name,
                   total_steps=run.total_steps, trainable_parameters=run.adapted.trainable_parameters(),
                   total_parameters=run.adapted.total_parameters(), train_examples=len(run.data.train))


def _save(run: Run, loop: LoopState, window: dict[str, Any] | None = None) -> None:
    """Write the checkpoint from the main process, after checking that the replicas are identical
    and finite (a checkpoint of diverged weights would be no "last good checkpoint").

    Every process calls this (the check and the gathering of the per-process RNG states and loss
    windows are collectives); only the main process writes.
    """
    run.accelerator.wait_for_everyone()
    if run.optimizer is None:
        return
    adapted = run.adapted
    replica = [p for p in adapted.model.parameters() if p.requires_grad]
    replica += [t for layer in adapted.adapters.values() for t in (layer.rank_mask, layer.lora_E)]
    assert_identical(f"the trained weights at optimizer step {loop.step}",
                     replica + adapted.policy.decision_tensors(adapted.adapters),
                     hint="DDP keeps replicas equal only if every process runs the same code on the same config")
    if not all(bool(torch.isfinite(p).all()) for p in replica):
        raise TrainingError(f"the trained weights are not finite at optimizer step {loop.step}: they diverged; "
                            f"training stopped and {_kept_checkpoint(run)}. Lower train.learning_rate or set "
                            "train.max_grad_norm")
    rng_states = gather_objects(rng_state())
    sums = {k: window[k] for k in ("loss", "reg", "batches", "samples")} if window else None
    loop.train_windows = gather_objects(sums) if window else None
    loop.world_size, loop.batch_size = run.accelerator.num_processes, run.config.train.batch_size
    loop.mixed_precision = run.accelerator.mixed_precision
    loop.events_logged = run.logger.events_logged
    loop.total_steps = run.total_steps
    if run.is_main:
        with run.clock.phase("checkpoint"):
            save_checkpoint(run.run_dir, model_state=trainable_state_dict(adapted), optimizer=run.optimizer,
                            scheduler=run.scheduler, policy_state=adapted.policy.state_dict(), loop=loop,
                            rng_states=rng_states)


def _export(run: Run, loop: LoopState, final_pass: bool = False, improved: bool = False) -> None:
    """``adapter/``: a PEFT LoRA for adapter methods; ``model/``: a transformers model for full/head.

    With ``train.export=best`` the export is written whenever the best metric improves, the final
    evaluation included (``improved``); the final pass also writes it if nothing was written yet (or
    with ``export=last``).
    """
    if not run.is_main or run.adapted.method == "none":
        return
    target = run.run_dir / ("adapter" if run.adapted.adapters else "model")
    restore_interrupted_swap(target)
    if final_pass and run.config.train.export == "best" and target.exists() and not improved:
        return
    if not final_pass and run.config.train.export == "last":
        return
    from ..methods.export import export_merged, export_peft

    # Exports of a new best model during training show while they are written, then make way for the bar.
    with run.clock.phase("export"), phase(f"exporting {target}", run.config.train.progress, leave=final_pass):
        # What predict/eval need to treat inputs as this run did (the family's rankadapt.json fields).
        meta = run.family.export_metadata(run.data.spec, run.config)
        if run.adapted.adapters:
            meta = {**meta, "step": loop.step, "metrics": loop.best_metrics}
            export_peft(run.adapted, target, base_model=run.config.model.name, extra_meta=meta,
                        task_type=run.family.peft_task_type)
            run.family.save_processor(run.processor, target)
        else:
            export_merged(run.adapted, target, tokenizer=run.processor, meta=meta)


def _results(run: Run, loop: LoopState, final: dict[str, float], wall: float) -> dict[str, Any]:
    adapted = run.adapted
    results = {
        "task": run.data.spec.name,
        "family": run.family.name,
        "method": adapted.method,
        "model": run.config.model.name,
        "seed": run.config.train.seed,
        "final_metrics": final,
        "best_metrics": loop.best_metrics,
        "best_step": loop.best_step,
        "metric_for_best": best_metric_name(run),
        "trainable_parameters": adapted.trainable_parameters(),
        "total_parameters": adapted.total_parameters(),
        "base_parameters": adapted.total_parameters() - _adapter_tensor_parameters(adapted),
        "adapter_parameters": adapted.adapter_parameters(),
        "steps": loop.step,
        "total_steps": run.total_steps,
        "epochs": loop.step / run.steps_per_epoch,
        "train_examples": len(run.data.train),
        "eval_examples": {k: len(v) for k, v in run.data.eval_splits.items()},
        "train_seconds": round(loop.train_seconds, 3),
        "wall_seconds": round(wall, 3),
        "samples_per_second": round(loop.samples_seen / loop.train_seconds, 2) if loop.train_seconds else None,
        "num_processes": run.accelerator.num_processes,
        "mixed_precision": run.accelerator.mixed_precision,
        "phase_seconds": {**run.clock.record(), "train_loop": round(loop.train_seconds, 3)},
        "versions": package_versions(),
    }
    if adapted.adapters:
        results["rank_pattern"] = adapted.rank_pattern()
        results["initial_adapter_parameters"] = sum(
            run.config.method.lora_r * (layer.in_features + layer.out_features) for layer in adapted.adapters.values())
        if getattr(run.config.method, "budget", None):
            results["budget"] = run.config.method.budget
    return results


def _adapter_tensor_parameters(adapted: AdaptedModel) -> int:
    """Parameters the adapters add at their full capacity (A, B and trainable gates): the total less
    these is the model's own count, head included, as the report's model table shows it."""
    return sum(p.numel() for layer in adapted.adapters.values() for p in layer.parameters(recurse=False))


def _write_json(path: Path, record: dict[str, Any]) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str))
    tmp.replace(path)


# ==================================================================================================
# Small helpers
# ==================================================================================================

def _progress_bar(run: Run, initial: int):
    return bar(run.total_steps, "train", "step", run.is_main and run.config.train.progress, initial=initial)


def _advance_bar(run: Run, loop: LoopState, window: dict[str, Any], lr: float, progress) -> None:
    """One optimizer step on the bar, which shows the mean task loss of the steps since the last
    logged one (on one process; several processes show the logged, global value: each process only
    knows its own share of the loss until the log sums them). The last step is drawn once, by close(),
    with the mean rate of the whole run rather than a recent average."""
    if window["batches"] and run.accelerator.num_processes == 1:
        progress.set_postfix(loss=f"{window['loss'] / window['batches']:.4f}", lr=f"{lr:.2e}",
                             sps=window["shown_sps"], refresh=False)
    if loop.step < run.total_steps:
        progress.update(1)
    else:
        progress.n, progress.smoothing = loop.step, 0


def _log_train(run: Run, loop: LoopState, window: dict[str, Any], ctx: StepContext, progress) -> None:
    """Log the mean task loss of the global micro-batches since the last log (a collective: every
    process calls it at the same steps). Each process summed its share of every global batch's mean;
    the sum over processes is that mean itself, as a single process computes it."""
    elapsed = time.perf_counter() - window["start"]
    (window["loss"],) = sum_over_processes([window["loss"]], run.accelerator.device)
    record = {"loss": window["loss"] / max(window["batches"], 1), "lr": ctx.lr,
              "samples_per_second": window["samples"] / elapsed if elapsed else 0.0,
              "epoch": loop.step / run.steps_per_epoch}
    if window["reg"]:
        record["regularization"] = window["reg"] / max(window["batches"], 1)
    run.logger.log("train", loop.step, **record)
    window["shown_sps"] = f"{record['samples_per_second']:.1f}"
    progress.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{ctx.lr:.2e}", sps=window["shown_sps"], refresh=False)
    window.update(loss=0.0, reg=0.0, batches=0, samples=0, start=time.perf_counter())


def _format_metrics(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())

