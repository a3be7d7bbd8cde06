"""Summarization examples: reading source/target files, tokenising, batching.

A file holds one document and its reference summary per row: JSON lines (or a ``.json`` list of
objects), CSV (quoted) or TSV (unquoted, as GLUE's files). The default column names are XSum's as
the Hugging Face hub writes them (``document``, ``summary``, ``id``); ``id`` is optional. A hub split
(:func:`hub_pairs`) goes through the same checks as a file's rows.

Tokenisation truncates sources to ``max_length`` and targets to ``max_target_length`` tokens and
counts how many of each it cut, so a run can report it (a truncated reference teaches the model to
stop mid-sentence). Examples are not padded: :class:`Seq2SeqCollator` pads each batch to its
longest member, with ``-100`` (ignored by the loss) in the labels.
"""

from __future__ import annotations

import csv
import logging
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ...core.errors import DataError
from ..text_classification.files import json_records

log = logging.getLogger(__name__)

LABEL_PAD_ID = -100
"""Label value cross-entropy ignores (padding, in torch's and transformers' convention)."""
SUPPORTED_EXTENSIONS = (".jsonl", ".json", ".csv", ".tsv")
# Long articles exceed Python's default CSV field limit (128 KiB).
_FIELD_SIZE_LIMIT = min(sys.maxsize, 2**31 - 1)


@dataclass(frozen=True)
class SummaryPair:
    """One example: the document to summarise, its reference summary, and its id when the file has one."""

    source: str
    target: str
    id: str | None = None


@dataclass(frozen=True)
class PairColumns:
    """Which columns of a file hold the source, the target and the (optional) id."""

    source: str = "document"
    target: str = "summary"
    id: str | None = "id"


# ==================================================================================================
# Reading
# ==================================================================================================

def read_pairs(path: str | Path, columns: PairColumns = PairColumns()) -> list[SummaryPair]:
    """Every (source, target, id) of a JSONL/JSON/CSV/TSV file, in file order.

    Raises :class:`DataError` for a missing file or column, a cell that is not text (a number, a
    list, null), and empty sources or targets, naming the record and the setting to change.
    """
    path = Path(path)
    if not path.is_file():
        kind = "a directory, not a file" if path.is_dir() else "missing"
        raise DataError(f"data file {path} is {kind}; check data.train_file / data.eval_file")
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_EXTENSIONS:
        raise DataError(f"cannot read {path}: unknown extension {suffix or '(none)'!r}; "
                        f"use one of {', '.join(SUPPORTED_EXTENSIONS)}")
    try:
        rows = list(_json_rows(path) if suffix in (".jsonl", ".json") else _delimited_rows(path, suffix))
    except (UnicodeDecodeError, csv.Error, OSError) as err:
        raise DataError(f"cannot read {path}: {err}; save it as UTF-8 JSON lines, CSV (quoted) or TSV") from None
    if not rows:
        raise DataError(f"{path} has no data rows; fill it or point to another file")
    return pairs_from_rows(path, rows, columns)


def pairs_from_rows(origin: str | Path, rows: list[tuple[str, dict[str, Any]]],
                    columns: PairColumns = PairColumns()) -> list[SummaryPair]:
    """``(where, row)`` records as pairs, with the checks of :func:`read_pairs` (columns present,
    text cells, no empty source or target); ``origin`` (a file, ``hub: xsum[train]``) and ``where``
    (``record 3``, ``line 4``, ``row 2``) name the bad record in messages."""
    if not rows:
        raise DataError(f"{origin} has no data rows; use another split or local files")
    _check_columns(origin, rows[0][1], columns)
    pairs = [_pair(origin, where, row, columns) for where, row in rows]
    _check_not_empty(origin, pairs, rows, columns)
    return pairs


def hub_pairs(split, columns: PairColumns, origin: str) -> list[SummaryPair]:
    """The pairs of one hub split (a ``datasets.Dataset``), checked as file rows are; its rows are
    named ``row 1``, ``row 2`` ... in messages. Only the source, target and id columns are read."""
    found = list(split.column_names)
    _check_columns(origin, dict.fromkeys(found), columns)
    wanted = [c for c in dict.fromkeys((columns.source, columns.target, columns.id)) if c and c in found]
    cells = split.select_columns(wanted).to_dict()
    rows = [(f"row {i + 1}", {c: cells[c][i] for c in wanted}) for i in range(len(split))]
    return pairs_from_rows(origin, rows, columns)


def _json_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    for number, record in json_records(path):
        if not isinstance(record, dict):
            raise DataError(f"{path}, record {number}: expected a JSON object like "
                            '{"document": ..., "summary": ...}, got ' + type(record).__name__)
        yield f"record {number}", record


def _delimited_rows(path: Path, suffix: str) -> Iterator[tuple[str, dict[str, Any]]]:
    options = dict(delimiter="\t", quoting=csv.QUOTE_NONE) if suffix == ".tsv" else dict(delimiter=",")
    csv.field_size_limit(_FIELD_SIZE_LIMIT)
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, **options)
        header = [h.strip() for h in next(reader, [])]
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise DataError(f"{path}, line {line}: {len(row)} fields where the header has {len(header)}; "
                                "CSV must be comma-separated and quoted, TSV tab-separated without quotes")
            yield f"line {line}", dict(zip(header, row, strict=True))


def _check_columns(path: str | Path, first: dict[str, Any], columns: PairColumns) -> None:
    found = list(first)
    shown = ", ".join(repr(c) for c in found[:20]) + (" ..." if len(found) > 20 else "")
    for role, name, setting in (("source", columns.source, "data.text_column"),
                                ("target", columns.target, "data.target_column")):
        if name not in first:
            raise DataError(f"{path} has no {role} column {name!r} (set {setting}); found columns: {shown}")


def _pair(path: str | Path, where: str, row: dict[str, Any], columns: PairColumns) -> SummaryPair:
    source = _text_cell(path, where, row, columns.source)
    target = _text_cell(path, where, row, columns.target)
    raw_id = row.get(columns.id) if columns.id else None
    return SummaryPair(source, target, None if raw_id is None else str(raw_id))


def _text_cell(path: str | Path, where: str, row: dict[str, Any], column: str) -> str:
    if column not in row:
        raise DataError(f"{path}, {where}: no value for column {column!r}; every record needs it")
    value = row[column]
    if not isinstance(value, str):
        shown = "null" if value is None else f"a {type(value).__name__} ({str(value)[:40]})"
        raise DataError(f"{path}, {where}: column {column!r} holds {shown}, not text; write it as a string")
    return value


def _check_not_empty(path: str | Path, pairs: list[SummaryPair], rows: list[tuple[str, Any]], columns: PairColumns) -> None:
    for role, column in (("source", columns.source), ("target", columns.target)):
        empty = [i for i, pair in enumerate(pairs) if not getattr(pair, role).strip()]
        if empty:
            raise DataError(f"{path}: {len(empty)} empty {role} text(s) in column {column!r} "
                            f"(first at {rows[empty[0]][0]}); fill them or drop those rows")


# ==================================================================================================
# Tokenising
# ==================================================================================================

@dataclass
class EncodedPairs(torch.utils.data.Dataset):
    """Token ids of sources and targets, unpadded. Items: ``input_ids``, ``labels``, ``index`` (the
    example's position in the split, so predictions can be put back in file order after
    length-sorted or multi-process evaluation). ``lengths`` are source lengths, for grouping."""

    source_ids: list[list[int]]
    target_ids: list[list[int]]
    truncated_sources: int = 0
    truncated_targets: int = 0
    lengths: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.lengths = [len(ids) for ids in self.source_ids]

    def __len__(self) -> int:
        return len(self.source_ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"input_ids": self.source_ids[index], "labels": self.target_ids[index], "index": index}

    def truncation_report(self, max_length: int, max_target_length: int) -> str:
        """One line for the run log: how many sources and targets were cut, and the setting to raise."""
        n = len(self)
        return (f"truncated {self.truncated_sources} of {n} sources to data.max_length={max_length} tokens and "
                f"{self.truncated_targets} of {n} targets to data.max_target_length={max_target_length} tokens")


def encode_pairs(pairs: Sequence[SummaryPair], tokenizer, max_length: int, max_target_length: int,
                 source_prefix: str = "", decoder_start_token_id: int | None = None) -> EncodedPairs:
    """Tokenise sources (``source_prefix`` prepended, e.g. T5's ``"summarize: "``) and targets.

    Each side is tokenised to one token over its limit (the target to two: it may lose its start token
    below), then cut to the limit keeping a closing special token (``</s>``, ``[SEP]``) as the
    tokenizer's own truncation does, so the cuts can be counted. A target that starts with
    the decoder start token loses it (BERT's ``[CLS]`` in a bert2bert model): the model prepends that
    token itself when it shifts the labels right, and would otherwise learn to emit it twice.
    """
    # One token over each limit: a sequence that still reaches limit + 1 was cut, one that does not was not.
    sources = tokenizer([source_prefix + p.source for p in pairs], truncation=True,
                        max_length=max_length + 1)["input_ids"]
    targets = tokenizer(text_target=[p.target for p in pairs], truncation=True,
                        max_length=max_target_length + 2)["input_ids"]
    special = set(tokenizer.all_special_ids)
    if decoder_start_token_id is not None:
        targets = [ids[1:] if ids and ids[0] == decoder_start_token_id else ids for ids in targets]
    cut_sources = [truncate(ids, max_length, special) for ids in sources]
    cut_targets = [truncate(ids, max_target_length, special) for ids in targets]
    encoded = EncodedPairs(cut_sources, cut_targets,
                           truncated_sources=sum(len(a) < len(b) for a, b in zip(cut_sources, sources, strict=True)),
                           truncated_targets=sum(len(a) < len(b) for a, b in zip(cut_targets, targets, strict=True)))
    if encoded.truncated_targets:
        log.warning("%s; raise data.max_target_length to keep whole summaries",
                    encoded.truncation_report(max_length, max_target_length))
    return encoded


def truncate(ids: list[int], limit: int, special_ids: set[int]) -> list[int]:
    """``ids`` cut to ``limit`` tokens; a closing special token (EOS/SEP) stays the last token."""
    if len(ids) <= limit:
        return list(ids)
    if ids[-1] in special_ids:
        return list(ids[: limit - 1]) + [ids[-1]]
    return list(ids[:limit])


# ==================================================================================================
# Batching
# ==================================================================================================

class Seq2SeqCollator:
    """Pads sources with the pad id (mask 0) and labels with -100, each to its longest in the batch.

    The model builds ``decoder_input_ids`` itself by shifting the labels right (BART, T5 and
    ``EncoderDecoderModel`` all do), so the batch holds only ``input_ids``, ``attention_mask``,
    ``labels`` and ``index``; pass :func:`model_inputs` of it to the model.
    """

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None):
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        sources = [item["input_ids"] for item in items]
        labels = [item["labels"] for item in items]
        return {"input_ids": self._pad(sources, self.pad_token_id),
                "attention_mask": self._pad([[1] * len(s) for s in sources], 0),
                "labels": self._pad(labels, LABEL_PAD_ID),
                "index": torch.tensor([item["index"] for item in items], dtype=torch.long)}

    def _pad(self, rows: list[list[int]], value: int) -> torch.Tensor:
        width = max(len(row) for row in rows)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        return pad_rows(rows, value, width)


def pad_rows(rows: Sequence[Sequence[int]], value: int, width: int | None = None) -> torch.Tensor:
    """Rows right-padded with ``value`` to ``width`` (default: the longest row), as a long tensor."""
    width = max(len(row) for row in rows) if width is None else width
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.as_tensor(list(row), dtype=torch.long)
    return out


MODEL_INPUT_KEYS = ("input_ids", "attention_mask", "labels")


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The keys of a collated batch the model's ``forward`` takes (``index`` is bookkeeping)."""
    return {key: batch[key] for key in MODEL_INPUT_KEYS if key in batch}


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices in batches of similar length, longest first (generation pads least this way, and an
    out-of-memory error shows on the first batch). Every index appears once."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i: i + batch_size] for i in range(0, len(order), batch_size)]
