"""The ``train:`` section of the run configuration: optimizer, schedule, evaluation, checkpoints,
precision, device and the consistency-training options (every key with its default, bounds and a
docstring). Part of the schema in :mod:`.config`, which re-exports it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=True)


class TrainConfig(_Section):
    epochs: float = Field(3.0, gt=0.0)
    """Passes over the training split (fractions allowed); ``max_steps`` overrides it."""
    max_steps: int | None = Field(None, gt=0)
    """Optimizer steps; overrides epochs when set."""
    batch_size: int = Field(32, gt=0)
    """Global batch per optimizer step = batch_size x grad_accum (batch_size is split over processes)."""
    eval_batch_size: int | None = Field(None, gt=0)
    """Examples per evaluation batch (default 2 x batch_size)."""
    learning_rate: float = Field(5e-4, gt=0.0)
    """Peak learning rate of AdamW (after warmup, then linear decay to 0)."""
    weight_decay: float = Field(0.01, ge=0.0)
    """AdamW's decoupled weight decay; biases, LayerNorm weights and gates are exempt."""
    warmup_steps: int = Field(0, ge=0)
    """Optimizer steps of linear warmup from 0 to learning_rate."""
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0)
    """Warmup as a fraction of the total steps, used when warmup_steps is 0."""
    max_grad_norm: float | None = Field(1.0, gt=0.0)
    """Clip the global gradient norm to this value before each optimizer step; null = no clipping."""
    grad_accum: int = Field(1, gt=0)
    """Micro-batches accumulated per optimizer step."""
    seed: int = Field(42, ge=0, lt=2**32)
    """Seeds Python, NumPy and torch; NumPy takes 0 .. 2**32 - 1."""
    eval_strategy: Literal["steps", "epoch", "no"] = "epoch"
    """When to evaluate during training: every eval_steps steps, at each epoch end, or only after the last step."""
    eval_steps: int = Field(500, gt=0)
    """Optimizer steps between two evaluations (eval_strategy=steps); each writes checkpoint/."""
    logging_steps: int = Field(20, gt=0)
    """Optimizer steps between two ``train`` records (mean loss, lr) in metrics.jsonl."""
    metric_for_best: str | None = None
    """Eval metric that picks the best model (default: the task's main metric)."""
    export: Literal["best", "last"] = "best"
    """Which model ``adapter/`` holds."""
    save_final_checkpoint: bool = True
    """Write checkpoint/ after the final evaluation too, so that train.resume can extend the finished run
    (more epochs or steps). false saves that write where nothing will resume the run (a short job); a
    checkpoint of an intermediate evaluation is still written, and a resume continues from it."""
    resume: bool = False
    """Continue the run in output_dir from its checkpoint/ (same settings; a longer schedule is allowed)."""
    mixed_precision: Literal["no", "bf16", "fp16", "auto"] = "auto"
    """Autocast the forward pass to bf16 (CPU or GPU) or fp16 (GPU, with a gradient scaler); ``auto``:
    bf16 where the hardware executes it natively (a CUDA GPU of compute capability 8.0 or more; a CPU
    with AVX512-BF16 or AMX-BF16), else ``no``. The resolved choice is printed at the start, recorded in
    results.json and in the checkpoint (a resume on hardware that would resolve it otherwise is refused)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to train: a visible GPU when there is one (auto), or force cpu / cuda."""
    fast_dropout: bool = True
    """CPU training draws dropout masks from 16-bit random integers, under a quarter of torch's cost (p rounded
    to a multiple of 1/65536; see ``rankadapt.core.dropout``). No effect on GPU or in evaluation."""
    reuse_freed_memory: bool = True
    """CPU training on Linux (glibc): keep the memory each step frees for the next step instead of returning it
    to the system and faulting it in again (~9% of a MiniLM step; see ``rankadapt.runtime.memory``); the
    peak memory is the same, and it is returned when training and evaluation end. No effect on GPU."""
    group_by_length: bool = True
    """Batch examples of similar length together (less padding, same examples per epoch); the batches are
    taken in a random order, not transformers' longest-to-shortest sweep through each mega-batch."""
    num_workers: int = Field(0, ge=0)
    """DataLoader worker processes for the training split (0 = in the main process)."""
    tensorboard: bool = True
    """Also write TensorBoard event files under output_dir/tensorboard/."""
    progress: bool = True
    """Show progress bars on stderr (main process only)."""
    threads: int | None = Field(None, gt=0)
    """torch CPU threads (default: torch's choice)."""
    # --- consistency training (tasks.text_classification.augment; microsoft/LoRA's mnli.cutoff/rdrop.sh) ---
    aug_type: Literal["token_cutoff", "span_cutoff", "dim_cutoff"] | None = None
    """Cutoff (Shen et al. 2020): also train on a view with part of the input embeddings zeroed."""
    aug_cutoff_ratio: float = Field(0.1, gt=0.0, lt=1.0)
    """Fraction of the tokens (token/span cutoff) or embedding features (dim cutoff) zeroed."""
    aug_ce_loss: float = Field(1.0, ge=0.0)
    """Weight of the cross-entropy of the cut-off view."""
    aug_js_loss: float = Field(1.0, ge=0.0)
    """Weight of the Jensen-Shannon divergence between the original and the cut-off predictions."""
    reg_loss_wgt: float = Field(0.0, ge=0.0)
    """R-drop (Liang et al. 2021): weight of the symmetric KL between two dropout passes; 0 = off."""

    @field_validator("mixed_precision", "eval_strategy", mode="before")
    @classmethod
    def _yaml_no(cls, value: Any) -> Any:
        """YAML reads a bare ``no`` as false; these options spell it 'no'."""
        return "no" if value is False else value

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.mixed_precision == "fp16" and self.device == "cpu":
            raise ValueError("train.mixed_precision=fp16 needs a GPU; use bf16 on CPU or 'no'")
        if self.aug_type and self.reg_loss_wgt:
            raise ValueError("train.aug_type (Cutoff) and train.reg_loss_wgt (R-drop) each add a second forward "
                             "pass; choose one of them")
        if self.aug_type and not (self.aug_ce_loss or self.aug_js_loss):
            raise ValueError(f"train.aug_type={self.aug_type} with train.aug_ce_loss=0 and train.aug_js_loss=0 "
                             "trains nothing on the cut-off view; set one of them above 0 or remove train.aug_type")
        return self
