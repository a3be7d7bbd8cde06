"""Reading a task's examples from local files (the layouts of the original distributions), the user's
own CSV/TSV/JSONL files, or the Hugging Face hub.

Where data comes from, in order:

1. ``data.train_file`` / ``data.eval_file`` replace the task's train / validation split;
2. the local data root: ``data.dir``, else ``$RANKADAPT_DATA_DIR``. Layouts (``<root>`` may also be
   the ``glue`` directory itself, or for IMDB the ``imdb`` directory)::

       <root>/imdb/train.csv                 Kaggle layout: review,sentiment (positive/negative)
       <root>/glue/CoLA/{train,dev}.tsv      no header: source, label, mark, sentence
       <root>/glue/SST-2/{train,dev}.tsv     sentence, label
       <root>/glue/MRPC/{train,dev}.tsv      Quality, #1 ID, #2 ID, #1 String, #2 String (UTF-8 BOM)
       <root>/glue/QQP/{train,dev}.tsv       id, qid1, qid2, question1, question2, is_duplicate
       <root>/glue/STS-B/{train,dev}.tsv     ..., sentence1, sentence2, score
       <root>/glue/MNLI/train.tsv, dev_matched.tsv, dev_mismatched.tsv   ..., sentence1, sentence2, ..., gold_label
       <root>/glue/QNLI/{train,dev}.tsv      index, question, sentence, label
       <root>/glue/{RTE,WNLI}/{train,dev}.tsv  index, sentence1, sentence2, label

3. the hub (``imdb``, ``glue/<task>`` or ``data.hub_dataset``), only if ``datasets`` is installed.

Columns are found by header name, so GLUE TSVs, hub exports and hand-made CSVs with the hub's
column names (``sentence1``, ``premise``, ``text``, ``label`` ...) all work; ``data.text_column``,
``data.text_pair_column`` and ``data.label_column`` override the names. TSVs are read without
quoting (``csv.QUOTE_NONE``), as GLUE's own processors do: GLUE text contains bare quote marks.

IMDB has no validation split (and its hub ``test`` split is the benchmark's test set), so a
stratified ``data.validation_size`` share of train is held out with ``data.split_seed``, whichever
source the data comes from. IMDB reviews keep their text except that the ``<br />`` line breaks
of the original HTML become spaces (they are markup, not words a tokenizer should see).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ...core.config import DATA_DIR_ENV, DataConfig
from ...core.errors import DataError
from .specs import CUSTOM, TaskSpec, custom_task, get_task

log = logging.getLogger(__name__)

# Python's default CSV field limit (128 KiB) rejects long documents (reviews, articles) in user files.
_FIELD_SIZE_LIMIT = min(sys.maxsize, 2**31 - 1)

SUPPORTED_EXTENSIONS = (".csv", ".tsv", ".jsonl", ".json")
# A file with more malformed rows than this share is in another format, not merely untidy.
MAX_MALFORMED_SHARE = 0.01


# ==================================================================================================
# Containers
# ==================================================================================================

@dataclass
class Examples:
    """One split: texts (and second texts for pair tasks) with class ids or regression scores."""

    text: list[str]
    text_pair: list[str] | None
    labels: list[int] | list[float]

    def __len__(self) -> int:
        return len(self.text)

    def subset(self, indices: Sequence[int] | np.ndarray) -> Examples:
        idx = [int(i) for i in indices]
        return Examples(text=[self.text[i] for i in idx],
                        text_pair=None if self.text_pair is None else [self.text_pair[i] for i in idx],
                        labels=[self.labels[i] for i in idx])


@dataclass
class TaskData:
    task: TaskSpec
    train: Examples
    eval_splits: dict[str, Examples]
    """Usually ``{"validation": ...}``; MNLI has ``validation_matched`` and ``validation_mismatched``."""
    source: str
    """Where the examples came from, for logs and results (``local: ...``, ``hub: ...``, ``file: ...``)."""


@dataclass
class RawTable:
    """A file's text columns and its labels as written (strings, numbers), before mapping to ids."""

    where: str
    text: list[str]
    text_pair: list[str] | None
    labels: list[Any]

    def __len__(self) -> int:
        return len(self.text)


# ==================================================================================================
# Task layouts
# ==================================================================================================

@dataclass(frozen=True)
class _Layout:
    """Where a built-in task's files are and which columns hold what.

    Column entries are candidate names, tried in order: the original file's header first, then the
    hub's name, so either kind of file can be read without configuration.
    """

    subdir: str
    files: dict[str, str]
    text: tuple[str, ...]
    pair: tuple[str, ...] | None
    label: tuple[str, ...]
    hub: tuple[str, str | None]
    fieldnames: tuple[str, ...] | None = None
    """Column names of a header-less file (CoLA)."""
    clean_html: bool = False

    @property
    def glue(self) -> bool:
        return self.hub[0] == "glue"

    @property
    def eval_names(self) -> list[str]:
        return [split for split in self.files if split != "train"]


_TRAIN_DEV = {"train": "train.tsv", "validation": "dev.tsv"}
_SENT_PAIR = dict(text=("sentence1",), pair=("sentence2",), label=("label",))

LAYOUTS: dict[str, _Layout] = {
    "imdb": _Layout("imdb", {"train": "train.csv"}, text=("review", "text"), pair=None,
                    label=("sentiment", "label"), hub=("imdb", None), clean_html=True),
    "cola": _Layout("CoLA", _TRAIN_DEV, text=("sentence",), pair=None, label=("label",), hub=("glue", "cola"),
                    fieldnames=("source", "label", "mark", "sentence")),
    "sst2": _Layout("SST-2", _TRAIN_DEV, text=("sentence",), pair=None, label=("label",), hub=("glue", "sst2")),
    "mrpc": _Layout("MRPC", _TRAIN_DEV, text=("#1 String", "sentence1"), pair=("#2 String", "sentence2"),
                    label=("Quality", "label"), hub=("glue", "mrpc")),
    "qqp": _Layout("QQP", _TRAIN_DEV, text=("question1",), pair=("question2",), label=("is_duplicate", "label"),
                   hub=("glue", "qqp")),
    "stsb": _Layout("STS-B", _TRAIN_DEV, text=("sentence1",), pair=("sentence2",), label=("score", "label"),
                    hub=("glue", "stsb")),
    "mnli": _Layout("MNLI", {"train": "train.tsv", "validation_matched": "dev_matched.tsv",
                             "validation_mismatched": "dev_mismatched.tsv"},
                    text=("sentence1", "premise"), pair=("sentence2", "hypothesis"), label=("gold_label", "label"),
                    hub=("glue", "mnli")),
    "qnli": _Layout("QNLI", _TRAIN_DEV, text=("question",), pair=("sentence",), label=("label",), hub=("glue", "qnli")),
    "rte": _Layout("RTE", _TRAIN_DEV, **_SENT_PAIR, hub=("glue", "rte")),
    "wnli": _Layout("WNLI", _TRAIN_DEV, **_SENT_PAIR, hub=("glue", "wnli")),
}


@dataclass(frozen=True)
class _Columns:
    text: tuple[str, ...]
    pair: tuple[str, ...] | None
    label: tuple[str, ...]
    fieldnames: tuple[str, ...] | None = None


# ==================================================================================================
# Reading files
# ==================================================================================================

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


def _read_json(path: Path, wanted) -> RawTable:
    """JSON lines (one object per line), or a .json file holding one list of objects."""
    content = path.read_text(encoding="utf-8-sig")
    try:
        if path.suffix.lower() == ".json" and content.lstrip().startswith("["):
            records = list(enumerate(json.loads(content), start=1))
        else:
            records = [(n, json.loads(line)) for n, line in enumerate(content.splitlines(), start=1) if line.strip()]
    except json.JSONDecodeError as err:
        raise DataError(f"cannot read {path}: invalid JSON ({err}); write one JSON object per line") from None
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


# ==================================================================================================
# Labels
# ==================================================================================================

def _label_key(value: Any) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _as_id(key: str, names: tuple[str, ...]) -> int | None:
    """A label written as its name, or as its class id (``0``/``1`` in GLUE's binary files)."""
    if key in names:
        return names.index(key)
    try:
        number = float(key)
    except ValueError:
        return None
    if number.is_integer() and 0 <= number < len(names):
        return int(number)
    return None


def class_ids(table: RawTable, names: tuple[str, ...]) -> list[int]:
    """Map each label to its class id; raise listing the values outside the label set."""
    ids = [_as_id(_label_key(v), names) for v in table.labels]
    bad = [table.labels[i] for i, v in enumerate(ids) if v is None]
    if bad:
        distinct = sorted({_label_key(v) for v in bad})
        shown = ", ".join(repr(v) for v in distinct[:5]) + (" ..." if len(distinct) > 5 else "")
        raise DataError(f"{table.where}: {len(bad)} label(s) outside the task's label set: {shown}; allowed: "
                        f"{', '.join(names)} (or their ids 0..{len(names) - 1}); fix the file, data.label_column "
                        "or data.label_names")
    return ids


def scores(table: RawTable) -> list[float]:
    """Regression targets as floats; raise listing the values that are not finite numbers."""
    values, bad = [], []
    for raw in table.labels:
        try:
            value = float(raw)
        except (TypeError, ValueError):
            value = float("nan")
        if not np.isfinite(value):
            bad.append(raw)
        values.append(value)
    if bad:
        shown = ", ".join(repr(v) for v in bad[:5])
        raise DataError(f"{table.where}: {len(bad)} score(s) are not finite numbers: {shown}; "
                        "this task is a regression: the label column must hold numbers (check data.label_column)")
    return values


def infer_label_names(table: RawTable) -> tuple[str, ...]:
    """Distinct labels of a custom train file, sorted (numerically when they are all integers)."""
    keys = {_label_key(v) for v in table.labels}
    if "" in keys:
        raise DataError(f"{table.where}: some rows have an empty label; fill them or drop those rows")
    if all(re.fullmatch(r"-?\d+", k) for k in keys):
        return tuple(sorted(keys, key=int))
    return tuple(sorted(keys))


def to_examples(table: RawTable, task: TaskSpec, clean_html: bool = False) -> Examples:
    labels = scores(table) if task.is_regression else class_ids(table, task.label_names)
    text, pair = table.text, table.text_pair
    if clean_html:
        text = [_strip_breaks(t) for t in text]
    return Examples(text=list(text), text_pair=None if pair is None else list(pair), labels=labels)


_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)


def _strip_breaks(text: str) -> str:
    return _BREAK.sub(" ", text)


# ==================================================================================================
# Seeded, stratified subsets
# ==================================================================================================

def _allocate(counts: list[int], size: int) -> list[int]:
    """Per-class sample sizes proportional to the class counts, summing to ``size`` exactly
    (largest remainder; ties go to the earlier class)."""
    total = sum(counts)
    base = [size * c // total for c in counts]
    remainders = [size * c % total for c in counts]
    order = sorted(range(len(counts)), key=lambda i: (-remainders[i], i))
    for i in order[: size - sum(base)]:
        base[i] += 1
    return base


def sample_indices(labels: Sequence[Any], size: int, seed: int, stratify: bool = True) -> np.ndarray:
    """``size`` indices (sorted) drawn with ``seed``; class proportions kept when ``stratify``.

    The result depends only on the labels, the size and the seed, so every run (whatever its
    training seed) sees the same subset.
    """
    n = len(labels)
    rng = np.random.default_rng(seed)
    if not stratify:
        return np.sort(rng.permutation(n)[:size])
    keys = np.asarray([str(v) for v in labels])
    classes = sorted(set(keys.tolist()))
    groups = [np.flatnonzero(keys == c) for c in classes]
    sizes = _allocate([len(g) for g in groups], size)
    chosen = [rng.permutation(group)[:k] for group, k in zip(groups, sizes)]
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=int)


def limit(examples: Examples, size: int | None, seed: int, task: TaskSpec) -> Examples:
    """A stratified (by class; random for regression) seeded subset of ``size`` examples."""
    if size is None or size >= len(examples):
        return examples
    return examples.subset(sample_indices(examples.labels, size, seed, stratify=not task.is_regression))


def carve_validation(examples: Examples, fraction: float, seed: int, task: TaskSpec, where: str
                     ) -> tuple[Examples, Examples]:
    """(train, validation): a stratified ``fraction`` of ``examples`` held out with ``seed``."""
    n = len(examples)
    n_val = round(fraction * n)
    if n_val == 0 or n_val == n:
        raise DataError(f"cannot hold out data.validation_size={fraction} of the {n} examples of {where} "
                        f"({n_val} would be validation); give data.eval_file or change data.validation_size")
    val_idx = sample_indices(examples.labels, n_val, seed, stratify=not task.is_regression)
    keep = np.ones(n, dtype=bool)
    keep[val_idx] = False
    return examples.subset(np.flatnonzero(keep)), examples.subset(val_idx)


# ==================================================================================================
# Locating data
# ==================================================================================================

def resolve_data_dir(cfg: DataConfig) -> Path | None:
    """The local data root: ``data.dir``, else ``$RANKADAPT_DATA_DIR``, else None (use the hub)."""
    if cfg.dir:
        return Path(cfg.dir).expanduser()
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env).expanduser() if env else None


def _root_origin(cfg: DataConfig) -> str:
    return f"data.dir={cfg.dir}" if cfg.dir else f"${DATA_DIR_ENV}={os.environ.get(DATA_DIR_ENV)}"


def _local_files(root: Path, layout: _Layout, splits: list[str], origin: str) -> dict[str, Path]:
    """Paths of the wanted splits' files under ``root``, trying the accepted layouts in turn."""
    if not root.is_dir():
        raise DataError(f"the data root {root} ({origin}) is not a directory; point it at the directory "
                        "holding glue/ and imdb/ (e.g. ../shared/data)")
    parent = root / "glue" if layout.glue else root / "imdb"
    candidates = [parent / layout.subdir, root / layout.subdir] if layout.glue else [parent, root]
    looked = []
    for directory in candidates:
        paths = {split: directory / layout.files[split] for split in splits}
        missing = [p for p in paths.values() if not p.is_file()]
        if not missing:
            return paths
        looked.append(str(missing[0]))
    example = f"<root>/glue/{layout.subdir}/" if layout.glue else "<root>/imdb/"
    raise DataError(f"no {layout.subdir} data under {root} ({origin}): looked for {' and '.join(looked)}; "
                    f"put the files at {example}{{{', '.join(layout.files[s] for s in splits)}}} or fix the path")


def _read_local(cfg: DataConfig, root: Path, layout: _Layout, columns: _Columns, splits: list[str]
                ) -> tuple[dict[str, RawTable], str]:
    paths = _local_files(root, layout, splits, _root_origin(cfg))
    tables = {split: read_table(path, columns.text, columns.pair, columns.label, fieldnames=columns.fieldnames)
              for split, path in paths.items()}
    return tables, f"local: {next(iter(paths.values())).parent}"


def _hub_name(cfg: DataConfig, layout: _Layout) -> tuple[str, str | None]:
    """``data.hub_dataset`` as ``id`` or ``id:config``; GLUE mirrors keep the task as their config."""
    if not cfg.hub_dataset:
        return layout.hub
    if ":" in cfg.hub_dataset:
        hub_id, config = cfg.hub_dataset.split(":", 1)
        return hub_id, config or None
    return cfg.hub_dataset, layout.hub[1]


def _no_local_data(task: str, layout: _Layout, reason: str) -> DataError:
    where = f"<root>/glue/{layout.subdir}/" if layout.glue else "<root>/imdb/"
    return DataError(f"no local data for task {task}: neither data.dir nor ${DATA_DIR_ENV} is set, and {reason}. "
                     f"Set data.dir (or {DATA_DIR_ENV}) to a local copy laid out as {where}"
                     f"{{{', '.join(layout.files.values())}}} (e.g. ../shared/data), "
                     "or install `datasets` and go online")


def _read_hub(cfg: DataConfig, task: str, layout: _Layout, columns: _Columns, splits: list[str]
              ) -> tuple[dict[str, RawTable], str]:
    hub_id, config = _hub_name(cfg, layout)
    name = f"{hub_id}/{config}" if config else hub_id
    try:
        import datasets
    except ImportError:
        raise _no_local_data(task, layout, f"the `datasets` package needed to fetch {name!r} from the "
                                           "Hugging Face hub is not installed") from None
    try:
        dataset = datasets.load_dataset(hub_id, config)
    except Exception as err:  # offline, unknown id, bad config: all mean "use local data instead"
        raise _no_local_data(task, layout, f"loading {name!r} from the hub failed ({type(err).__name__}: {err})"
                             ) from None
    tables = {}
    for split in splits:
        if split not in dataset:
            raise DataError(f"hub dataset {name!r} has no split {split!r} (it has {', '.join(dataset)}); "
                            "use data.hub_dataset with the standard splits, or local files")
        tables[split] = _hub_table(dataset[split], columns, f"hub: {name}[{split}]")
    return tables, f"hub: {name}"


def _hub_table(split, columns: _Columns, where: str) -> RawTable:
    """A hub split as a RawTable; class-label ints become their names so they map by name."""
    found = list(split.column_names)
    wanted = (columns.text, columns.pair, columns.label)
    chosen = _resolve_columns(found, wanted)
    if chosen is None:
        raise _missing_columns(Path(where), found, wanted)
    labels = list(split[chosen[2]])
    names = getattr(split.features.get(chosen[2]), "names", None)
    if names:
        labels = [names[v] if isinstance(v, int) and 0 <= v < len(names) else v for v in labels]
    pair = [str(t) for t in split[chosen[1]]] if chosen[1] else None
    return RawTable(where, [str(t) for t in split[chosen[0]]], pair, labels)


# ==================================================================================================
# Putting a task together
# ==================================================================================================

def load_task_data(cfg: DataConfig) -> TaskData:
    """The configured task's train and eval splits, subset by ``train_limit``/``eval_limit``."""
    if cfg.task.strip().lower() == CUSTOM:
        return _load_custom(cfg)
    task = get_task(cfg.task)
    layout = LAYOUTS[task.name]
    columns = _task_columns(cfg, task, layout)
    train_file = Path(cfg.train_file).expanduser() if cfg.train_file else None
    eval_file = Path(cfg.eval_file).expanduser() if cfg.eval_file else None

    wanted = ([] if train_file else ["train"]) + ([] if eval_file else layout.eval_names)
    builtin, builtin_source = _read_builtin(cfg, task.name, layout, columns, wanted) if wanted else ({}, "")
    train_table = _read_file(train_file, columns) if train_file else builtin["train"]
    train = to_examples(train_table, task, layout.clean_html)
    if eval_file:
        evals = {"validation": to_examples(_read_file(eval_file, columns), task, layout.clean_html)}
    else:
        evals = {split: to_examples(builtin[split], task, layout.clean_html) for split in layout.eval_names}
    source = _describe(train_file and f"file: {train_file}", eval_file and f"file: {eval_file}", builtin_source)
    return _finish(cfg, task, train, evals, source, where=train_table.where)


def _read_builtin(cfg: DataConfig, task: str, layout: _Layout, columns: _Columns, splits: list[str]
                  ) -> tuple[dict[str, RawTable], str]:
    root = resolve_data_dir(cfg)
    if root is not None:
        return _read_local(cfg, root, layout, columns, splits)
    return _read_hub(cfg, task, layout, columns, splits)


def _read_file(path: Path, columns: _Columns) -> RawTable:
    return read_table(path, columns.text, columns.pair, columns.label, fieldnames=columns.fieldnames)


def _task_columns(cfg: DataConfig, task: TaskSpec, layout: _Layout) -> _Columns:
    """The layout's candidate column names, or the configured ones where set."""
    if cfg.label_names:
        raise DataError(f"data.label_names only applies to data.task=custom; {task.name} has fixed labels "
                        f"({', '.join(task.label_names or ('a score',))}); remove it or use data.task=custom")
    if cfg.text_pair_column and not task.is_pair:
        raise DataError(f"data.text_pair_column is set but {task.name} classifies single texts; "
                        "remove it, or use data.task=custom for a pair task of your own")
    return _Columns(text=(cfg.text_column,) if cfg.text_column else layout.text,
                    pair=(cfg.text_pair_column,) if cfg.text_pair_column else layout.pair,
                    label=(cfg.label_column,) if cfg.label_column else layout.label,
                    fieldnames=layout.fieldnames)


def _describe(train: str | None, evaluation: str | None, builtin: str) -> str:
    train, evaluation = train or builtin, evaluation or builtin
    return train if train == evaluation else f"train: {train}; eval: {evaluation}"


def _load_custom(cfg: DataConfig) -> TaskData:
    if not cfg.train_file:
        raise DataError("data.task=custom needs data.train_file (CSV, TSV or JSONL with a text and a label column)")
    columns = _Columns(text=(cfg.text_column or "text",),
                       pair=(cfg.text_pair_column,) if cfg.text_pair_column else None,
                       label=(cfg.label_column or "label",))
    train_table = _read_file(Path(cfg.train_file).expanduser(), columns)
    names = tuple(cfg.label_names) if cfg.label_names else infer_label_names(train_table)
    task = custom_task(names, is_pair=columns.pair is not None)
    train = to_examples(train_table, task)
    evals = {}
    source = f"file: {train_table.where}"
    if cfg.eval_file:
        eval_table = _read_file(Path(cfg.eval_file).expanduser(), columns)
        evals["validation"] = to_examples(eval_table, task)
        source = _describe(source, f"file: {eval_table.where}", "")
    return _finish(cfg, task, train, evals, source, where=train_table.where)


def _finish(cfg: DataConfig, task: TaskSpec, train: Examples, evals: dict[str, Examples], source: str,
            where: str) -> TaskData:
    """Hold out a validation split when there is none, then apply the limits."""
    if not evals:
        train, evals["validation"] = carve_validation(train, cfg.validation_size, cfg.split_seed, task, where)
        source += f" (validation: {cfg.validation_size:g} of train held out, split_seed={cfg.split_seed})"
    train = limit(train, cfg.train_limit, cfg.split_seed, task)
    evals = {name: limit(split, cfg.eval_limit, cfg.split_seed, task) for name, split in evals.items()}
    for name, split in {"train": train, **evals}.items():
        if not len(split):
            raise DataError(f"the {name} split of {task.name} is empty ({source}); check the files and the limits")
    log.info("%s: %d train examples, eval %s (%s)", task.name, len(train),
             {name: len(split) for name, split in evals.items()}, source)
    return TaskData(task=task, train=train, eval_splits=evals, source=source)
