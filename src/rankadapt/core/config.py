"""The run configuration: a typed schema, YAML files and dotted ``key=value`` overrides.

Four sections (``model``, ``data``, ``method``, ``train``) plus ``output_dir``. Method
hyperparameters keep the names of the source repositories (loralib, AdaLoRA, ElaLoRA, SoRA, RM-LoRA)
so that their users recognise them: ``lora_r``, ``target_rank``, ``init_warmup``, ``sparse_lambda_2``,
``random_rank`` ...

Validation is pydantic's (``extra="forbid"`` rejects unknown keys); :func:`load_config` turns its
errors into one :class:`~rankadapt.core.errors.ConfigError` whose lines name the key and the fix.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError

MODULE_NAMES = ("query", "key", "value", "attention.output", "intermediate", "layer.output")
METHOD_NAMES = ("none", "head", "full", "lora", "adalora", "elalora", "sora", "rmlora")
ADAPTER_METHODS = ("lora", "adalora", "elalora", "sora", "rmlora")
RANK_ADAPTIVE_METHODS = ("adalora", "elalora", "sora")

# Which method hyperparameters each method reads. A key set for a method that ignores it is an
# error, so that a typo in a sweep (target_rank on a LoRA run) cannot silently change nothing.
_SHARED_ADAPTER_KEYS = {"lora_r", "lora_alpha", "lora_dropout", "lora_module", "target_modules", "budget"}
_ALLOCATION_KEYS = {"target_rank", "target_total_rank", "init_warmup", "final_warmup", "mask_interval",
                    "beta1", "beta2", "reg_orth_coef"}
METHOD_KEYS: dict[str, set[str]] = {
    "none": set(),
    "head": set(),
    "full": set(),
    "lora": _SHARED_ADAPTER_KEYS,
    "adalora": _SHARED_ADAPTER_KEYS | _ALLOCATION_KEYS,
    # ElaLoRA conserves the initial total rank (docs/methods/elalora.md): no final-rank target.
    "elalora": _SHARED_ADAPTER_KEYS | (_ALLOCATION_KEYS - {"target_rank", "target_total_rank"})
    | {"b", "k", "enable_scheduler", "max_rank"},
    "sora": _SHARED_ADAPTER_KEYS | {"sparse_lambda", "sparse_lambda_2", "prox_threshold", "gate_init"},
    "rmlora": _SHARED_ADAPTER_KEYS | {"random_rank", "lora_type", "reg_orth_coef"},
}
# Keys every method accepts (they are not method hyperparameters).
_ALWAYS_ALLOWED = {"name", "modules_to_save"}

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DATA_DIR_ENV = "RANKADAPT_DATA_DIR"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    name: str = DEFAULT_MODEL
    """Hub id, local directory, or an id an installed package carries (see ``rankadapt.core.models``)."""
    cls_dropout: float | None = Field(None, ge=0.0, lt=1.0)
    """Dropout before the classifier; ``None`` keeps the model's own (ElaLoRA uses 0.15)."""


class DataConfig(_Section):
    task: str = "imdb"
    """``imdb``, a GLUE task (``cola sst2 mrpc qqp stsb mnli qnli rte wnli``) or ``custom``."""
    dir: str | None = None
    """Root of local data (the ``../shared/data`` layout). Falls back to $RANKADAPT_DATA_DIR, then the hub."""
    hub_dataset: str | None = None
    """Hub dataset id to use instead of the task's default one (only when no local data is found)."""
    train_file: str | None = None
    """A CSV/TSV/JSONL file to train on instead of the task's own train split."""
    eval_file: str | None = None
    """A CSV/TSV/JSONL file to evaluate on instead of the task's own validation split."""
    text_column: str | None = None
    text_pair_column: str | None = None
    label_column: str | None = None
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
    padding: Literal["longest", "max_length"] = "longest"
    """Pad each batch to its longest example (dynamic padding), or every batch to ``max_length``
    (fixed shapes, as ``tokenizer(padding="max_length")`` gives; slower, for comparison or for
    compilers that want one shape)."""
    cache_dir: str | None = None
    """Where tokenised datasets are cached (default ``~/.cache/rankadapt``)."""

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if self.max_length < 8:
            raise ValueError(f"data.max_length={self.max_length} is too short; use at least 8 (128 is typical)")
        if self.task == "custom" and not self.train_file:
            raise ValueError("data.task=custom needs data.train_file (and usually data.eval_file, text_column, label_column)")
        return self


class MethodConfig(_Section):
    name: Literal["none", "head", "full", "lora", "adalora", "elalora", "sora", "rmlora"] = "lora"
    # --- shared by every adapter method (loralib names) ---
    lora_r: int = Field(8, gt=0)
    """Rank (LoRA, SoRA, RM-LoRA) or initial rank (AdaLoRA, ElaLoRA) of every adapted matrix."""
    lora_alpha: float = Field(16.0, gt=0.0)
    """Scale numerator: s = lora_alpha / lora_r, constant for the whole run."""
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    lora_module: list[str] = Field(default_factory=lambda: ["query", "value"])
    """Which encoder linear maps to adapt, by the source repositories' names: query, key, value,
    attention.output, intermediate, layer.output."""
    target_modules: list[str] | None = None
    """Regular expressions over full module names, for architectures rankadapt has no map for.
    Replaces ``lora_module`` when given."""
    modules_to_save: list[str] | None = None
    """Modules trained in full and saved with the adapter; default: the classification head."""
    budget: int | None = Field(None, gt=0)
    """Target number of final adapter parameters; sets the rank settings to match (sweeps)."""
    # --- AdaLoRA / ElaLoRA ---
    target_rank: int | None = Field(None, gt=0)
    """Average final rank per matrix; the final budget is target_rank x number of matrices."""
    target_total_rank: int | None = Field(None, gt=0)
    """Final total rank over all matrices (overrides target_rank)."""
    init_warmup: int | None = Field(None, ge=0)
    """t_i: optimizer steps before any rank change (default 10% of the total steps)."""
    final_warmup: int | None = Field(None, ge=0)
    """t_f: last optimizer steps with the rank pattern frozen (default 30% of the total steps)."""
    mask_interval: int = Field(10, gt=0)
    """Steps between two budget/masking (AdaLoRA) or prune-and-grow (ElaLoRA) decisions."""
    beta1: float = Field(0.85, gt=0.0, lt=1.0)
    beta2: float = Field(0.85, gt=0.0, lt=1.0)
    reg_orth_coef: float = Field(0.1, ge=0.0)
    """gamma, weight of the orthogonal regulariser (AdaLoRA, ElaLoRA, RM-LoRA): gamma times the sum of the
    A and B terms over 2 x matrices, as the official code and PEFT's orth_reg_weight."""
    # --- ElaLoRA ---
    b: int = Field(4, gt=0)
    """Ranks moved per round."""
    k: int = Field(2, gt=0)
    """Most ranks one matrix gains or loses per round."""
    enable_scheduler: bool = True
    """Shrink the round size as b_t = round(b (1 - p^3))."""
    max_rank: int | None = Field(None, gt=0)
    """Slots preallocated per matrix (default 2 x lora_r)."""
    # --- SoRA ---
    sparse_lambda: float = Field(0.0, ge=0.0)
    """Weight of an optional L1 term on the gates in the loss: sparse_lambda x mean |g| over every gate
    entry (the official code's sum divided by the number of gate entries)."""
    sparse_lambda_2: float = Field(1e-3, ge=0.0)
    """xi, the proximal threshold: g <- sign(g) max(|g| - tau, 0) after every optimizer step, with
    tau = xi (``prox_threshold: xi``, the official code) or lr x xi (``lr_xi``, the paper's reading)."""
    prox_threshold: Literal["xi", "lr_xi"] = "xi"
    """SoRA's per-step threshold tau: xi itself, as the official SparseAdamW (default), or the current
    learning rate times xi, as the paper's proximal-gradient update writes it."""
    gate_init: Literal["normal", "ones"] = "normal"
    # --- RM-LoRA ---
    random_rank: int = Field(2, gt=0)
    """Rank directions of each adapter that receive gradient at a step."""
    lora_type: Literal["v1", "v2"] = "v1"
    """v1: same random indices for A's rows and B's columns; v2: independent ones."""

    @model_validator(mode="after")
    def _check(self) -> MethodConfig:
        unused = sorted(k for k in self.model_fields_set - _ALWAYS_ALLOWED - METHOD_KEYS[self.name])
        if unused:
            users = {k: [m for m, keys in METHOD_KEYS.items() if k in keys] for k in unused}
            hints = "; ".join(f"method.{k} is read by {', '.join(v) or 'no method'}" for k, v in users.items())
            raise ValueError(f"method.name={self.name} does not use {', '.join(unused)} ({hints}); remove them")
        for name in self.lora_module:
            if name not in MODULE_NAMES:
                close = difflib.get_close_matches(name, MODULE_NAMES, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(f"method.lora_module: unknown module name {name!r}{hint}; choose from {', '.join(MODULE_NAMES)}")
        if self.name == "rmlora" and self.random_rank > self.lora_r:
            raise ValueError(f"method.random_rank={self.random_rank} exceeds method.lora_r={self.lora_r}; lower random_rank")
        if self.name == "adalora" and self.target_rank and self.target_rank > self.lora_r:
            raise ValueError(f"method.target_rank={self.target_rank} exceeds the initial rank method.lora_r={self.lora_r}; "
                             "AdaLoRA only removes ranks")
        if self.name == "elalora" and self.max_rank is not None and self.max_rank < self.lora_r:
            raise ValueError(f"method.max_rank={self.max_rank} is below method.lora_r={self.lora_r}; raise max_rank")
        return self

    @property
    def is_adapter(self) -> bool:
        return self.name in ADAPTER_METHODS


class TrainConfig(_Section):
    epochs: float = Field(3.0, gt=0.0)
    max_steps: int | None = Field(None, gt=0)
    """Optimizer steps; overrides epochs when set."""
    batch_size: int = Field(32, gt=0)
    """Global batch per optimizer step = batch_size x grad_accum (batch_size is split over processes)."""
    eval_batch_size: int | None = Field(None, gt=0)
    learning_rate: float = Field(5e-4, gt=0.0)
    weight_decay: float = Field(0.01, ge=0.0)
    warmup_steps: int = Field(0, ge=0)
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0)
    """Warmup as a fraction of the total steps, used when warmup_steps is 0."""
    max_grad_norm: float | None = Field(1.0, gt=0.0)
    grad_accum: int = Field(1, gt=0)
    seed: int = Field(42, ge=0, lt=2**32)
    """Seeds Python, NumPy and torch; NumPy takes 0 .. 2**32 - 1."""
    eval_strategy: Literal["steps", "epoch", "no"] = "epoch"
    eval_steps: int = Field(500, gt=0)
    logging_steps: int = Field(20, gt=0)
    metric_for_best: str | None = None
    """Eval metric that picks the best model (default: the task's main metric)."""
    export: Literal["best", "last"] = "best"
    """Which model ``adapter/`` holds."""
    resume: bool = False
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    fast_dropout: bool = True
    """CPU training draws dropout masks from 16-bit random integers, under a quarter of torch's cost (p rounded
    to a multiple of 1/65536; see ``rankadapt.core.dropout``). No effect on GPU or in evaluation."""
    group_by_length: bool = True
    """Batch examples of similar length together (less padding, same examples per epoch)."""
    num_workers: int = Field(0, ge=0)
    tensorboard: bool = True
    progress: bool = True
    threads: int | None = Field(None, gt=0)
    """torch CPU threads (default: torch's choice)."""
    # --- consistency training (rankadapt.tasks.text_classification.augment; microsoft/LoRA's mnli.cutoff.sh / mnli.rdrop.sh) ---
    aug_type: Literal["token_cutoff", "span_cutoff", "dim_cutoff"] | None = None
    """Cutoff (Shen et al. 2020): also train on a view with part of the input embeddings zeroed."""
    aug_cutoff_ratio: float = Field(0.1, gt=0.0, lt=1.0)
    """Fraction of the tokens (token/span cutoff) or embedding features (dim cutoff) zeroed."""
    aug_ce_loss: float = Field(1.0, ge=0.0)
    """Weight of the cross-entropy of the cut-off view."""
    aug_js_loss: float = Field(1.0, ge=0.0)
    """Weight of the Jensen-Shannon divergence between the original and the cut-off predictions."""
    reg_loss_wgt: float = Field(0.0, ge=0.0)
    """R-drop (Liang et al. 2021): weight of the symmetric KL between two dropout passes; 0 = off."""

    @field_validator("mixed_precision", "eval_strategy", mode="before")
    @classmethod
    def _yaml_no(cls, value: Any) -> Any:
        """YAML reads a bare ``no`` as false; these options spell it 'no'."""
        return "no" if value is False else value

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.mixed_precision == "fp16" and self.device == "cpu":
            raise ValueError("train.mixed_precision=fp16 needs a GPU; use bf16 on CPU or 'no'")
        if self.aug_type and self.reg_loss_wgt:
            raise ValueError("train.aug_type (Cutoff) and train.reg_loss_wgt (R-drop) each add a second forward "
                             "pass; choose one of them")
        if self.aug_type and not (self.aug_ce_loss or self.aug_js_loss):
            raise ValueError(f"train.aug_type={self.aug_type} with train.aug_ce_loss=0 and train.aug_js_loss=0 "
                             "trains nothing on the cut-off view; set one of them above 0 or remove train.aug_type")
        return self


class RunConfig(_Section):
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    method: MethodConfig = Field(default_factory=MethodConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    output_dir: str = "runs/{task}-{method}-seed{seed}"
    """Run directory; ``{task}``, ``{method}``, ``{seed}`` and ``{model}`` are filled in."""
    init_from: str | None = None
    """Start the adapters (and the head, when its shape fits) from another run's adapter: a run
    directory, an adapter directory or a loralib checkpoint, e.g. MNLI → MRPC as in the source
    repositories. Ranks are padded or truncated (see ``rankadapt.methods.init_from``)."""

    def resolved_output_dir(self) -> Path:
        model = self.model.name.rstrip("/").split("/")[-1]
        return Path(self.output_dir.format(task=self.data.task, method=self.method.name,
                                           seed=self.train.seed, model=model))

    def to_yaml(self) -> str:
        """The resolved config as YAML that loads back: method keys the method does not read are left out."""
        data = self.model_dump(mode="json")
        used = METHOD_KEYS[self.method.name] | _ALWAYS_ALLOWED
        data["method"] = {k: v for k, v in data["method"].items() if k in used}
        return yaml.safe_dump(data, sort_keys=False)


# --------------------------------------------------------------------------------------------------
# Loading, overrides, error messages
# --------------------------------------------------------------------------------------------------

def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["method.lora_r=4", "train.seed=1"]`` -> nested dict; values are parsed as YAML scalars."""
    tree: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value (e.g. method.lora_r=4)")
        key, raw = item.split("=", 1)
        key = key.strip().lstrip("-")
        if not key:
            raise ConfigError(f"override {item!r} has an empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with another override of {part}")
        node[parts[-1]] = value
    return tree


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _known_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        keys.append(prefix + name)
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys.extend(_known_keys(ann, prefix + name + "."))
    return keys


def _format_validation_error(error: ValidationError) -> str:
    known = _known_keys(RunConfig)
    lines = []
    for e in error.errors():
        loc = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            section = loc.rsplit(".", 1)[0] + "." if "." in loc else ""
            siblings = [k for k in known if k.startswith(section) and "." not in k[len(section):]]
            close = difflib.get_close_matches(loc, siblings, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]}?" if close else f"; known keys here: {', '.join(siblings)}"
            lines.append(f"unknown key {loc}{hint}")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            got = e.get("input")
            shown = "" if isinstance(got, dict) or e["type"].startswith("value_error") else f" (got {got!r})"
            prefix = f"{loc}: " if loc and not msg.startswith(loc) and f" {loc}." not in f" {msg}" else ""
            lines.append(f"{prefix}{msg}{shown}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def build_config(data: dict[str, Any]) -> RunConfig:
    """Validate a nested dict into a :class:`RunConfig`, raising :class:`ConfigError` on any problem."""
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err)) from None


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping (model:, data:, method:, train:)")
    return data


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Defaults, then the YAML file (if any), then ``key=value`` overrides; validated."""
    data = read_yaml(path) if path else {}
    data = _deep_merge(data, parse_overrides(overrides or []))
    return build_config(data)
