"""``rankadapt sweep SWEEP.yaml``: a grid over methods × seeds × tasks × models, one run directory each.

A sweep file::

    name: glue-small
    output_root: runs/sweeps/{name}      # run directories: {output_root}/{task}/{model}/{method}-seed{seed}
    base:                                # a run configuration shared by every run (model/data/method/train)
      data: {max_length: 128}
      method: {lora_module: [query, value], budget: 82944}
      train: {epochs: 3, learning_rate: 1.0e-3}
    tasks: [sst2, {name: rte, data: {max_length: 256}}]      # a name, or name + section overrides
    models: [sentence-transformers/all-MiniLM-L6-v2]          # optional; default: base model.name
    methods:                                                  # a name, or name + method keys + section overrides
      - none
      - {name: full, train: {learning_rate: 5.0e-5, batch_size: 8}}
      - {name: adalora, label: adalora-r3, lora_r: 3, mask_interval: 1}
    seeds: [0, 1, 2]

Later entries win: base < model entry < task entry < method entry < command-line overrides
(``rankadapt sweep FILE train.epochs=1``). A ``method:`` block in ``base`` or
in a task/model entry is shared: each key goes to the methods that read it (``budget`` and
``lora_module`` are not given to ``none``/``full``), and a key no method of the sweep reads is an
error, so a typo cannot change nothing. A method entry's own keys are strict.

Runs are ordered seeds outermost, so a sweep stopped early has every method on every task for the
first seeds. Running them (skipping finished runs, resuming interrupted ones) is
:mod:`rankadapt.experiments.runner`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from ..core.config import RunConfig, method_keys
from ..core.config_files import _deep_merge, build_config, parse_overrides, read_yaml
from ..core.errors import ConfigError

SECTIONS = ("model", "data", "task_options", "method", "train")
"""The run-config sections a sweep entry (or a command-line override) may set."""


class SweepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "sweep"
    description: str | None = None
    output_root: str = "runs/sweeps/{name}"
    base: dict[str, Any] = {}
    tasks: list[str | dict[str, Any]] | None = None
    models: list[str | dict[str, Any]] | None = None
    methods: list[str | dict[str, Any]]
    seeds: list[int] = [42]


@dataclass(frozen=True)
class Entry:
    """One value of a grid axis: its name, the label used in directory names and reports, overrides."""

    name: str
    label: str
    overrides: dict[str, Any]


@dataclass(frozen=True)
class SweepRun:
    task: str
    model: str
    method: str
    seed: int
    config: RunConfig

    @property
    def run_dir(self) -> Path:
        return self.config.resolved_output_dir()

    @property
    def labels(self) -> dict[str, Any]:
        return {"task": self.task, "model": self.model, "method": self.method, "seed": self.seed}

    def describe(self) -> str:
        return f"{self.task} / {self.model} / {self.method} / seed {self.seed}"


@dataclass
class Sweep:
    name: str
    root: Path
    runs: list[SweepRun]
    source: str | None = None


# ==================================================================================================
# Loading and expanding
# ==================================================================================================

def is_sweep_file(path: str | Path) -> bool:
    """A YAML file with ``methods:`` (a sweep) rather than a run configuration."""
    data = read_yaml(path)
    return "methods" in data or "base" in data


def load_sweep(path: str | Path, overrides: list[str] | None = None) -> Sweep:
    """Read, apply ``key=value`` overrides, validate and expand a sweep file into its runs.

    Overrides of a section (``data.dir=...``, ``train.epochs=1``) apply to every run and win over the
    file's entries, like the last word on a command line; ``seeds=[0]``, ``methods=[lora]``,
    ``tasks=[rte]`` select; ``output_root=...`` redirects.
    """
    raw = read_yaml(path)
    tree = parse_overrides(overrides or [])
    forced = {key: tree.pop(key) for key in (*SECTIONS, "init_from") if key in tree}
    listed = raw.get("methods")
    declared = [_entry(e, "methods").name for e in listed] if isinstance(listed, list) else None
    for axis in ("tasks", "models", "methods"):
        if axis in tree:
            raw[axis] = _select(raw.get(axis), _as_list(tree.pop(axis)), axis)
    if "seeds" in tree:
        raw["seeds"] = _as_list(tree.pop("seeds"))
    raw.update(tree)
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as err:
        lines = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()]
        raise ConfigError(f"invalid sweep file {path}:\n  " + "\n  ".join(lines)) from None
    return expand(spec, source=str(path), forced=forced, declared=declared)


def _as_list(value: Any) -> list:
    """``[lora,none]`` (YAML) or ``lora,none`` (a plain comma-separated string) as a list."""
    if isinstance(value, list):
        return value
    return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else [value]


def _select(in_file: list | None, wanted: list, axis: str) -> list:
    """``methods=lora,none``: keep the file's entries with those labels (or plain new entries)."""
    by_label = {_entry(e, axis).label: e for e in (in_file or [])}
    return [by_label.get(str(w), w) if isinstance(w, (str, int)) else w for w in wanted]


def _entry(raw: Any, axis: str) -> Entry:
    kind = axis.rstrip("s")
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, dict) or "name" not in raw:
        raise ConfigError(f"{axis}: entry {raw!r} needs a name (a string, or a mapping with name:)")
    raw = dict(raw)
    name = str(raw.pop("name"))
    label = str(raw.pop("label", name.rstrip("/").split("/")[-1] if kind == "model" else name))
    if not label or "/" in label or label.startswith("."):
        raise ConfigError(f"{axis}: label {label!r} cannot name a directory; set label: to a plain word")
    overrides = {s: raw.pop(s) for s in SECTIONS if s in raw}
    if kind == "method":
        overrides["method"] = {**(overrides.get("method") or {}), **raw}
        raw = {}
    if raw:
        raise ConfigError(f"{axis}: {label} has unknown keys {', '.join(sorted(raw))}; put settings under "
                          f"{', '.join(s + ':' for s in SECTIONS)}")
    for section, value in overrides.items():
        if not isinstance(value, dict):
            raise ConfigError(f"{axis}: {label}: {section} must be a mapping of settings, got {value!r}")
    return Entry(name, label, overrides)


def _axis(raw: list | None, axis: str, default: str) -> list[Entry]:
    entries = [_entry(e, axis) for e in (raw if raw else [default])]
    labels = [e.label for e in entries]
    duplicated = sorted({x for x in labels if labels.count(x) > 1})
    if duplicated:
        raise ConfigError(f"{axis}: {', '.join(duplicated)} appears twice; give the variants distinct label: values")
    return entries


def expand(spec: SweepSpec, source: str | None = None, forced: dict[str, Any] | None = None,
           declared: list[str] | None = None) -> Sweep:
    """The runs of ``spec``; ``forced`` settings (command-line overrides) are applied last to every run.

    Shared method keys of the file are checked against ``declared``, the methods the file lists (a
    selection such as ``methods=none`` does not make them errors); ``forced`` ones against the runs.
    """
    base = copy.deepcopy(spec.base)
    forced = forced or {}
    if "output_dir" in base:
        raise ConfigError("the sweep's base sets output_dir; every run's directory comes from output_root")
    if "name" in (base.get("method") or {}):
        raise ConfigError("the sweep's base sets method.name; list the methods under methods:")
    if "seed" in (base.get("train") or {}) or "seed" in (forced.get("train") or {}):
        raise ConfigError("train.seed is set for the whole sweep; list the seeds under seeds: (or seeds=[...])")
    tasks = _axis(spec.tasks, "tasks", (base.get("data") or {}).get("task", "imdb"))
    models = _axis(spec.models, "models", (base.get("model") or {}).get("name", RunConfig().model.name))
    methods = _axis(spec.methods, "methods", "lora")
    if not spec.seeds or len(set(spec.seeds)) != len(spec.seeds):
        raise ConfigError(f"seeds: {spec.seeds} must list at least one seed, each once")
    _check_shared_method_keys([("base", base)] + [(e.label, e.overrides) for e in tasks + models],
                              declared or [m.name for m in methods])
    _check_shared_method_keys([("command line", forced)], [m.name for m in methods])
    root = Path(spec.output_root.format(name=spec.name))
    runs = [_make_run(base, task, model, method, seed, root, forced)
            for seed in spec.seeds for task in tasks for model in models for method in methods]
    return Sweep(spec.name, root, runs, source)


def _check_shared_method_keys(blocks: list[tuple[str, dict[str, Any]]], methods: list[str]) -> None:
    read = set().union(*(method_keys(m) for m in methods)) | {"modules_to_save"}
    for where, sections in blocks:
        unread = sorted(set(sections.get("method") or {}) - read)
        if unread:
            raise ConfigError(f"{where}: method.{', method.'.join(unread)} is read by no method of this sweep "
                              f"({', '.join(dict.fromkeys(methods))}); remove it or check the spelling")


def _shared(overrides: dict[str, Any], method: str) -> dict[str, Any]:
    """A shared block with only the method keys ``method`` reads."""
    result = {k: v for k, v in overrides.items() if k != "method"}
    keys = method_keys(method) | {"modules_to_save"}
    result["method"] = {k: v for k, v in (overrides.get("method") or {}).items() if k in keys}
    return result


def _make_run(base: dict[str, Any], task: Entry, model: Entry, method: Entry, seed: int, root: Path,
              forced: dict[str, Any]) -> SweepRun:
    data = _shared(base, method.name)
    data = _deep_merge(data, {"model": {"name": model.name}})
    data = _deep_merge(data, _shared(model.overrides, method.name))
    data = _deep_merge(data, {"data": {"task": task.name}})
    data = _deep_merge(data, _shared(task.overrides, method.name))
    data = _deep_merge(data, method.overrides)
    data = _deep_merge(data, _shared(forced, method.name))
    data = _deep_merge(data, {"method": {"name": method.name}, "train": {"seed": seed}})
    data["output_dir"] = str(root / task.label / model.label / f"{method.label}-seed{seed}")
    try:
        config = build_config(data)
    except ConfigError as err:
        where = f"{task.label} / {model.label} / {method.label} / seed {seed}"
        raise ConfigError(f"sweep run {where}: {err}") from None
    return SweepRun(task.label, model.label, method.label, seed, config)
