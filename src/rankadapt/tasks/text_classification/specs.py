"""What each supported task is: its labels, its metrics, whether it classifies sentence pairs.

Label order matters: class ``i`` of the model is ``label_names[i]`` and exported adapters carry
these names. The names are those of the Hugging Face ``glue``/``imdb`` datasets, so hub data and
the GLUE TSVs map to the same ids; MNLI keeps the order of GLUE's own processor
(contradiction, entailment, neutral), which is what published MNLI checkpoints use.

Metrics follow the GLUE literature: accuracy (and F1 of class 1 for MRPC/QQP), Matthews correlation
for CoLA, Pearson/Spearman correlation for STS-B. The first metric listed is not necessarily the
main one; ``main_metric`` picks the model.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...core.errors import DataError

CUSTOM = "custom"


@dataclass(frozen=True)
class TaskSpec:
    """A task's label vocabulary and evaluation protocol (independent of where its data lives)."""

    name: str
    label_names: tuple[str, ...] | None
    """Class ``i`` is ``label_names[i]``; ``None`` for regression (STS-B)."""
    metrics: tuple[str, ...]
    main_metric: str
    is_pair: bool

    @property
    def is_regression(self) -> bool:
        return self.label_names is None

    @property
    def num_labels(self) -> int:
        """Output width of the classifier head: one score for regression."""
        return 1 if self.label_names is None else len(self.label_names)


def _classification(name: str, labels: tuple[str, ...], *, pair: bool, metrics: tuple[str, ...] = ("accuracy",),
                    main: str = "accuracy") -> TaskSpec:
    return TaskSpec(name=name, label_names=labels, metrics=metrics, main_metric=main, is_pair=pair)


TASKS: dict[str, TaskSpec] = {
    "imdb": _classification("imdb", ("negative", "positive"), pair=False),
    "cola": _classification("cola", ("unacceptable", "acceptable"), pair=False,
                            metrics=("matthews_correlation", "accuracy"), main="matthews_correlation"),
    "sst2": _classification("sst2", ("negative", "positive"), pair=False),
    "mrpc": _classification("mrpc", ("not_equivalent", "equivalent"), pair=True, metrics=("accuracy", "f1")),
    "qqp": _classification("qqp", ("not_duplicate", "duplicate"), pair=True, metrics=("accuracy", "f1")),
    "stsb": TaskSpec(name="stsb", label_names=None, metrics=("pearson", "spearman"), main_metric="pearson",
                     is_pair=True),
    "mnli": _classification("mnli", ("contradiction", "entailment", "neutral"), pair=True),
    "qnli": _classification("qnli", ("entailment", "not_entailment"), pair=True),
    "rte": _classification("rte", ("entailment", "not_entailment"), pair=True),
    "wnli": _classification("wnli", ("not_entailment", "entailment"), pair=True),
}

GLUE_TASKS = tuple(name for name in TASKS if name != "imdb")


def known_task_names() -> list[str]:
    return [*TASKS, CUSTOM]


def get_task(name: str) -> TaskSpec:
    """The built-in task called ``name``.

    ``custom`` has no fixed labels: its spec comes from the files (see :func:`custom_task`), so asking
    for it here is an error that says so, rather than a spec with made-up labels.
    """
    key = name.strip().lower()
    if key in TASKS:
        return TASKS[key]
    if key == CUSTOM:
        raise DataError("data.task=custom has no fixed label set: its labels come from data.label_names or the "
                        "train file, so load it with load_task_data (or pass the adapter's label names)")
    raise DataError(f"unknown data.task {name!r}; choose one of {', '.join(known_task_names())}")


def custom_task(label_names: tuple[str, ...] | list[str], is_pair: bool) -> TaskSpec:
    """Spec of a user's classification files: accuracy, plus F1 of class 1 when there are two classes."""
    names = tuple(str(n) for n in label_names)
    if len(names) < 2:
        raise DataError(f"data.task=custom needs at least two classes, got {list(names)}; "
                        "check data.label_column or list them in data.label_names")
    if len(set(names)) != len(names):
        raise DataError(f"data.label_names has duplicates: {list(names)}; list each class once")
    metrics = ("accuracy", "f1") if len(names) == 2 else ("accuracy",)
    return TaskSpec(name=CUSTOM, label_names=names, metrics=metrics, main_metric="accuracy", is_pair=is_pair)
