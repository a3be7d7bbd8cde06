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

import logging
from pathlib import Path

from ...core.config import DataConfig
from ...core.errors import DataError
from .labels import carve_validation, infer_label_names, limit, to_examples
from .records import Examples, RawTable, TaskData
from .sources import LAYOUTS, _Columns, _Layout, _read_file, _read_hub, _read_local, resolve_data_dir
from .specs import CUSTOM, TaskSpec, custom_task, get_task

log = logging.getLogger(__name__)


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
    # debug: the training run's own status line ("data: ...") says this; eval and predict have theirs
    log.debug("%s: %d train examples, eval %s (%s)", task.name, len(train),
             {name: len(split) for name, split in evals.items()}, source)
    return TaskData(task=task, train=train, eval_splits=evals, source=source)
