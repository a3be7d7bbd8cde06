"""The run configuration's schema: every section and key, with its default, bounds and a docstring.

Four sections (``model``, ``data``, ``method``, ``train``) plus ``output_dir``. Method
hyperparameters keep the names of the source repositories (loralib, AdaLoRA, ElaLoRA, SoRA, RM-LoRA)
so that their users recognise them: ``lora_r``, ``target_rank``, ``init_warmup``, ``sparse_lambda_2``,
``random_rank`` ...

The ``method`` section is the settings model of the method it names: each method module defines and
registers its own (:class:`MethodSettings`). Validation is pydantic's (``extra="forbid"`` rejects
unknown keys); loading a YAML file with overrides, and turning pydantic's errors into one
:class:`~rankadapt.core.errors.ConfigError`, is :mod:`.config_files`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (BaseModel, Field, SerializeAsAny, field_validator,
                      model_validator)

from .train_config import TrainConfig, _Section  # the train: section lives in its own module

__all__ = ["DataConfig", "MethodConfig", "MethodSettings", "ModelConfig", "RunConfig", "TrainConfig"]


MODULE_NAMES = ("query", "key", "value", "attention.output", "intermediate", "layer.output")
"""The six linear maps of an encoder block by the source repositories' NLU names (text and
ViT-family models)."""
SEQ2SEQ_MODULE_NAMES = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
"""An encoder-decoder's maps by the source repositories' NLG names: the attention projections of
self- and cross-attention, and both feed-forward maps. On an encoder-decoder the encoder names stand
for the same maps (query = q_proj, ..., intermediate = fc1, layer.output = fc2)."""
LORA_MODULE_NAMES = MODULE_NAMES + SEQ2SEQ_MODULE_NAMES
"""Every name ``method.lora_module`` accepts."""
DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DATA_DIR_ENV = "RANKADAPT_DATA_DIR"




class ModelConfig(_Section):
    name: str = DEFAULT_MODEL
    """Hub id, local directory, or an id an installed package carries (see ``rankadapt.core.models``)."""
    cls_dropout: float | None = Field(None, ge=0.0, lt=1.0)
    """Dropout before the classifier; ``None`` keeps the model's own (ElaLoRA uses 0.15)."""


class DataConfig(_Section):
    task: str = "imdb"
    """``imdb``, a GLUE task (``cola sst2 mrpc qqp stsb mnli qnli rte wnli``) or ``custom`` (text
    classification); ``summarization``, ``xsum``, ``cnn_dailymail`` or ``samsum``; ``imagefolder`` (image
    classification)."""
    dir: str | None = None
    """Root of local data (the ``../shared/data`` layout). Falls back to $RANKADAPT_DATA_DIR, then the hub."""
    hub_dataset: str | None = None
    """Hub dataset (``id`` or ``id:config``) to use instead of the task's default one, only when no local
    data is found; also the hub dataset of ``summarization`` and ``imagefolder`` (e.g. ``cifar100``)."""
    train_file: str | None = None
    """A CSV/TSV/JSONL file to train on instead of the task's own train split."""
    eval_file: str | None = None
    """A CSV/TSV/JSONL file to evaluate on instead of the task's own validation split."""
    train_dir: str | None = None
    """``imagefolder``: the training images, one folder per class (``DIR/<class>/*.jpg``)."""
    eval_dir: str | None = None
    """``imagefolder``: the evaluation images in the same layout (class folders must match train's)."""
    text_column: str | None = None
    """Column holding the text (default: the task's own name for it, ``text`` for custom files)."""
    text_pair_column: str | None = None
    """Column holding the second text of a pair task (default: the task's own; none for custom files)."""
    target_column: str | None = None
    """Summarization: column holding the reference summary (default: the task's own, ``summary``)."""
    label_column: str | None = None
    """Column holding the label (default: the task's own name for it, ``label`` for custom files)."""
    label_names: list[str] | None = None
    """Label vocabulary for ``custom`` files; index i is class i. Inferred (sorted) when omitted."""
    train_limit: int | None = Field(None, gt=0)
    """Use a stratified, seeded subset of this many training examples."""
    eval_limit: int | None = Field(None, gt=0)
    """Use a stratified, seeded subset of this many evaluation examples (per eval split)."""
    validation_size: float = Field(0.1, gt=0.0, lt=1.0)
    """Fraction of train held out as validation when the task has no validation split (IMDB)."""
    split_seed: int = Field(1234, ge=0, lt=2**32)
    """Seed of the held-out split and the subsets; fixed so every run sees the same examples."""
    max_length: int = 128
    """Tokens per example after truncation (at least 8; lowered to the model's positions when left at 128);
    summarization: source tokens."""
    max_target_length: int | None = Field(None, gt=1)
    """Summarization: target tokens kept for training (default 64, AdaLoRA's XSum script); longer
    targets are cut and counted."""
    padding: Literal["longest", "max_length"] = "longest"
    """Pad each batch to its longest example (dynamic padding), or every batch to ``max_length``
    (fixed shapes, as ``tokenizer(padding="max_length")`` gives; slower, for comparison or for
    compilers that want one shape)."""
    cache_dir: str | None = None
    """Where tokenised datasets, preprocessed pixels and hub images (``hub-images/``) are cached
    (default ``~/.cache/rankadapt``)."""

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if self.max_length < 8:
            raise ValueError(f"data.max_length={self.max_length} is too short; use at least 8 (128 is typical)")
        if self.task == "custom" and not self.train_file:
            raise ValueError("data.task=custom needs data.train_file (and usually data.eval_file, text_column, label_column)")
        if self.task == "imagefolder" and not (self.train_dir or self.train_file or self.hub_dataset):
            raise ValueError("data.task=imagefolder needs data.train_dir (DIR/<class>/*.jpg) or data.train_file "
                             "(a CSV/JSONL of image paths and labels), or data.hub_dataset=<id> when online")
        return self


class MethodSettings(_Section):
    """The ``method:`` section: the base of every method's settings.

    Each method module defines a subclass holding its own keys (fields, defaults, docstrings,
    checks; see :class:`rankadapt.methods.settings.AdapterSettings` for the keys every adapter method
    shares) and registers it with :func:`rankadapt.methods.register_method`. ``RunConfig.method`` is
    then the union of the registered settings, told apart by ``name``: a key the chosen method does
    not read is rejected with the names of the methods that do.
    """

    name: str
    """The method: one registered with ``rankadapt.methods.register_method`` (none, head, full, lora,
    adalora, elalora, sora, rmlora, or your own)."""
    modules_to_save: list[str] | None = None
    """Modules trained in full and saved with the adapter; default: the classification head."""

    @model_validator(mode="before")
    @classmethod
    def _keys_of_other_methods(cls, values: Any) -> Any:
        """A key this method does not read is an error that names the methods reading it, so that a
        typo in a sweep (target_rank on a LoRA run) cannot silently change nothing."""
        if not isinstance(values, dict):
            return values
        unused = sorted(set(values) - set(cls.model_fields))
        if unused:
            name = values.get("name", cls.model_fields["name"].default)
            users = {k: [m for m, settings in _METHOD_SETTINGS.items() if k in settings.model_fields] for k in unused}
            hints = "; ".join(f"method.{k} is read by {', '.join(v) or 'no method'}" for k, v in users.items())
            raise ValueError(f"method.name={name} does not use {', '.join(unused)} ({hints}); remove them")
        return values

    @property
    def is_adapter(self) -> bool:
        """True for methods that inject adapters (their settings derive from AdapterSettings)."""
        return False


_METHOD_SETTINGS: dict[str, type[MethodSettings]] = {}
"""Registered settings by method name, in registration order (filled by ``register_method``)."""
DEFAULT_METHOD = "lora"


def register_method_settings(name: str, settings: type[MethodSettings]) -> None:
    """Make ``method.name: <name>`` validate with ``settings`` (called by ``register_method``)."""
    if not (isinstance(settings, type) and issubclass(settings, MethodSettings)):
        raise TypeError(f"the settings of method {name!r} must subclass rankadapt.core.config.MethodSettings")
    _METHOD_SETTINGS[name] = settings


def method_names() -> list[str]:
    """Registered methods, in registration order."""
    return list(_METHOD_SETTINGS)


def method_keys(name: str) -> set[str]:
    """The hyperparameters method ``name`` reads (not ``name`` and ``modules_to_save``); empty if unknown."""
    settings = _METHOD_SETTINGS.get(name)
    return set(settings.model_fields) - {"name", "modules_to_save"} if settings else set()


def settings_class(name: Any) -> type[MethodSettings]:
    if name not in _METHOD_SETTINGS:
        choices = ", ".join(repr(m) for m in _METHOD_SETTINGS)
        raise ValueError(f"method.name: Input should be one of {choices} (got {name!r}); a method of your own "
                         "is registered with rankadapt.methods.register_method")
    return _METHOD_SETTINGS[name]


_TASK_OPTIONS: dict[str, type[BaseModel] | None] = {}
"""``task_options:`` settings per ``data.task`` value (filled by ``rankadapt.tasks.register_family``)."""


def register_task_options(task: str, settings: type[BaseModel] | None) -> None:
    """Make ``task_options:`` validate with ``settings`` when ``data.task`` is ``task``."""
    _TASK_OPTIONS[task] = settings


def registered_task_options() -> dict[str, type[BaseModel] | None]:
    """``task_options:`` settings by data.task, in registration order."""
    return dict(_TASK_OPTIONS)


def task_options_class(task: str) -> type[BaseModel] | None:
    return _TASK_OPTIONS.get(str(task).strip().lower())


def MethodConfig(**values: Any) -> MethodSettings:  # noqa: N802  (reads as the class it builds)
    """The validated settings of method ``values["name"]`` (default lora), e.g.
    ``MethodConfig(name="adalora", lora_r=6, target_rank=4)``; raises pydantic's ValidationError."""
    return settings_class(values.get("name", DEFAULT_METHOD)).model_validate(values)


class RunConfig(_Section):
    model: ModelConfig = Field(default_factory=ModelConfig)
    """The base model."""
    data: DataConfig = Field(default_factory=DataConfig)
    """The task and its data."""
    method: SerializeAsAny[MethodSettings] = Field(default_factory=MethodConfig)
    """The method and its hyperparameters (``rankadapt config show --help-keys method.name=X`` lists them)."""
    train: TrainConfig = Field(default_factory=TrainConfig)
    """The optimizer, the schedule, evaluation, checkpoints and the device."""
    output_dir: str = "runs/{task}-{method}-seed{seed}"
    """Run directory; ``{task}``, ``{method}``, ``{seed}`` and ``{model}`` are filled in."""
    task_options: SerializeAsAny[BaseModel] | None = None
    """The task family's own keys (summarization: generation settings; images: the VTAB-1k protocol);
    ``rankadapt config show --help-keys`` lists them for the configured data.task."""
    init_from: str | None = None
    """Start the adapters (and the head, when its shape fits) from another run's adapter: a run
    directory, an adapter directory or a loralib checkpoint, e.g. MNLI → MRPC as in the source
    repositories. Ranks are padded or truncated (see ``rankadapt.methods.init_from``)."""

    @field_validator("method", mode="before")
    @classmethod
    def _method_settings(cls, value: Any) -> Any:
        """A mapping becomes the registered settings of its ``name`` (a union told apart by name)."""
        if isinstance(value, dict):
            return settings_class(value.get("name", DEFAULT_METHOD)).model_validate(value)
        return value

    @model_validator(mode="before")
    @classmethod
    def _task_options(cls, values: Any) -> Any:
        """``task_options:`` is the settings model of data.task's family (filled with its defaults)."""
        if not isinstance(values, dict):
            return values
        data = values.get("data") or {}
        task = data.task if isinstance(data, DataConfig) else data.get("task", DataConfig.model_fields["task"].default)
        options_class, given = task_options_class(task), values.get("task_options")
        if options_class is None:
            if given:
                raise ValueError(f"task_options: data.task={task} takes no task_options; remove the section")
            return {**values, "task_options": None}
        if isinstance(given, options_class):
            return values
        return {**values, "task_options": options_class.model_validate(given or {})}

    def resolved_output_dir(self) -> Path:
        model = self.model.name.rstrip("/").split("/")[-1]
        return Path(self.output_dir.format(task=self.data.task, method=self.method.name,
                                           seed=self.train.seed, model=model))

    def to_yaml(self) -> str:
        """The resolved config as YAML that loads back (the method section holds its own keys only)."""
        tree = self.model_dump(mode="json")
        if tree.get("task_options") is None:
            tree.pop("task_options", None)  # families without options: config.yaml as before
        return yaml.safe_dump(tree, sort_keys=False)
