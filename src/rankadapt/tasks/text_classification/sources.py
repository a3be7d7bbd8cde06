"""Where a built-in task's data is: the layouts of the original distributions under the local data root
(``data.dir`` or $RANKADAPT_DATA_DIR), or the Hugging Face hub."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ...core.config import DATA_DIR_ENV, DataConfig
from ...core.errors import DataError
from ..hub import hub_label, load_hub_dataset, split_hub_name
from .files import _missing_columns, _resolve_columns, read_table
from .records import RawTable


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
    return split_hub_name(cfg.hub_dataset, layout.hub)


def _no_local_data(task: str, layout: _Layout, reason: str) -> DataError:
    where = f"<root>/glue/{layout.subdir}/" if layout.glue else "<root>/imdb/"
    return DataError(f"no local data for task {task}: neither data.dir nor ${DATA_DIR_ENV} is set, and {reason}. "
                     f"Set data.dir (or {DATA_DIR_ENV}) to a local copy laid out as {where}"
                     f"{{{', '.join(layout.files.values())}}} (e.g. ../shared/data), "
                     "or install `datasets` and go online")


def _read_hub(cfg: DataConfig, task: str, layout: _Layout, columns: _Columns, splits: list[str]
              ) -> tuple[dict[str, RawTable], str]:
    hub_id, config = _hub_name(cfg, layout)
    name = hub_label(hub_id, config)
    dataset = load_hub_dataset(hub_id, config, lambda reason: _no_local_data(task, layout, reason))
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


def _read_file(path: Path, columns: _Columns) -> RawTable:
    return read_table(path, columns.text, columns.pair, columns.label, fieldnames=columns.fieldnames)
