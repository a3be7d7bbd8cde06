"""Training checkpoints: everything needed to continue a run exactly.

``checkpoint/`` holds the trainable tensors (adapters with their masks and gates, the head; the
whole model for ``full``), the optimizer and scheduler states, the method policy's state (importance
EMAs, rank decisions, random generators), the RNG states and the loop position. It is written to a
temporary directory and swapped into place, so a crash never leaves a half-written checkpoint; a
crash inside the swap is repaired on resume (the newest complete copy wins). Nothing is pickled.

Several processes: the main process writes; the RNG states of every process are gathered into it.
The position is counted in global micro-batches (``train.batch_size`` examples, whatever the number
of processes) and the data order depends only on (seed, epoch), so a checkpoint written by N
processes resumes at the same example on any M. With M = N each process gets its own RNG state
back and the run continues exactly; with M ≠ N every process starts from process 0's state (the
dropout masks of an M-process run are another random stream anyway).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..core.errors import TrainingError
from ..core.ownership import (atomic_dir, crash_point, is_owned, remove_owned as _remove_owned,
                              remove_stale_temporaries, temporaries_of)

CHECKPOINT_DIR = "checkpoint"
MODEL_FILE = "model.safetensors"
STATE_TENSORS = "state.safetensors"
STATE_JSON = "state.json"
LOOP_FILE = "loop.json"
MANIFEST = "manifest.json"
FORMAT = "rankadapt-checkpoint-2"
CHECKSUMMED = (MODEL_FILE, STATE_TENSORS, STATE_JSON, LOOP_FILE)
LEGACY_STATE = "training_state.pt"


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
    total_steps: int | None = None
    """T of the run that wrote it (a resume may only make it longer)."""
    events_logged: int | None = None
    """Lines of ``metrics.jsonl`` when the checkpoint was written: a resume keeps exactly these."""
    train_windows: list[dict[str, float]] | None = None
    """Each process's running sums of the train loss since the last ``train`` event, so that the
    first loss logged after a resume averages the same batches as an uninterrupted run's."""
    final_metrics: dict[str, float] | None = None
    """Set by the checkpoint written after the final evaluation: the run is finished."""
    mixed_precision: str | None = None
    """The autocast the run trained with (``train.mixed_precision=auto`` resolved): a resume keeps it."""


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
    (default: this process's only).

    Nothing in it is pickled: tensors go to safetensors files, everything else to JSON, so loading a
    checkpoint (possibly one a colleague shared) can never run code. ``manifest.json`` is written
    last and holds the SHA-256 of every other file: a checkpoint without it is incomplete, one whose
    files do not match it is corrupt, and either is refused or skipped, never half-loaded.
    """
    target = Path(run_dir) / CHECKPOINT_DIR
    state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "policy": policy_state, "rng": rng_states or [rng_state()]}
    structure, tensors = encode_state(state)
    with atomic_dir(target) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in model_state.items()}, str(tmp / MODEL_FILE))
        crash_point("checkpoint: model written")
        save_file(tensors, str(tmp / STATE_TENSORS))
        _write_synced(tmp / STATE_JSON, json.dumps(structure))
        _write_synced(tmp / LOOP_FILE, json.dumps(asdict(loop), indent=2))
        crash_point("checkpoint: state written")
        digests = {name: _sha256(tmp / name) for name in CHECKSUMMED}
        _write_synced(tmp / MANIFEST, json.dumps({"format": FORMAT, "files": digests}, indent=2))
        crash_point("checkpoint: manifest written")
    return target


def has_checkpoint(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a complete checkpoint (also one a crash left mid-swap)."""
    return bool(_complete_candidates(Path(run_dir)))


def load_checkpoint(run_dir: Path, recover: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, Any], LoopState]:
    """The newest complete checkpoint of ``run_dir``, verified against its manifest.

    A crash inside the swap of :func:`atomic_dir` can leave the newest complete checkpoint under a
    temporary name (``.checkpoint.old`` or ``.checkpoint.tmp-*``); with ``recover`` it is moved back
    into place first (several processes: the main one recovers, then every process loads with
    ``recover=False``).
    """
    run_dir = Path(run_dir)
    source = recover_checkpoint(run_dir) if recover else run_dir / CHECKPOINT_DIR
    if source is None or _manifest(source) is None:
        legacy = run_dir / CHECKPOINT_DIR / LEGACY_STATE
        if legacy.exists():
            raise TrainingError(f"{legacy.parent} was written by an older rankadapt (a pickled {LEGACY_STATE}, which "
                                "rankadapt no longer loads because loading it could run code); start the run afresh "
                                "in a new output_dir, or without train.resume after removing the checkpoint")
        raise TrainingError(f"train.resume=true but {run_dir / CHECKPOINT_DIR} holds no complete checkpoint; "
                            "run without train.resume or point output_dir at the run to continue")
    _verify(source)
    try:
        model_state = load_file(str(source / MODEL_FILE))
        structure = json.loads((source / STATE_JSON).read_text())
        state = decode_state(structure, load_file(str(source / STATE_TENSORS)))
        loop = LoopState(**json.loads((source / LOOP_FILE).read_text()))
    except Exception as err:  # the digests matched, so these files were written so: another version's layout
        raise TrainingError(f"the checkpoint in {source} cannot be read by this rankadapt version ({err}); "
                            "start the run afresh in a new output_dir") from None
    return model_state, state, loop


def recover_checkpoint(run_dir: Path) -> Path | None:
    """Make the newest complete checkpoint ``run_dir/checkpoint`` and remove the other (stale) copies.

    Candidates are ``checkpoint/`` and the temporaries of an interrupted swap; complete means a
    readable manifest. Only directories rankadapt wrote (they hold its manifest or owner marker) are
    removed.
    """
    target = run_dir / CHECKPOINT_DIR
    candidates = _complete_candidates(run_dir)
    if not candidates:
        return None
    newest = max(candidates, key=lambda path: (_step_of(path), path == target))
    if newest != target:
        if target.exists() and not is_owned(target):
            raise TrainingError(f"{target} was not written by this rankadapt version, and a newer checkpoint waits in "
                                f"{newest}; move {target} away and resume again")
        if target.exists():
            _remove_owned(target)
        os.replace(newest, target)
    remove_stale_temporaries(target)
    return target


def _complete_candidates(run_dir: Path) -> list[Path]:
    target = run_dir / CHECKPOINT_DIR
    paths = [target, *temporaries_of(target)]
    return [path for path in paths if path.is_dir() and _manifest(path) is not None]


def _manifest(path: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("format") == FORMAT else None


def _step_of(path: Path) -> int:
    try:
        return int(json.loads((path / LOOP_FILE).read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return -1


def _verify(source: Path) -> None:
    """Refuse a checkpoint whose files are missing or differ from what its manifest recorded."""
    files = _manifest(source).get("files")
    if not isinstance(files, dict) or set(files) != set(CHECKSUMMED):
        raise TrainingError(f"the checkpoint manifest {source / MANIFEST} does not list this version's files; "
                            "start the run afresh in a new output_dir")
    for name, digest in files.items():
        path = source / name
        if not path.is_file():
            raise TrainingError(f"the checkpoint in {source} is incomplete: {name} is missing. Restore it from a "
                                "backup, or start the run afresh in a new output_dir")
        if _sha256(path) != digest:
            raise TrainingError(f"the checkpoint in {source} is corrupt: {name} does not match the checksum recorded "
                                "when it was written. Restore it from a backup, or start the run afresh in a new "
                                "output_dir")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_synced(path: Path, text: str) -> None:
    with path.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


# --------------------------------------------------------------------------------------------------
# A pickle-free encoding of the training state
# --------------------------------------------------------------------------------------------------

def encode_state(value: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """(JSON-able structure, tensors): tensors and numpy arrays become ``{"__tensor__": key}``
    references into the tensor dict; tuples and dicts with non-string keys (the optimizer's
    parameter ids) are tagged so that :func:`decode_state` rebuilds them exactly."""
    tensors: dict[str, torch.Tensor] = {}

    def encode(item: Any) -> Any:
        if isinstance(item, torch.Tensor):
            key = str(len(tensors))
            tensors[key] = item.detach().cpu().contiguous()
            return {"__tensor__": key}
        if isinstance(item, np.ndarray):
            key = str(len(tensors))
            tensors[key] = torch.from_numpy(np.ascontiguousarray(item))
            return {"__ndarray__": key}
        if isinstance(item, tuple):
            return {"__tuple__": [encode(v) for v in item]}
        if isinstance(item, list):
            return [encode(v) for v in item]
        if isinstance(item, dict):
            if all(isinstance(k, str) for k in item):
                return {"__dict__": {k: encode(v) for k, v in item.items()}}
            return {"__items__": [[encode(k), encode(v)] for k, v in item.items()]}
        if isinstance(item, np.generic):
            return item.item()
        if item is None or isinstance(item, (bool, int, float, str)):
            return item
        raise TypeError(f"cannot store a {type(item).__name__} in a checkpoint")

    return encode(value), tensors


def decode_state(structure: Any, tensors: dict[str, torch.Tensor]) -> Any:
    def decode(item: Any) -> Any:
        if isinstance(item, list):
            return [decode(v) for v in item]
        if not isinstance(item, dict):
            return item
        (tag, content), = item.items()
        if tag == "__tensor__":
            return tensors[content]
        if tag == "__ndarray__":
            return tensors[content].numpy()
        if tag == "__tuple__":
            return tuple(decode(v) for v in content)
        if tag == "__dict__":
            return {k: decode(v) for k, v in content.items()}
        if tag == "__items__":
            return {decode(k): decode(v) for k, v in content}
        raise ValueError(f"unknown entry {tag!r}")

    return decode(structure)
