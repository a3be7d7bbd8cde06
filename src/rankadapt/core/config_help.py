"""``rankadapt config show --help-keys``: every configuration key with its default, allowed values and
meaning, read from the schema itself (the attribute docstrings under each field; litgpt's habit of
docstrings as help), so the help cannot drift from what is validated."""

from __future__ import annotations

import textwrap
import types
import typing
from dataclasses import dataclass
from typing import Any

import annotated_types
from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from .config import MethodSettings, RunConfig, settings_class

_BOUNDS = {annotated_types.Gt: (">", "gt"), annotated_types.Ge: (">=", "ge"), annotated_types.Lt: ("<", "lt"),
           annotated_types.Le: ("<=", "le")}


@dataclass(frozen=True)
class KeyHelp:
    key: str
    default: str
    allowed: str
    meaning: str


def key_help(model: type[BaseModel], prefix: str = "") -> list[KeyHelp]:
    """One entry per field of ``model`` (sections are not descended into)."""
    rows = []
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            continue
        meaning = field.description or _inherited_description(model, name)
        rows.append(KeyHelp(prefix + name, _default(field), _allowed(field), " ".join(meaning.split())))
    return rows


def _inherited_description(model: type[BaseModel], name: str) -> str:
    """A subclass that narrows a field (``name: Literal["lora"]``) keeps its base class's docstring."""
    for base in model.__mro__[1:]:
        fields = getattr(base, "model_fields", {})
        if name in fields and fields[name].description:
            return fields[name].description
    return ""


def _default(field) -> str:
    if field.default_factory is not None:
        value: Any = field.default_factory()
    else:
        value = None if field.default is PydanticUndefined else field.default
    if isinstance(value, list):
        return "[" + ",".join(map(str, value)) + "]"
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _allowed(field) -> str:
    """``int > 0``, ``longest | max_length``, ``list of str | null`` ... from the annotation and bounds."""
    annotation = field.annotation
    members = typing.get_args(annotation) if _is_union(annotation) else (annotation,)
    shown = [_type_name(m) for m in members if m is not type(None)]
    bounds = [f"{_BOUNDS[type(m)][0]} {getattr(m, _BOUNDS[type(m)][1])}" for m in field.metadata if type(m) in _BOUNDS]
    text = " | ".join(shown) + (f" {', '.join(bounds)}" if bounds else "")
    return text + (" | null" if type(None) in members else "")


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _type_name(kind: Any) -> str:
    if typing.get_origin(kind) is typing.Literal:
        return " | ".join(str(v) for v in typing.get_args(kind))
    if typing.get_origin(kind) is list:
        return "list of " + _type_name(typing.get_args(kind)[0])
    return getattr(kind, "__name__", str(kind))


def _task_option_sections(config: RunConfig, every: bool) -> list[tuple[str, list[KeyHelp]]]:
    """``task_options.`` keys of data.task's family (of every task that has some, with ``every``)."""
    from .config import registered_task_options

    options = registered_task_options()
    chosen = options if every else {config.data.task: type(config.task_options)} if config.task_options else {}
    seen: dict[type, list[str]] = {}
    for task, settings in chosen.items():
        if settings is not None:
            seen.setdefault(settings, []).append(task)
    return [(f"task_options (data.task={' | '.join(tasks)})", key_help(settings, "task_options."))
            for settings, tasks in seen.items()]


def describe_keys(config: RunConfig, all_methods: bool = False, width: int = 100) -> str:
    """The help text: model, data, the method's own keys (or every registered method's), train, the rest."""
    from .config import DataConfig, ModelConfig, TrainConfig, method_names

    methods: list[type[MethodSettings]] = ([settings_class(n) for n in method_names()] if all_methods
                                           else [type(config.method)])
    sections = [("model", key_help(ModelConfig, "model.")), ("data", key_help(DataConfig, "data."))]
    for settings in methods:
        name = settings.model_fields["name"].default
        sections.append((f"method (method.name={name})", key_help(settings, "method.")))
    sections += _task_option_sections(config, all_methods)
    sections += [("train", key_help(TrainConfig, "train.")), ("run", key_help(RunConfig))]
    lines = []
    for title, rows in sections:
        lines.append(f"{title}:")
        for row in rows:
            lines.append(f"  {row.key}  (default {row.default}; {row.allowed})")
            lines.extend(textwrap.wrap(row.meaning, width=width, initial_indent="      ", subsequent_indent="      "))
        lines.append("")
    return "\n".join(lines).rstrip()
