"""Labels as written in a file mapped to class ids or scores, and the seeded, stratified subsets
(``train_limit``, ``eval_limit``, the validation share held out of train)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from ...core.errors import DataError
from .records import Examples, RawTable
from .specs import TaskSpec


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
