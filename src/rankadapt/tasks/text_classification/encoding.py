"""Tokenising once, caching the result, and batching with as little padding as possible.

Tokenisation is the slowest part of starting a run on CPU (IMDB: tens of seconds), and it is the
same for every method and seed of a sweep, so :func:`encode` stores the token ids on disk, keyed by
everything that changes them: the tokenizer (name, vocabulary), ``max_length``, and the examples
themselves. Examples are not padded: :class:`PaddingCollator` pads each batch to its own longest
member, and :class:`LengthGroupedSampler` puts examples of similar length into the same batch.
"""

from __future__ import annotations

import hashlib
import io
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ...core.config import RunConfig
from ...core.ownership import write_atomically
from .records import Examples
from .records import TaskData

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path("~/.cache/rankadapt/tokenized")
CACHE_FORMAT = 1
"""Bump when the cached arrays change meaning, so old files are not misread."""
_CHUNK = 2048


class EncodedDataset(torch.utils.data.Dataset):
    """Token ids of every example, stored flat (one array plus offsets) to keep memory and cache small.

    Items are dicts with ``input_ids`` (list of ints), ``token_type_ids`` when the tokenizer makes
    them, and ``labels`` (int class id, or float for regression). Nothing is padded.
    """

    def __init__(self, input_ids: np.ndarray, offsets: np.ndarray, labels: np.ndarray,
                 token_type_ids: np.ndarray | None = None):
        self.input_ids = input_ids
        self.offsets = offsets
        self.labels = labels
        self.token_type_ids = token_type_ids
        self.lengths: list[int] = np.diff(offsets).tolist()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        start, end = int(self.offsets[index]), int(self.offsets[index + 1])
        item: dict[str, Any] = {"input_ids": self.input_ids[start:end].tolist(), "labels": self.labels[index].item()}
        if self.token_type_ids is not None:
            item["token_type_ids"] = self.token_type_ids[start:end].tolist()
        return item

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"input_ids": self.input_ids, "offsets": self.offsets, "labels": self.labels,
               "format": np.asarray(CACHE_FORMAT)}
        if self.token_type_ids is not None:
            out["token_type_ids"] = self.token_type_ids
        return out

    @classmethod
    def from_arrays(cls, arrays) -> EncodedDataset:
        if int(arrays["format"]) != CACHE_FORMAT:
            raise ValueError("cache format changed")
        token_types = arrays["token_type_ids"] if "token_type_ids" in arrays else None
        return cls(arrays["input_ids"], arrays["offsets"], arrays["labels"], token_types)


# ==================================================================================================
# Tokenising and caching
# ==================================================================================================

def encode(examples: Examples, tokenizer, max_length: int, cache_dir: str | Path | None, cache_key: str,
           progress: str | None = None) -> EncodedDataset:
    """Token ids of ``examples`` (truncated to ``max_length``), from the cache when present.

    The cache is an optimisation only: an unreadable entry is recomputed and an unwritable cache
    directory is reported once in the log, never an error. ``progress``: the label of a progress bar
    shown while tokenising (none when ``None`` or when the cache answers).
    """
    path = _cache_path(examples, tokenizer, max_length, cache_dir, cache_key)
    cached = _load(path)
    if cached is not None:
        return cached
    dataset = tokenize(examples, tokenizer, max_length, progress)
    _save(dataset, path)
    return dataset


def tokenize(examples: Examples, tokenizer, max_length: int, progress: str | None = None) -> EncodedDataset:
    """One batched tokenizer call per chunk; truncation only (padding is per batch, later)."""
    from ...core.progress import bar

    ids, types, lengths = [], [], []
    with_types = True
    with bar(len(examples), progress or "", "example", show=progress is not None, leave=False) as shown:
        for start in range(0, len(examples), _CHUNK):
            end = start + _CHUNK
            pair = None if examples.text_pair is None else examples.text_pair[start:end]
            batch = tokenizer(examples.text[start:end], pair, truncation=True, max_length=max_length, padding=False)
            with_types = with_types and "token_type_ids" in batch
            for i, seq in enumerate(batch["input_ids"]):
                ids.extend(seq)
                lengths.append(len(seq))
                if with_types:
                    types.extend(batch["token_type_ids"][i])
            shown.update(len(batch["input_ids"]))
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    labels = np.asarray(examples.labels, dtype=np.float32 if _is_float(examples.labels) else np.int64)
    token_types = np.asarray(types, dtype=np.int8) if with_types else None
    return EncodedDataset(np.asarray(ids, dtype=np.int32), offsets, labels, token_types)


def _is_float(labels: Sequence) -> bool:
    return bool(labels) and isinstance(labels[0], float)


def _cache_path(examples: Examples, tokenizer, max_length: int, cache_dir: str | Path | None, cache_key: str) -> Path:
    digest = hashlib.sha256()
    for part in (f"v{CACHE_FORMAT}", cache_key, str(getattr(tokenizer, "name_or_path", "")),
                 type(tokenizer).__name__, str(len(tokenizer)), _vocab_hash(tokenizer), str(max_length),
                 _examples_hash(examples)):
        digest.update(part.encode("utf-8") + b"\x00")
    directory = Path(cache_dir).expanduser() if cache_dir else DEFAULT_CACHE_DIR.expanduser()
    return directory / f"{digest.hexdigest()[:32]}.npz"


def _vocab_hash(tokenizer) -> str:
    """Two tokenizers with the same name and size but different vocabularies must not share entries."""
    vocab = tokenizer.get_vocab()
    return hashlib.sha256(repr(sorted(vocab.items())).encode("utf-8")).hexdigest()


def _examples_hash(examples: Examples) -> str:
    digest = hashlib.sha256()
    for column in (examples.text, examples.text_pair or [], [repr(v) for v in examples.labels]):
        digest.update(str(len(column)).encode())
        for value in column:
            data = value.encode("utf-8", "surrogatepass")
            digest.update(len(data).to_bytes(8, "little") + data)
    return digest.hexdigest()


def _load(path: Path) -> EncodedDataset | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as arrays:
            return EncodedDataset.from_arrays({k: arrays[k] for k in arrays.files})
    except (OSError, ValueError, KeyError) as err:
        log.warning("ignoring unreadable tokenisation cache %s (%s); tokenising again", path, err)
        return None


def _save(dataset: EncodedDataset, path: Path) -> None:
    """Write to a temporary file in the same directory, then rename: readers never see half a file."""
    buffer = io.BytesIO()
    np.savez(buffer, **dataset.arrays())
    try:
        write_atomically(path, buffer.getvalue())
    except OSError as err:
        log.warning("could not write the tokenisation cache %s (%s); set data.cache_dir to a writable "
                    "directory to reuse tokenised data", path, err)


# ==================================================================================================
# Batching
# ==================================================================================================

class PaddingCollator:
    """Pads a list of items to the longest in the batch (right padding) and builds the attention mask.

    ``pad_to_multiple_of`` rounds the padded length up (8 suits tensor cores with fp16/bf16);
    ``pad_to_length`` pads every batch to at least that length (fixed padding, ``data.padding=max_length``).
    """

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None, pad_to_length: int | None = None):
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of
        self.pad_to_length = pad_to_length

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(max(len(item["input_ids"]) for item in items), self.pad_to_length or 0)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch = {"input_ids": self._pad([it["input_ids"] for it in items], width, self.pad_token_id),
                 "attention_mask": self._pad([[1] * len(it["input_ids"]) for it in items], width, 0)}
        if "token_type_ids" in items[0]:
            batch["token_type_ids"] = self._pad([it["token_type_ids"] for it in items], width, 0)
        labels = [it["labels"] for it in items]
        dtype = torch.float32 if isinstance(labels[0], float) else torch.long
        batch["labels"] = torch.tensor(labels, dtype=dtype)
        return batch

    @staticmethod
    def _pad(rows: list[list[int]], width: int, value: int) -> torch.Tensor:
        out = torch.full((len(rows), width), value, dtype=torch.long)
        for i, row in enumerate(rows):
            out[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
        return out


def encode_split(config: RunConfig, task_name: str, name: str, examples: Examples, tokenizer,
                 show_progress: bool = False) -> EncodedDataset:
    """One split of a run, cached under (model, task, split) with the run's max length."""
    label = f"tokenising {name}" if show_progress and config.train.progress else None
    key = f"{config.model.name}|{task_name}|{name}"
    return encode(examples, tokenizer, config.data.max_length, config.data.cache_dir, key, label)


def encode_splits(config: RunConfig, data: TaskData, tokenizer, show_progress: bool = False
                  ) -> tuple[EncodedDataset, dict[str, EncodedDataset]]:
    """The training split and every eval split of ``data`` (:func:`encode_split` each)."""
    def encoded(name: str, examples: Examples) -> EncodedDataset:
        return encode_split(config, data.task.name, name, examples, tokenizer, show_progress)

    return encoded("train", data.train), {name: encoded(name, split) for name, split in data.eval_splits.items()}


def text_collator(config: RunConfig, tokenizer) -> PaddingCollator:
    """Batches padded to their longest example, or to ``data.max_length`` with ``data.padding=max_length``."""
    fixed = config.data.max_length if config.data.padding == "max_length" else None
    return PaddingCollator(tokenizer.pad_token_id or 0, pad_to_length=fixed)
