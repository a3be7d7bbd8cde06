"""What a split of a text task is once read: its texts, second texts and labels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .specs import TaskSpec


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

    @property
    def spec(self) -> TaskSpec:
        """The task spec under the name every task family's data uses (rankadapt.tasks.base.TaskData)."""
        return self.task


@dataclass
class RawTable:
    """A file's text columns and its labels as written (strings, numbers), before mapping to ids."""

    where: str
    text: list[str]
    text_pair: list[str] | None
    labels: list[Any]

    def __len__(self) -> int:
        return len(self.text)
