"""Loading a run configuration: defaults, then a YAML file, then dotted ``key=value`` overrides, validated
into a :class:`~rankadapt.core.config.RunConfig`; pydantic's errors become one
:class:`~rankadapt.core.errors.ConfigError` whose lines name each key and the fix."""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from .config import RunConfig
from .errors import ConfigError


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
