"""Which examples make each batch: seeded epoch orders, length grouping, global batches split over
processes (see :mod:`rankadapt.core.distributed` for why the split is done here rather than by Accelerate)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch


class EpochPermutation(torch.utils.data.Sampler):
    """A random order of ``range(n)`` that depends only on (seed, epoch), on every process.

    ``torch.utils.data.RandomSampler`` with a generator continues that generator from epoch to epoch,
    so epoch e's order depends on the iterations before it; a run resumed in epoch e > 0, or by a
    different number of processes, would then see another order. Epoch 0 equals RandomSampler's first
    epoch with ``Generator().manual_seed(seed)``.
    """

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        return iter(torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist())


def split_sizes(rows: int, parts: int) -> list[int]:
    """Sizes of ``parts`` contiguous slices of ``rows`` examples, as even as possible, larger first."""
    return [rows // parts + (1 if i < rows % parts else 0) for i in range(parts)]


class GlobalBatchSampler(torch.utils.data.Sampler):
    """Yields this process's slice of each global micro-batch of one epoch (a ``batch_sampler``).

    Args:
        order: a sampler whose iteration is the epoch's example order (``set_epoch`` is forwarded);
            it must give the same order on every process.
        batch_size: the global micro-batch, ``train.batch_size``.
        num_processes, process_index: the world size and this process's index.

    Every process yields ``len(self)`` = ⌈n / batch_size⌉ batches per epoch, whatever the world size, so
    every process takes part in every gradient all-reduce. Global batch j holds positions
    [j·B, (j+1)·B) of the order; process p gets its ``split_sizes`` slice. An empty slice (a last
    batch smaller than the number of processes) is replaced by the batch's first example, to be
    weighted 0 (see :meth:`shares`).
    """

    def __init__(self, order: torch.utils.data.Sampler, batch_size: int, num_processes: int = 1,
                 process_index: int = 0) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if not 0 <= process_index < num_processes:
            raise ValueError(f"process_index {process_index} is not in [0, {num_processes})")
        self.order_source = order
        self.batch_size = batch_size
        self.num_processes = num_processes
        self.process_index = process_index
        self.num_examples = len(order)
        self._skip = 0
        self._order: list[int] | None = None

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.order_source, "set_epoch"):
            self.order_source.set_epoch(epoch)
        self._order = None

    def skip(self, batches: int) -> None:
        """Start the next iteration at global batch ``batches`` (resuming mid-epoch)."""
        if not 0 <= batches <= len(self):
            raise ValueError(f"cannot skip {batches} of the {len(self)} batches of an epoch")
        self._skip = batches

    def epoch_order(self) -> list[int]:
        """The epoch's full example order (the same on every process); computed once per epoch."""
        if self._order is None:
            self._order = list(self.order_source)
        return self._order

    def __len__(self) -> int:
        return -(-self.num_examples // self.batch_size)

    def global_rows(self, batch_index: int) -> int:
        """Examples in global batch ``batch_index`` (B, or fewer for the last one)."""
        return min(self.batch_size, self.num_examples - batch_index * self.batch_size)

    def shares(self, batch_index: int) -> tuple[int, int]:
        """(examples this process holds in global batch ``batch_index``, examples in that global batch).

        A process's task loss is the mean over its slice; DDP averages gradients over the N processes.
        Weighting the local mean by ``local · N / global`` makes that average the gradient of the mean
        over the whole global batch, exactly as one process computes it, also for an uneven last
        batch and for a stand-in example (local = 0).
        """
        total = self.global_rows(batch_index)
        return split_sizes(total, self.num_processes)[self.process_index], total

    def __iter__(self) -> Iterator[list[int]]:
        order, start, self._skip = self.epoch_order(), self._skip, 0
        for j in range(start, len(self)):
            batch = order[j * self.batch_size:(j + 1) * self.batch_size]
            sizes = split_sizes(len(batch), self.num_processes)
            begin = sum(sizes[:self.process_index])
            mine = batch[begin:begin + sizes[self.process_index]]
            yield mine if mine else batch[:1]


class LengthGroupedSampler(torch.utils.data.Sampler):
    """Random batches of similar length: little padding, in a random order of batches.

    Each epoch: a permutation seeded by ``seed + epoch``, cut into mega-batches of
    ``batch_size * mega_batch_mult`` indices, each sorted by length and cut into batches (as
    transformers' ``LengthGroupedSampler`` groups them), the longest example overall swapped into the
    first batch so that an out-of-memory error shows at the first step. The other batches are then
    **shuffled** with the same generator; a last, smaller batch stays last (batch
    boundaries stay at multiples of ``batch_size``, which :class:`GlobalBatchSampler` relies on).
    Every index appears exactly once per epoch, and the order depends only on (lengths, seed, epoch).

    Why shuffle: transformers emits each mega-batch's batches longest first, so training runs through
    a long-to-short sweep of ``mega_batch_mult`` steps (50 on the quick start's IMDB job), then jumps
    back to the longest reviews. On short, high-learning-rate jobs that sweep cost 2–8 accuracy points
    against random batches, and one bf16 run diverged when its sweep reached the shortest reviews
    (BENCHMARKS.md section 4.0). Shuffled, the batches still hold reviews of similar length (the same
    padding), but nothing about the step order depends on length.

    ``mega_batch_mult=None`` picks ``min(50, len // (4 * batch_size))`` (at least 1), as transformers
    does, so that a small dataset still has several mega-batches and its batches change every epoch.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int, mega_batch_mult: int | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.mega_batch_mult = mega_batch_mult or max(1, min(50, len(self.lengths) // (4 * batch_size)))
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        return iter(self.order())

    def order(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        batches = self._grouped_batches(generator)
        if len(batches) < 2:
            return [i for batch in batches for i in batch]
        first, middle = batches[0], batches[1:]
        last = [middle.pop()] if len(middle[-1]) < self.batch_size else []
        shuffled = [middle[b] for b in torch.randperm(len(middle), generator=generator).tolist()]
        return [i for batch in [first, *shuffled, *last] for i in batch]

    def _grouped_batches(self, generator: torch.Generator) -> list[list[int]]:
        """Batches of ``batch_size`` (the last may be smaller) cut from length-sorted mega-batches, the
        longest example swapped into the first batch."""
        indices = torch.randperm(len(self.lengths), generator=generator).tolist()
        size = self.batch_size * self.mega_batch_mult
        grouped = [i for start in range(0, len(indices), size)
                   for i in sorted(indices[start:start + size], key=lambda j: -self.lengths[j])]
        if grouped:
            longest = max(range(len(grouped)), key=lambda k: self.lengths[grouped[k]])
            grouped[0], grouped[longest] = grouped[longest], grouped[0]
        return [grouped[k:k + self.batch_size] for k in range(0, len(grouped), self.batch_size)]
