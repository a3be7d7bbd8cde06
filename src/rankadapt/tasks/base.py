"""The task-family plug-in interface: what depends on what the examples are.

A *task family* (text classification, summarization, image classification) says how examples are
read, encoded and batched, which model class and head are loaded, the training loss, what
evaluation computes, what ``rankadapt predict`` prints and what an export carries besides the
adapter. The training loop (``rankadapt.recipes.finetune``), checkpoints, methods and the adapter
export never ask which family runs: they call these methods.

Adding a family is one package under ``rankadapt/tasks/`` with a :class:`TaskFamily` subclass and
one :func:`register_family` line in ``rankadapt/tasks/__init__.py`` (CONTRIBUTING.md).

The run config names a task (``data.task``); :func:`family_for_task` finds the family that owns it.
A family's own keys (``Settings``) form the run config's ``task_options:`` section.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
from pydantic import BaseModel

from ..core.config import RunConfig, register_task_options
from ..core.errors import ConfigError, DataError
from ..core.targets import head_module_names

Batch = dict[str, torch.Tensor]
Objective = Callable[[torch.nn.Module, Batch], torch.Tensor]


class TaskSpec(Protocol):
    """The facts of one task that do not depend on where its data lives."""

    name: str
    """The ``data.task`` value (``sst2``, ``xsum``, ``imagefolder`` ...)."""
    metrics: tuple[str, ...]
    main_metric: str
    """Picks the best model unless ``train.metric_for_best`` is set; greater is better for every
    metric except those whose name ends in ``loss``."""


class TaskData(Protocol):
    """A task's examples as read: ``spec``, the training split, the eval splits by name, and where
    they came from (``local: ...``, ``file: ...``, ``hub: ...``) for logs and results."""

    spec: Any
    train: Sequence[Any]
    eval_splits: dict[str, Sequence[Any]]
    source: str


class TaskFamily(ABC):
    """One family of tasks; see the module docstring. Methods without a default must be written."""

    name: ClassVar[str]
    """``text-classification``, ``summarization``, ``image-classification``."""
    tasks: ClassVar[tuple[str, ...]]
    """The ``data.task`` values this family owns."""
    peft_task_type: ClassVar[str]
    """PEFT's ``task_type`` written to ``adapter_config.json`` (``SEQ_CLS``, ``SEQ_2_SEQ_LM``)."""
    Settings: ClassVar[type[BaseModel] | None] = None
    """The family's own keys (the ``task_options:`` section), or None when it has none."""
    uses_augmentation: ClassVar[bool] = False
    """Whether train.aug_type (Cutoff) and train.reg_loss_wgt (R-drop) apply to this family."""

    # ---- reading ---------------------------------------------------------------------------------
    @abstractmethod
    def load_data(self, config: RunConfig) -> TaskData:
        """Train and eval splits as ``config.data`` and ``config.task_options`` say; a
        :class:`~rankadapt.core.errors.DataError` naming what to change when they cannot be read."""

    def check_config(self, config: RunConfig, spec: Any) -> None:
        """Refuse settings that do not apply to this family or task (ConfigError, exit 2)."""
        if not self.uses_augmentation and (config.train.aug_type or config.train.reg_loss_wgt):
            key = "train.aug_type" if config.train.aug_type else "train.reg_loss_wgt"
            raise ConfigError(f"{key} (Cutoff / R-drop consistency training) is for text classification; "
                              f"data.task={config.data.task} is {self.name}: remove {key}")

    # ---- model ----------------------------------------------------------------------------------
    @abstractmethod
    def load_processor(self, model_name: str) -> Any:
        """The checkpoint's tokenizer or image processor (offline first)."""

    def prepare_processor(self, processor: Any, config: RunConfig) -> Any:
        """The processor as this run uses it (e.g. at ``task_options.image_size``); saved with exports."""
        return processor

    def fit_config(self, config: RunConfig) -> RunConfig:
        """``config`` adjusted to the model before encoding (e.g. data.max_length within its positions)."""
        return config

    @abstractmethod
    def load_model(self, config: RunConfig, spec: Any, processor: Any) -> torch.nn.Module:
        """The transformers model with this family's head for ``spec`` (e.g. ``num_labels``)."""

    def head_modules(self, model: torch.nn.Module) -> list[str]:
        """Modules trained in full and saved with the adapter (PEFT's modules_to_save) unless
        ``method.modules_to_save`` says otherwise. Default: the classification head."""
        return head_module_names(model)

    def role_patterns(self, model: torch.nn.Module) -> dict[str, str] | None:
        """Regular expressions for ``method.lora_module`` names on ``model``, when this family's
        models are not in ``rankadapt.core.targets.MODULE_MAPS``; None: use that table."""
        return None

    # ---- encoding and batching ------------------------------------------------------------------
    @abstractmethod
    def encode(self, split: str, examples: Any, processor: Any, config: RunConfig, spec: Any,
               show_progress: bool) -> torch.utils.data.Dataset:
        """Encode one split once (cached on disk where it pays; never pickle). The dataset has
        ``lengths`` (cost per example, for length grouping and length-ordered evaluation) or
        ``lengths = None`` (every example costs the same)."""

    @abstractmethod
    def collator(self, processor: Any, config: RunConfig) -> Callable[[list[dict[str, Any]]], Batch]:
        """Items -> a batch of tensors with ``labels``; rows are examples."""

    # ---- training loss --------------------------------------------------------------------------
    def objective(self, config: RunConfig, model: torch.nn.Module) -> Objective:
        """The training loss of one micro-batch (a scalar mean over its examples)."""
        return lambda model, batch: model(**batch).loss

    # ---- evaluation -----------------------------------------------------------------------------
    @abstractmethod
    def eval_step(self, model: torch.nn.Module, batch: Batch, spec: Any, config: RunConfig) -> Batch:
        """Per-example outputs of one eval batch, each tensor with the batch as dim 0. Called with
        ΔW merged, under ``torch.no_grad`` and ``model.eval()``. The caller gathers them over
        processes (dim 1 padded with :meth:`eval_padding`) and collects, per key, one CPU tensor
        per batch."""

    def eval_padding(self, processor: Any) -> dict[str, int]:
        """Value to pad each eval output's dim 1 with when processes gather them (default 0)."""
        return {}

    @abstractmethod
    def compute_metrics(self, spec: Any, outputs: dict[str, list[torch.Tensor]], processor: Any,
                        examples: Sequence[Any]) -> dict[str, float]:
        """Metrics of one eval split from its gathered outputs (``examples``: the split as read)."""

    def write_predictions(self, directory: Path, split: str, spec: Any, outputs: dict[str, list[torch.Tensor]],
                          processor: Any, examples: Sequence[Any]) -> Path | None:
        """After the final evaluation: write the split's predictions under ``directory`` (main
        process only); None when the family writes none."""
        return None

    # ---- predict --------------------------------------------------------------------------------
    @abstractmethod
    def predict(self, model: torch.nn.Module, processor: Any, inputs: list[str], meta: dict[str, Any],
                show_progress: bool) -> list[dict[str, Any]]:
        """What ``rankadapt predict`` prints: one JSON-able record per input, in input order.
        ``meta`` is :meth:`export_metadata` read back, with command-line overrides."""

    def describe_prediction(self, meta: dict[str, Any]) -> str:
        """One line for stderr saying how ``predict`` reads its inputs."""
        return f"task {meta.get('task')}"

    # ---- export ---------------------------------------------------------------------------------
    @abstractmethod
    def export_metadata(self, spec: Any, config: RunConfig) -> dict[str, Any]:
        """What ``rankadapt.json`` carries besides the adapter so that eval/predict on an export need
        no config (JSON only). Always holds ``task`` and ``family``."""

    @abstractmethod
    def spec_from_metadata(self, meta: dict[str, Any], config: RunConfig) -> Any:
        """The task spec an export was trained for, from its metadata (and the config for what it lacks)."""

    def metadata_settings(self, meta: dict[str, Any]) -> dict[str, Any]:
        """The ``data`` / ``task_options`` settings an export records, as a partial run config, so
        that ``rankadapt eval`` on it encodes as the run did."""
        return {"data": {"task": meta["task"]}} if meta.get("task") else {}

    def save_processor(self, processor: Any, directory: Path) -> None:
        processor.save_pretrained(str(directory))


# ==================================================================================================
# Registry
# ==================================================================================================

_FAMILIES: dict[str, TaskFamily] = {}
_TASK_OWNERS: dict[str, str] = {}


def register_family(family: TaskFamily) -> TaskFamily:
    """Make ``family`` own its ``tasks``; its ``Settings`` become their ``task_options:`` section."""
    if not isinstance(family, TaskFamily):
        raise TypeError("register_family takes an instance of a rankadapt.tasks.base.TaskFamily subclass")
    taken = {task: _TASK_OWNERS[task] for task in family.tasks if _TASK_OWNERS.get(task, family.name) != family.name}
    if taken:
        raise ValueError(f"task family {family.name!r}: tasks already owned by another family: {taken}")
    _FAMILIES[family.name] = family
    for task in family.tasks:
        _TASK_OWNERS[task] = family.name
        register_task_options(task, family.Settings)
    return family


def family_names() -> list[str]:
    return list(_FAMILIES)


def known_tasks() -> list[str]:
    return list(_TASK_OWNERS)


def get_family(name: str) -> TaskFamily:
    if name not in _FAMILIES:
        raise DataError(f"unknown task family {name!r}; registered: {', '.join(_FAMILIES)}")
    return _FAMILIES[name]


def family_for_task(task: str) -> TaskFamily:
    """The family owning ``data.task`` (case-insensitive); a DataError listing every task otherwise."""
    key = task.strip().lower()
    if key not in _TASK_OWNERS:
        raise DataError(f"unknown data.task {task!r}; choose one of {', '.join(_TASK_OWNERS)}")
    return _FAMILIES[_TASK_OWNERS[key]]
