"""Encoder-decoder models: which linear maps to adapt, and loading the model.

The NLG scripts of the source systems (AdaLoRA's and ElaLoRA's ``run_summarization_no_trainer.py``)
adapt ``q_proj, k_proj, v_proj, out_proj, fc1, fc2`` of BART: the attention projections of the
encoder's self-attention, the decoder's self-attention and its cross-attention (``encoder_attn``),
and both feed-forward maps of every layer. :data:`SEQ2SEQ_MODULE_MAPS` maps those six names onto
regular expressions per ``model_type``; :func:`target_patterns` turns a list of them into
``method.target_modules`` for :func:`rankadapt.methods.adapting.prepare_model`.

An :class:`~transformers.EncoderDecoderModel` (the "bert2bert" recipe of Rothe et al., 2020: encoder
and decoder warm-started from encoder checkpoints, cross-attention new) is mapped part by part with
the maps of its encoder's and decoder's own ``model_type``.
"""

from __future__ import annotations

import difflib

from torch import nn

from ...core.errors import ModelError
from ...core.models import resolve_model_path

from ...core.config import SEQ2SEQ_MODULE_NAMES  # noqa: E402  (q_proj, k_proj, v_proj, out_proj, fc1, fc2)

# BART and its descendants: self_attn / encoder_attn (cross-attention) projections, fc1 / fc2.
_BART_LIKE = {
    **{name: rf"\.(self_attn|encoder_attn)\.{name}$" for name in ("q_proj", "k_proj", "v_proj", "out_proj")},
    "fc1": r"\.layers\.\d+\.fc1$",
    "fc2": r"\.layers\.\d+\.fc2$",
}
# T5: SelfAttention / EncDecAttention with q k v o; DenseReluDense wi (wi_0 + wi_1 when gated, T5 v1.1) and wo.
_T5_LIKE = {
    "q_proj": r"\.(SelfAttention|EncDecAttention)\.q$",
    "k_proj": r"\.(SelfAttention|EncDecAttention)\.k$",
    "v_proj": r"\.(SelfAttention|EncDecAttention)\.v$",
    "out_proj": r"\.(SelfAttention|EncDecAttention)\.o$",
    "fc1": r"\.DenseReluDense\.wi(_0|_1)?$",
    "fc2": r"\.DenseReluDense\.wo$",
}
# A BERT-like half of an EncoderDecoderModel: attention (self) and crossattention (decoder only).
_BERT_HALF = {
    "q_proj": r"\.(attention|crossattention)\.self\.query$",
    "k_proj": r"\.(attention|crossattention)\.self\.key$",
    "v_proj": r"\.(attention|crossattention)\.self\.value$",
    "out_proj": r"\.(attention|crossattention)\.output\.dense$",
    "fc1": r"\.layer\.\d+\.intermediate\.dense$",
    "fc2": r"\.layer\.\d+\.output\.dense$",
}

SEQ2SEQ_MODULE_MAPS: dict[str, dict[str, str]] = {
    "bart": _BART_LIKE,
    "mbart": _BART_LIKE,
    "pegasus": _BART_LIKE,
    "marian": _BART_LIKE,
    "blenderbot": _BART_LIKE,
    "t5": _T5_LIKE,
    "mt5": _T5_LIKE,
    # Halves of an EncoderDecoderModel (bert2bert, roberta2roberta).
    "bert": _BERT_HALF,
    "roberta": _BERT_HALF,
}
ENCODER_DECODER = "encoder-decoder"


def target_patterns(model: nn.Module, names: list[str] | tuple[str, ...] = SEQ2SEQ_MODULE_NAMES) -> list[str]:
    """Regular expressions over full module names selecting ``names`` in encoder, decoder and
    cross-attention; pass them as ``MethodConfig(target_modules=...)``."""
    unknown = [n for n in names if n not in SEQ2SEQ_MODULE_NAMES]
    if unknown:
        close = difflib.get_close_matches(unknown[0], SEQ2SEQ_MODULE_NAMES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ModelError(f"unknown encoder-decoder module name {unknown[0]!r}{hint}; "
                         f"choose from {', '.join(SEQ2SEQ_MODULE_NAMES)}")
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type == ENCODER_DECODER:
        return [rf"^{part}\..*{_module_map(getattr(config, part).model_type)[name]}"
                for part in ("encoder", "decoder") for name in names]
    return [_module_map(model_type)[name] for name in names]


# The encoder roles of method.lora_module (the default ["query", "value"] among them) name the same maps.
ENCODER_ROLES = {"query": "q_proj", "key": "k_proj", "value": "v_proj", "attention.output": "out_proj",
                 "intermediate": "fc1", "layer.output": "fc2"}


def role_patterns(model: nn.Module) -> dict[str, str]:
    """Every ``method.lora_module`` name -> its regular expression on ``model`` (seq2seq names and
    their encoder-role synonyms), for :func:`rankadapt.core.targets.find_targets`."""
    patterns = {name: "|".join(f"(?:{p})" for p in target_patterns(model, [name])) for name in SEQ2SEQ_MODULE_NAMES}
    return {**patterns, **{role: patterns[name] for role, name in ENCODER_ROLES.items()}}


def new_module_names(model: nn.Module) -> list[str]:
    """Modules a warm start (``EncoderDecoderModel`` from two encoders) initialises at random: every
    decoder cross-attention block and the decoder's LM-head transform (an encoder checkpoint has no
    MLM head; the output projection itself stays tied to the embeddings). Empty for native seq2seq models."""
    if getattr(model.config, "model_type", None) != ENCODER_DECODER:
        return []
    names = [name for name, _ in model.named_modules() if name.endswith(".crossattention")]
    return names + [name for name, _ in model.named_modules() if name.endswith("cls.predictions.transform")]


def _module_map(model_type: str | None) -> dict[str, str]:
    if model_type not in SEQ2SEQ_MODULE_MAPS:
        raise ModelError(f"rankadapt has no encoder-decoder module map for model_type={model_type!r} "
                         f"(known: {', '.join(sorted(SEQ2SEQ_MODULE_MAPS))}); set method.target_modules to "
                         "regular expressions over the model's linear modules")
    return SEQ2SEQ_MODULE_MAPS[model_type]


def set_special_tokens(model: nn.Module, tokenizer) -> None:
    """Give an EncoderDecoderModel the token ids generation and label shifting need: decoding starts
    at the tokenizer's BOS (BERT: ``[CLS]``), stops at EOS (BERT: ``[SEP]``), pads with PAD."""
    start = decoder_start_token(tokenizer)
    end = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    if start is None or end is None or tokenizer.pad_token_id is None:
        raise ModelError(f"the tokenizer {type(tokenizer).__name__} lacks a start (BOS/CLS), end (EOS/SEP) or "
                         "pad token, which an encoder-decoder model needs to generate")
    for config in (model.config, model.generation_config):
        config.decoder_start_token_id = start
        config.bos_token_id = start
        config.eos_token_id = end
        config.pad_token_id = tokenizer.pad_token_id


def decoder_start_token(tokenizer) -> int | None:
    """Where a warm-started decoder starts: the tokenizer's BOS, else its CLS (BERT)."""
    return tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id


def load_seq2seq_model(name: str, tokenizer) -> nn.Module:
    """``name``'s sequence-to-sequence model: an ``AutoModelForSeq2SeqLM`` checkpoint (BART, T5,
    mBART, Pegasus ...) as it is, or, for an encoder-only checkpoint (BERT, MiniLM, RoBERTa), a
    bert2bert ``EncoderDecoderModel`` whose encoder and decoder both start from it (cross-attention
    new, randomly initialised)."""
    from transformers import AutoConfig, AutoModelForSeq2SeqLM, EncoderDecoderModel
    from transformers.utils import logging as hf_logging

    path = resolve_model_path(name)
    # A warm start reports every new cross-attention and LM-head weight as missing: expected, not news.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        config = AutoConfig.from_pretrained(path)
        if getattr(config, "is_encoder_decoder", False):
            return AutoModelForSeq2SeqLM.from_pretrained(path)
        model = EncoderDecoderModel.from_encoder_decoder_pretrained(path, path)
    except (OSError, ValueError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ModelError(f"cannot load {name!r} as a sequence-to-sequence model from {path}: {first}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    set_special_tokens(model, tokenizer)
    return model


def start_token_to_strip(model_name: str, tokenizer) -> int | None:
    """The token :func:`~.data.encode_pairs` removes from the front of targets: the decoder start
    token of a warm-started EncoderDecoderModel (BERT's ``[CLS]``), which the tokenizer also puts first.
    None for native seq2seq checkpoints, whose own conventions are kept (BART's labels start with
    ``<s>`` after a ``</s>`` decoder start, as in fairseq)."""
    from transformers import AutoConfig

    try:
        native = getattr(AutoConfig.from_pretrained(resolve_model_path(model_name)), "is_encoder_decoder", False)
    except (OSError, ValueError):
        return None
    return None if native else decoder_start_token(tokenizer)
