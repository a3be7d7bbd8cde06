"""Which linear maps of an encoder to adapt.

The source repositories name modules by their role in a BERT block: ``query, key, value,
attention.output, intermediate, layer.output``. Each architecture spells them differently; this
module maps the role names onto regular expressions over full module names, per ``model_type``.
Other architectures take explicit patterns (``method.target_modules``).
"""

from __future__ import annotations

import re

from torch import nn

from .errors import ModelError

_BERT_LIKE = {
    "query": r"\.attention\.self\.query(_proj)?$",
    "key": r"\.attention\.self\.key(_proj)?$",
    "value": r"\.attention\.self\.value(_proj)?$",
    "attention.output": r"\.attention\.output\.dense$",
    "intermediate": r"\.intermediate\.dense$",
    "layer.output": r"\.layer\.\d+\.output\.dense$",
}

MODULE_MAPS: dict[str, dict[str, str]] = {
    # BERT, MiniLM (a BERT), RoBERTa and its kin share BERT's module tree.
    "bert": _BERT_LIKE,
    "roberta": _BERT_LIKE,
    "xlm-roberta": _BERT_LIKE,
    "camembert": _BERT_LIKE,
    "electra": _BERT_LIKE,
    # DeBERTa-v2/v3: query_proj / key_proj / value_proj, the rest as BERT.
    "deberta-v2": _BERT_LIKE,
    "distilbert": {
        "query": r"\.attention\.q_lin$",
        "key": r"\.attention\.k_lin$",
        "value": r"\.attention\.v_lin$",
        "attention.output": r"\.attention\.out_lin$",
        "intermediate": r"\.ffn\.lin1$",
        "layer.output": r"\.ffn\.lin2$",
    },
    "mpnet": {
        "query": r"\.attention\.attn\.q$",
        "key": r"\.attention\.attn\.k$",
        "value": r"\.attention\.attn\.v$",
        "attention.output": r"\.attention\.attn\.o$",
        "intermediate": r"\.intermediate\.dense$",
        "layer.output": r"\.layer\.\d+\.output\.dense$",
    },
}

# Classification heads (always trained, saved with the adapter through PEFT's modules_to_save).
HEAD_MODULE_NAMES = ("classifier", "pre_classifier", "pooler", "score")


def linear_module_names(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]


def head_module_names(model: nn.Module) -> list[str]:
    """Full names of the head modules present (e.g. ``bert.pooler``, ``classifier``)."""
    found = []
    for name, _ in model.named_modules():
        if name and name.split(".")[-1] in HEAD_MODULE_NAMES and not any(name.startswith(f + ".") for f in found):
            found.append(name)
    return found


def patterns_for(model: nn.Module, lora_module: list[str], mapping: dict[str, str] | None = None) -> dict[str, str]:
    """Role name -> regex for this model's architecture (``mapping``: a task family's own map for it)."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if mapping is not None:
        return _roles_in(mapping, lora_module, model_type)
    if model_type not in MODULE_MAPS:
        raise ModelError(
            f"rankadapt has no module map for model_type={model_type!r} (known: {', '.join(sorted(MODULE_MAPS))}); "
            f"set method.target_modules to regular expressions over these linear modules: "
            f"{_abbreviate(linear_module_names(model))}")
    return _roles_in(MODULE_MAPS[model_type], lora_module, model_type)


def _roles_in(mapping: dict[str, str], lora_module: list[str], model_type: str | None) -> dict[str, str]:
    missing = [role for role in lora_module if role not in mapping]
    if missing:
        raise ModelError(f"method.lora_module: {', '.join(missing)} is not a module of {model_type} models; "
                         f"choose from {', '.join(mapping)}, or set method.target_modules")
    return {role: mapping[role] for role in lora_module}


def find_targets(model: nn.Module, lora_module: list[str] | None = None,
                 target_modules: list[str] | None = None, role_patterns: dict[str, str] | None = None,
                 heads: list[str] | None = None) -> dict[str, str]:
    """Full module name -> role (or the pattern that matched) of every linear map to adapt.

    ``role_patterns``: a task family's role map for this model (else :data:`MODULE_MAPS`); ``heads``:
    modules trained in full (default: the classification head), whose linear maps are never adapted.
    Raises :class:`ModelError` naming the model's linear modules when a role or pattern matches nothing.
    """
    if target_modules:
        patterns = {pattern: pattern for pattern in target_modules}
    else:
        patterns = patterns_for(model, list(lora_module or []), role_patterns)
    heads = tuple(head_module_names(model) if heads is None else heads)
    linears = [n for n in linear_module_names(model) if not any(n == h or n.startswith(h + ".") for h in heads)]
    targets: dict[str, str] = {}
    for role, pattern in patterns.items():
        try:
            regex = re.compile(pattern)
        except re.error as err:
            raise ModelError(f"method.target_modules: {pattern!r} is not a valid regular expression ({err})") from None
        matched = [n for n in linears if regex.search(n)]
        if not matched:
            raise ModelError(
                f"module {role!r} matches no linear module of this model ({type(model).__name__}); "
                f"its linear modules are: {_abbreviate(linears)}")
        for name in matched:
            targets.setdefault(name, role)
    return dict(sorted(targets.items(), key=lambda kv: _natural_key(kv[0])))


def _natural_key(name: str) -> list:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def _abbreviate(names: list[str], limit: int = 16) -> str:
    """Collapse layer indices so the list of linear modules stays readable."""
    collapsed = list(dict.fromkeys(re.sub(r"\.\d+\.", ".N.", n) for n in names))
    shown = ", ".join(collapsed[:limit])
    return shown + (f", ... ({len(collapsed) - limit} more)" if len(collapsed) > limit else "")
