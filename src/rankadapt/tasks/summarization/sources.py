"""Where a summarization task's pairs come from: the user's files, the local data root, or the hub.

In order: ``data.train_file`` / ``data.eval_file``; for a task known by name (:data:`HUB_TASKS`),
``<root>/<task>/{train,validation}.jsonl`` under ``data.dir`` / ``$RANKADAPT_DATA_DIR``; then the hub
dataset of the task (or ``data.hub_dataset``), when online. Limits (``data.train_limit``,
``data.eval_limit``) are seeded subsets in file order, the same whether a split comes from a file or the hub.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...core.config import DATA_DIR_ENV
from ...core.errors import DataError
from ..hub import hub_label, load_hub_dataset, split_hub_name
from .data import PairColumns, SummaryPair, hub_pairs, read_pairs

log = logging.getLogger(__name__)

LOCAL_FILES = {"train": "train.jsonl", "validation": "validation.jsonl"}
"""The files of a hub task under the local data root (``<root>/<task>/``), by split."""
SPLITS = tuple(LOCAL_FILES)


DEFAULT_TARGET_COLUMN = "summary"
DEFAULT_SOURCE_COLUMN = "document"
DEFAULT_MAX_TARGET_LENGTH = 64
"""data.max_target_length when unset (AdaLoRA's XSum script)."""


@dataclass(frozen=True)
class HubTask:
    """A summarization dataset known by name: its hub id and config, and its source/target columns
    (the defaults of data.text_column / data.target_column, for its local files too)."""

    hub: tuple[str, str | None]
    source: str
    target: str


HUB_TASKS: dict[str, HubTask] = {
    "xsum": HubTask(("xsum", None), "document", "summary"),
    "cnn_dailymail": HubTask(("cnn_dailymail", "3.0.0"), "article", "highlights"),
    "samsum": HubTask(("samsum", None), "dialogue", "summary"),
}




def read_task_pairs(data, id_column: str | None) -> tuple[dict[str, list[SummaryPair]], str]:
    """``{"train": pairs, "validation": pairs}`` of the configured task and the ``source`` string."""
    task = HUB_TASKS.get(_task_name(data))
    columns = PairColumns(source=data.text_column or (task.source if task else DEFAULT_SOURCE_COLUMN),
                          target=data.target_column or (task.target if task else DEFAULT_TARGET_COLUMN),
                          id=id_column)
    files = _split_files(data)
    limits = {"train": data.train_limit, "validation": data.eval_limit}
    pairs = {split: _limit(read_pairs(path, columns), limits[split], data.split_seed) for split, path in files.items()}
    hub_source = ""
    wanted = [split for split in SPLITS if split not in files]
    if wanted:
        from_hub, hub_source = _read_hub(data, wanted, columns, limits)
        pairs.update(from_hub)
    source = f"file: {', '.join(str(files[s]) for s in SPLITS if s in files)}" if files else ""
    return pairs, "; ".join(part for part in (source, hub_source) if part)


def _task_name(data) -> str:
    return data.task.strip().lower()


def _split_files(data) -> dict[str, Path]:
    """The splits local files give: data.train_file / data.eval_file, else (a task of HUB_TASKS)
    ``<root>/<task>/{train,validation}.jsonl`` or those files in ``<root>`` when the train file is there."""
    files = {split: Path(path).expanduser()
             for split, path in (("train", data.train_file), ("validation", data.eval_file)) if path}
    root = data.dir or os.environ.get(DATA_DIR_ENV)
    task = _task_name(data)
    if task in HUB_TASKS and root and len(files) < len(SPLITS):
        base = Path(root).expanduser()
        for directory in (base / task, base):
            if (directory / LOCAL_FILES["train"]).is_file():
                files = {split: directory / name for split, name in LOCAL_FILES.items()} | files
                break
        else:
            log.info("no %s under %s: reading data.task=%s from the hub", f"{task}/{LOCAL_FILES['train']}", base, task)
    return files


def _no_local_data(data, reason: str) -> DataError:
    task = _task_name(data)
    local = (f", or put {' and '.join(LOCAL_FILES.values())} under <root>/{task}/ with data.dir or ${DATA_DIR_ENV} "
             "pointing at <root>") if task in HUB_TASKS else ""
    return DataError(f"no local data for data.task={data.task}: {reason}. Pass local files with data.train_file "
                     "and data.eval_file (JSONL/CSV/TSV with source and target columns)"
                     f"{local}, or install `datasets` and go online")


def _read_hub(data, splits: list[str], columns: PairColumns, limits: dict[str, int | None]
              ) -> tuple[dict[str, list[SummaryPair]], str]:
    """``splits`` of the task's hub dataset (or data.hub_dataset) as pairs, and the ``source`` string."""
    task = HUB_TASKS.get(_task_name(data))
    if task is None and not data.hub_dataset:
        raise DataError(f"data.task={data.task} needs data.train_file and data.eval_file "
                        "(JSONL/CSV/TSV files with source and target columns), or data.hub_dataset=<id>[:config] "
                        f"to read a hub dataset when online; data.task={' / '.join(HUB_TASKS)} read their own")
    hub_id, config = split_hub_name(data.hub_dataset, task.hub if task else (data.hub_dataset, None))
    name = hub_label(hub_id, config)
    dataset = load_hub_dataset(hub_id, config, lambda reason: _no_local_data(data, reason))
    pairs = {}
    for split in splits:
        if split not in dataset:
            key = "data.train_file" if split == "train" else "data.eval_file"
            raise DataError(f"hub dataset {name!r} has no split {split!r} (it has {', '.join(dataset)}); "
                            f"pass {key}, or a data.hub_dataset with train and validation splits")
        rows = dataset[split]
        keep = _kept(len(rows), limits[split], data.split_seed)
        pairs[split] = hub_pairs(rows if keep is None else rows.select(keep), columns, f"hub: {name}[{split}]")
    return pairs, f"hub: {name} ({', '.join(splits)})"


def _limit(pairs: list[SummaryPair], limit: int | None, seed: int) -> list[SummaryPair]:
    """A seeded subset of ``limit`` examples, in file order (every run sees the same ones)."""
    keep = _kept(len(pairs), limit, seed)
    return pairs if keep is None else [pairs[i] for i in keep]


def _kept(size: int, limit: int | None, seed: int) -> list[int] | None:
    """The positions :func:`_limit` keeps of ``size`` examples, sorted; None: all of them. A hub split
    is subset by these before its rows are read, so it gives the pairs its exported file would."""
    if limit is None or limit >= size:
        return None
    return np.sort(np.random.default_rng(seed).choice(size, size=limit, replace=False)).tolist()
