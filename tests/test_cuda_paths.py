"""What the CUDA path of the trainer does differently, checked on this CPU (no GPU needed; runs in CI).

- fp16 mixed precision: the GradScaler skips a step whose gradients overflowed, and the trainer must
  skip the method's hooks and the scheduler with it (a real ``torch.amp.GradScaler`` on CPU drives
  Accelerate's own skipped-step detection here, with one overflowing gradient planted);
- (a checkpoint written on a GPU resumes on a machine without one by construction: the training
  state is stored pickle-free, every tensor moved to the CPU before it is written; see
  ``rankadapt/checkpoint.py`` and ``tests/test_cuda.py``'s resume across devices);
- the training loader collates into pinned memory when the device is CUDA;
- ``torch.compile`` trains through the fast dropout masks (CPU training).

``tests/test_cuda.py`` runs the same paths on a real device where one is visible.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers import custom_task_args, make_model_dir


def tiny_run_args(tmp_path: Path, *extra: str) -> list[str]:
    model_dir = tmp_path / "model"
    if not model_dir.exists():
        make_model_dir(model_dir)
    return custom_task_args(tmp_path, model_dir, tmp_path / "run", n_train=32, n_eval=16) + [
        "train.tensorboard=false", *extra]


def test_a_step_the_grad_scaler_skips_runs_no_method_hook_and_no_scheduler_step(tmp_path):
    """AdaLoRA with one overflowing gradient at the first step: its importance EMAs stay finite, the
    learning-rate schedule waits one step, and the next steps train normally."""
    from accelerate.optimizer import AcceleratedOptimizer

    from rankadapt.core.config_files import load_config
    from rankadapt.recipes.finetune import _train, build_run

    config = load_config(None, tiny_run_args(tmp_path, "method.name=adalora", "method.lora_r=4", "method.target_rank=2",
                                             "method.init_warmup=1", "method.final_warmup=1", "train.max_steps=4",
                                             "train.eval_strategy=no", "train.warmup_steps=0"))
    run = build_run(config)
    # What Accelerate sets up for mixed_precision=fp16 on a GPU: a GradScaler in the accelerator and
    # in the wrapped optimizer (on CPU Accelerate uses none; torch's CPU GradScaler behaves the same).
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 8)
    run.accelerator.scaler = scaler
    run.optimizer = AcceleratedOptimizer(run.optimizer.optimizer, device_placement=False, scaler=scaler)
    run.accelerator._optimizers = [run.optimizer]
    first = next(iter(run.adapted.adapters.values())).lora_B
    overflows = iter([True])
    first.register_hook(lambda grad: torch.full_like(grad, float("inf")) if next(overflows, False) else grad)
    try:
        _train(run)
    finally:
        run.logger.close()
    assert scaler.get_scale() == 2.0 ** 7  # one overflow seen: the scale was halved once
    assert int(run.optimizer.optimizer.state[first]["step"]) == 3  # three of the four steps were taken
    tracker = run.adapted.policy.tracker
    emas = [t for store in (tracker.ipt_avg, tracker.unc_avg) for factors in store.values() for t in factors.values()]
    assert emas and all(torch.isfinite(t).all() for t in emas)
    assert run.scheduler.last_epoch == 3  # the schedule waited for the skipped step
    assert torch.isfinite(first).all()


def test_the_training_loader_pins_memory_only_for_cuda(tmp_path):
    from rankadapt.core.config_files import load_config
    from rankadapt.tasks.text_classification import load_task_data
    from rankadapt.core.models import load_tokenizer
    from rankadapt.tasks.text_classification.encoding import encode_splits
    from rankadapt.runtime.loaders import make_loaders
    from rankadapt.tasks.text_classification import text_collator

    config = load_config(None, tiny_run_args(tmp_path))
    data = load_task_data(config.data)
    tokenizer = load_tokenizer(config.model.name)
    train_set, eval_sets = encode_splits(config, data, tokenizer)
    pinned, _ = make_loaders(config, train_set, eval_sets, text_collator(config, tokenizer), 1, pin_memory=True)
    plain, _ = make_loaders(config, train_set, eval_sets, text_collator(config, tokenizer), 1)
    assert pinned.pin_memory and not plain.pin_memory


@pytest.mark.slow
def test_torch_compile_trains_through_fast_dropout():
    """``torch.compile`` (a choice the device check measures) of a model training with fast dropout: the
    int16 view of the random words used to break AOT autograd's output aliasing (torch 2.13, ~20 s)."""
    from conftest import tiny_batch, tiny_model

    from rankadapt.core.dropout import fast_dropout

    model = tiny_model("bert").train()
    batch = tiny_batch()
    with fast_dropout(model):
        torch.compile(model)(**batch).logits.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.classifier.parameters())
