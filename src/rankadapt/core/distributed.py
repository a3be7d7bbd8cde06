"""The thin distributed boundary of the trainer: data sharding, checks, broadcasts.

rankadapt runs on PyTorch's own engine: ``torchrun``/``accelerate launch`` start the processes,
Accelerate wraps the model in DDP (gloo on CPU, NCCL on GPU), DDP all-reduces the gradients. This
module adds only what DDP does not do for us:

- **Global batches split over processes.** :class:`GlobalBatchSampler` cuts one epoch's example
  order (identical on every process: seeded by ``seed + epoch``) into *global* micro-batches of
  ``train.batch_size`` and gives each process one contiguous slice of every global batch. The union of
  the slices of one step is exactly the batch a single process would take, so T, the schedules and the
  loss curve do not depend on the world size. Accelerate's own sharding was not enough here: with
  ``even_batches=True`` it completes a short last batch with examples from the first one (trained
  twice, unlike a single-process run), and with ``even_batches=False`` a process can get no batch at
  all and then waits forever in DDP's all-reduce. Here a process whose slice is empty gets one
  stand-in example with weight 0, and :meth:`GlobalBatchSampler.shares` gives every process its
  weight so that DDP's average of the per-process means is the mean over the global batch.
- **Checks that the processes agree** (:func:`assert_identical`): a 62-bit digest of the bytes of
  some tensors, compared with one ``all_reduce(MAX)`` of ``[d, -d]`` (max = −min ⇔ all equal). Used
  for rank decisions, RM-LoRA's random indices, the data order and the weights at every checkpoint;
  a mismatch raises :class:`~rankadapt.core.errors.TrainingError` instead of training on silently diverged
  replicas.
- **Rank 0 wins** (:func:`broadcast_`): after a rank decision every process takes rank 0's tensors,
  so float-level drift can never accumulate (docs/methods/README.md).

Everything is a no-op on a single process.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from .errors import TrainingError

_DIGEST_BITS = 62
"""Digests are non-negative and below 2**62, so ``-digest`` fits in int64 too."""


# ==================================================================================================
# Process group
# ==================================================================================================

def is_distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def shutdown() -> None:
    """Destroy the process group, if any, before the interpreter exits.

    Left to interpreter exit, gloo's worker threads can outlive Python's teardown and abort the
    process ("terminate called without an active exception", SIGABRT) after a successful run.
    Call it only after success: after a failure another process may be waiting in a collective.
    """
    if is_distributed():
        torch.distributed.destroy_process_group()


def rank() -> int:
    return torch.distributed.get_rank() if is_distributed() else 0


def world_size() -> int:
    return torch.distributed.get_world_size() if is_distributed() else 1


def _collective_device(device: torch.device | str | None) -> torch.device:
    """NCCL only reduces CUDA tensors, gloo CPU ones: use the device of what is being checked."""
    if device is not None:
        return torch.device(device)
    if is_distributed() and torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ==================================================================================================
# Checks and broadcasts
# ==================================================================================================

def digest(tensors: Iterable[torch.Tensor]) -> int:
    """A 62-bit BLAKE2 digest of the tensors' shapes, dtypes and bytes (bit-exact, order-sensitive)."""
    h = hashlib.blake2b(digest_size=8)
    for t in tensors:
        t = t.detach()
        h.update(f"{tuple(t.shape)}|{t.dtype}|".encode())
        flat = t.reshape(-1).contiguous().cpu()
        h.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return int.from_bytes(h.digest(), "little") >> (64 - _DIGEST_BITS)


def assert_identical(what: str, tensors: Iterable[torch.Tensor], device: torch.device | str | None = None,
                     hint: str = "") -> None:
    """Raise :class:`TrainingError` unless ``tensors`` are bit-identical on every process.

    One all-reduce of two int64 numbers, whatever the size of ``tensors``; every process must call it
    at the same point (it is a collective). ``hint`` is appended to the error message.
    """
    if not is_distributed():
        return
    d = digest(tensors)
    both = torch.tensor([d, -d], dtype=torch.int64, device=_collective_device(device))
    torch.distributed.all_reduce(both, op=torch.distributed.ReduceOp.MAX)
    highest, lowest = int(both[0]), -int(both[1])
    if highest != lowest:
        raise TrainingError(f"the {world_size()} processes disagree on {what} (process {rank()} of {world_size()} "
                            f"holds digest {d:x}, others up to {highest:x} / down to {lowest:x}); training stopped "
                            f"because the replicas would drift apart{'. ' + hint if hint else ''}")


@torch.no_grad()
def broadcast_(tensors: Iterable[torch.Tensor], src: int = 0) -> None:
    """Overwrite ``tensors`` in place with process ``src``'s values (each must be contiguous)."""
    if not is_distributed():
        return
    for t in tensors:
        torch.distributed.broadcast(t.data, src=src)


def gather_objects(obj: Any) -> list[Any]:
    """Every process's ``obj`` (picklable), in process order, on every process; ``[obj]`` single-process."""
    if not is_distributed():
        return [obj]
    gathered: list[Any] = [None] * world_size()
    torch.distributed.all_gather_object(gathered, obj)
    return gathered


def sum_over_processes(values: Sequence[float], device: torch.device | str | None = None) -> list[float]:
    """Elementwise sum of small float vectors over the processes (float64, for logging)."""
    if not is_distributed():
        return list(values)
    t = torch.tensor(list(values), dtype=torch.float64, device=_collective_device(device))
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
    return t.tolist()


# ==================================================================================================
# Data: one epoch order, global batches, one slice per process
# ==================================================================================================


