"""Training checkpoints: everything needed to continue a run exactly.

``checkpoint/`` holds the trainable tensors (adapters with their masks and gates, the head; the
whole model for ``full``), the optimizer and scheduler states, the method policy's state (importance
EMAs, rank decisions, random generators), the RNG states and the loop position. It is written to a
temporary directory and swapped into place, so a crash never leaves a half-written checkpoint.

Several processes: the main process writes; the RNG states of every process are gathered into it.
The position is counted in global micro-batches (``train.batch_size`` examples, whatever the number
of processes) and the data order depends only on (seed, epoch), so a checkpoint written by N
processes resumes at the same example on any M. With M = N each process gets its own RNG state
back and the run continues exactly; with M ≠ N every process starts from process 0's state (the
dropout masks of an M-process run are another random stream anyway).
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .errors import TrainingError
from .export import _atomic_dir

CHECKPOINT_DIR = "checkpoint"


@dataclass
class LoopState:
    """Where the loop is: optimizer steps done, epoch, global micro-batches consumed in that epoch
    (each ``batch_size`` examples over all processes), best so far; and the world size and global
    batch of the run that wrote it."""

    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    batch_size: int | None = None
    world_size: int = 1
    best_metric: float | None = None
    best_step: int | None = None
    best_metrics: dict[str, float] = field(default_factory=dict)
    samples_seen: int = 0
    train_seconds: float = 0.0


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def rng_state_for(saved: dict[str, Any] | list[dict[str, Any]], process_index: int,
                  num_processes: int) -> dict[str, Any]:
    """The RNG state process ``process_index`` of ``num_processes`` resumes with (see the module docstring).

    ``saved`` is the list of per-process states of the checkpoint (or one state, as single-process
    checkpoints of earlier versions hold).
    """
    if isinstance(saved, dict):
        return saved
    return saved[process_index] if len(saved) == num_processes else saved[0]


def save_checkpoint(run_dir: Path, *, model_state: dict[str, torch.Tensor], optimizer, scheduler,
                    policy_state: dict[str, Any], loop: LoopState,
                    rng_states: list[dict[str, Any]] | None = None) -> Path:
    """Write ``checkpoint/``; ``rng_states`` holds every process's RNG state, in process order
    (default: this process's only)."""
    target = Path(run_dir) / CHECKPOINT_DIR
    with _atomic_dir(target) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in model_state.items()}, str(tmp / "model.safetensors"))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "policy": policy_state, "rng": rng_states or [rng_state()]}, tmp / "training_state.pt")
        (tmp / "loop.json").write_text(json.dumps(asdict(loop), indent=2))
    return target


def load_checkpoint(run_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], LoopState]:
    source = Path(run_dir) / CHECKPOINT_DIR
    if not (source / "loop.json").is_file():
        raise TrainingError(f"train.resume=true but {source} holds no checkpoint; "
                            "run without train.resume or point output_dir at the run to continue")
    model_state = load_file(str(source / "model.safetensors"))
    # map_location: a checkpoint written on a GPU resumes on a CPU-only machine too (the optimizer and
    # the policies move their states to the parameters' device when they load them).
    state = torch.load(source / "training_state.pt", map_location="cpu", weights_only=False)
    loop = LoopState(**json.loads((source / "loop.json").read_text()))
    return model_state, state, loop
