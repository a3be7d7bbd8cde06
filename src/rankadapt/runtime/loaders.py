"""DataLoaders of a run: the training loader (this process's slice of every global batch) and the
eval loaders (length order, sharded by Accelerate)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import DataLoader, Dataset

from ..core.config import RunConfig
from ..core.errors import ConfigError
from .sampling import EpochPermutation, GlobalBatchSampler, LengthGroupedSampler


def make_loaders(config: RunConfig, train: Dataset, evals: dict[str, Dataset], collate: Callable,
                 num_processes: int, process_index: int = 0,
                 pin_memory: bool = False) -> tuple[DataLoader, dict[str, DataLoader]]:
    """The training loader yields this process's slice of each global batch (``train.batch_size``
    examples per micro-batch, whatever the world size: :class:`~rankadapt.core.distributed.GlobalBatchSampler`);
    it is not given to Accelerate, which would shard it a second time. Eval loaders hold
    ``eval_batch_size / N`` per process and are sharded by Accelerate (gathered without duplicates).
    ``pin_memory`` (training on CUDA) collates into page-locked memory, so the loop's
    ``.to(device, non_blocking=True)`` is an asynchronous copy rather than a synchronous one."""
    if config.train.batch_size < num_processes:
        raise ConfigError(f"train.batch_size={config.train.batch_size} is the global batch of one micro-step, split "
                          f"over the {num_processes} processes, so it must be at least {num_processes}; use a "
                          f"multiple of {num_processes} (each process then takes batch_size / {num_processes})")
    # Each loader gets its own generator: otherwise every new iterator draws a seed from torch's global
    # generator, which shifts dropout masks and breaks exact resume.
    own_rng = {"generator": torch.Generator().manual_seed(config.train.seed)}
    if config.train.group_by_length and getattr(train, "lengths", None) is not None:
        order = LengthGroupedSampler(train.lengths, config.train.batch_size, seed=config.train.seed)
    else:
        order = EpochPermutation(len(train), seed=config.train.seed)
    batches = GlobalBatchSampler(order, config.train.batch_size, num_processes, process_index)
    train_loader = DataLoader(train, batch_sampler=batches, collate_fn=collate, num_workers=config.train.num_workers,
                              pin_memory=pin_memory, **own_rng)
    return train_loader, make_eval_loaders(config, evals, collate, num_processes)


def make_eval_loaders(config: RunConfig, evals: dict[str, Dataset], collate: Callable,
                      num_processes: int) -> dict[str, DataLoader]:
    """One loader per eval split, ``eval_batch_size / N`` examples per process, in length order."""
    own_rng = {"generator": torch.Generator().manual_seed(config.train.seed)}
    eval_batch = (config.train.eval_batch_size or 2 * config.train.batch_size) // num_processes or 1
    return {name: DataLoader(ds, batch_size=eval_batch, sampler=_by_length(ds), collate_fn=collate, **own_rng)
            for name, ds in evals.items()}


def _by_length(dataset: Dataset) -> list[int]:
    """Evaluation in length order: the least padding; the metrics do not depend on the order. A
    dataset whose examples all cost the same (``lengths = None``: images) is read in order."""
    lengths = getattr(dataset, "lengths", None)
    if lengths is None:
        return list(range(len(dataset)))
    return sorted(range(len(dataset)), key=lambda i: lengths[i])
