"""Reading the user's and the distributions' files: CSV, TSV (GLUE's, without quoting) and JSON
Lines, columns found by header name, malformed rows counted and refused past a small share."""

from __future__ import annotations

import csv
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ...core.errors import DataError
from .records import RawTable

log = logging.getLogger(__name__)


# Python's default CSV field limit (128 KiB) rejects long documents (reviews, articles) in user files.
_FIELD_SIZE_LIMIT = min(sys.maxsize, 2**31 - 1)


SUPPORTED_EXTENSIONS = (".csv", ".tsv", ".jsonl", ".json")


# A file with more malformed rows than this share is in another format, not merely untidy.
MAX_MALFORMED_SHARE = 0.01


def read_table(path: str | os.PathLike, text_column: str | Sequence[str],
               text_pair_column: str | Sequence[str] | None = None, label_column: str | Sequence[str] = "label",
               *, fieldnames: Sequence[str] | None = None) -> RawTable:
    """The text, text-pair and label columns of a CSV, TSV or JSONL file (by extension).

    Each column argument is a name or a sequence of candidate names (the first present is used).
    ``fieldnames`` names the columns of a header-less TSV/CSV; it is used only when the first row does
    not itself name the wanted columns. Rows with the wrong number of fields are skipped with a
    warning, unless they are more than 1% of the file (then the format is wrong and this raises).
    """
    path = Path(path)
    if not path.is_file():
        kind = "a directory, not a file" if path.is_dir() else "missing"
        raise DataError(f"data file {path} is {kind}; check the path (data.train_file, data.eval_file or data.dir)")
    suffix = path.suffix.lower()
    wanted = (_names(text_column), _names(text_pair_column) if text_pair_column else None, _names(label_column))
    try:
        if suffix in (".csv", ".tsv"):
            table = _read_delimited(path, suffix, wanted, tuple(fieldnames) if fieldnames else None)
        elif suffix in (".jsonl", ".json"):
            table = _read_json(path, wanted)
        else:
            raise DataError(f"cannot read {path}: unknown extension {suffix or '(none)'!r}; "
                            f"use one of {', '.join(SUPPORTED_EXTENSIONS)}")
    except (UnicodeDecodeError, csv.Error, OSError) as err:
        raise DataError(f"cannot read {path}: {err}; save it as UTF-8 "
                        "CSV (quoted), TSV (unquoted) or JSON lines") from None
    if not len(table):
        raise DataError(f"{path} has no data rows; fill it or point to another file")
    return table


def _names(column: str | Sequence[str]) -> tuple[str, ...]:
    return (column,) if isinstance(column, str) else tuple(column)


def _resolve_columns(found: Sequence[str], wanted) -> list[str | None] | None:
    """The column name chosen for each wanted role, or None when some role has no candidate present."""
    chosen = []
    for role in wanted:
        if role is None:
            chosen.append(None)
            continue
        hit = next((name for name in role if name in found), None)
        if hit is None:
            return None
        chosen.append(hit)
    return chosen


def _missing_columns(path: Path, found: Sequence[str], wanted) -> DataError:
    roles = ("text", "text pair", "label")
    options = {"text": "data.text_column", "text pair": "data.text_pair_column", "label": "data.label_column"}
    missing = [f"{role} ({' or '.join(repr(n) for n in names)}; set {options[role]})"
               for role, names in zip(roles, wanted) if names is not None and not any(n in found for n in names)]
    shown = ", ".join(repr(c) for c in found[:20]) + (" ..." if len(found) > 20 else "")
    return DataError(f"{path} lacks the expected column(s) {'; '.join(missing)}; found columns: {shown}")


def _read_delimited(path: Path, suffix: str, wanted, fieldnames: tuple[str, ...] | None) -> RawTable:
    # GLUE TSVs are not quoted: a quote mark is text. utf-8-sig drops MRPC's byte-order mark.
    options = dict(delimiter="\t", quoting=csv.QUOTE_NONE) if suffix == ".tsv" else dict(delimiter=",")
    csv.field_size_limit(_FIELD_SIZE_LIMIT)
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, **options)
        first = next(reader, None)
        if first is None:
            raise DataError(f"{path} is empty; fill it or point to another file")
        header = [h.strip() for h in first]
        chosen = _resolve_columns(header, wanted)
        if chosen is not None:
            _refuse_duplicate_columns(path, header)
            return _collect(path, reader, header, chosen, start_line=2)
        if fieldnames and len(first) == len(fieldnames):
            chosen = _resolve_columns(fieldnames, wanted)
            if chosen is not None:  # a header-less file: the first row is data
                return _collect(path, _prepend(first, reader), list(fieldnames), chosen, start_line=1)
        raise _missing_columns(path, header, wanted)


def _refuse_duplicate_columns(path: Path, header: list[str]) -> None:
    """Two columns of one name: which one is meant cannot be known, so neither is guessed."""
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise DataError(f"{path} has several columns named {', '.join(repr(d) for d in duplicates)}; rename them so "
                        "that every column name is unique")


def _prepend(first: list[str], rest: Iterator[list[str]]) -> Iterator[list[str]]:
    yield first
    yield from rest


def _collect(path: Path, rows: Iterator[list[str]], header: list[str], chosen, start_line: int) -> RawTable:
    index = [None if name is None else header.index(name) for name in chosen]
    text, pair, labels = [], [] if index[1] is not None else None, []
    malformed, first_bad, total = 0, None, 0
    for line, row in enumerate(rows, start=start_line):
        if not row:
            continue
        total += 1
        if len(row) != len(header):
            malformed += 1
            first_bad = first_bad or line
            continue
        text.append(row[index[0]])
        if pair is not None:
            pair.append(row[index[1]])
        labels.append(row[index[2]].strip())
    _check_malformed(path, malformed, total, first_bad, len(header))
    return RawTable(str(path), text, pair, labels)


def _check_malformed(path: Path, malformed: int, total: int, first_bad: int | None, width: int) -> None:
    if not malformed:
        return
    message = (f"{path}: {malformed} of {total} rows do not have {width} fields (first at line {first_bad})")
    if malformed > MAX_MALFORMED_SHARE * total:
        raise DataError(f"{message}; the file is not in the expected format: CSV must be comma-separated and "
                        "quoted, TSV tab-separated and unquoted (as GLUE's files)")
    log.warning("%s; skipped them", message)


def json_records(path: Path) -> list[tuple[int, Any]]:
    """(record number, decoded value) of a JSON-lines file, or of a .json file holding one list
    (numbers from 1: the line of a JSON-lines file, the position in the list)."""
    content = path.read_text(encoding="utf-8-sig")
    try:
        if path.suffix.lower() == ".json" and content.lstrip().startswith("["):
            return list(enumerate(json.loads(content), start=1))
        return [(n, json.loads(line)) for n, line in enumerate(content.splitlines(), start=1) if line.strip()]
    except json.JSONDecodeError as err:
        raise DataError(f"cannot read {path}: invalid JSON ({err}); write one JSON object per line") from None


def _read_json(path: Path, wanted) -> RawTable:
    """JSON lines (one object per line), or a .json file holding one list of objects."""
    records = json_records(path)
    if not records:
        raise DataError(f"{path} has no data rows; fill it or point to another file")
    if not all(isinstance(obj, dict) for _, obj in records):
        raise DataError(f"{path}: every line must be a JSON object like {{\"text\": ..., \"label\": ...}}")
    found = list(records[0][1])
    chosen = _resolve_columns(found, wanted)
    if chosen is None:
        raise _missing_columns(path, found, wanted)
    text, pair, labels = [], [] if chosen[1] else None, []
    for line, obj in records:
        missing = [name for name in chosen if name is not None and name not in obj]
        if missing or obj[chosen[0]] is None or (pair is not None and obj[chosen[1]] is None):
            name = missing[0] if missing else chosen[0]
            raise DataError(f"{path}, record {line}: no value for column {name!r}; every record needs it")
        text.append(_text_value(path, line, chosen[0], obj[chosen[0]]))
        if pair is not None:
            pair.append(_text_value(path, line, chosen[1], obj[chosen[1]]))
        labels.append(obj[chosen[2]])
    return RawTable(str(path), text, pair, labels)


def _text_value(path: Path, line: int, column: str, value: Any) -> str:
    """A text field must be text (a number is taken as its digits); an object or list is refused,
    since its string form (``{'a': 1}``) is not text the model should be trained on."""
    if isinstance(value, (dict, list)):
        raise DataError(f"{path}, record {line}: column {column!r} holds a JSON {type(value).__name__}, not text; "
                        "write the text itself as a string")
    return str(value)
