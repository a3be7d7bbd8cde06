"""What may change when a run is resumed.

A resume continues the run its ``config.yaml`` describes. Settings that only say how the run is
watched or where it runs may change (:data:`SAFE_ON_RESUME`), and so may the length of training, if
it grows ("train for longer"; the learning-rate schedule then decays over the new total), except for
AdaLoRA and ElaLoRA, whose rank schedule is laid out over the first total. Every such
change is recorded (a ``config_changed`` event in ``metrics.jsonl`` and the updated
``config.yaml``). Any other change (method, rank, model, data, seed, batch, learning rate ...) would
silently mix two runs: it is refused, listing each changed key.
"""

from __future__ import annotations

from typing import Any

import yaml

from ..core.errors import ConfigError

SAFE_ON_RESUME = frozenset({
    "train.eval_strategy", "train.eval_steps", "train.logging_steps", "train.eval_batch_size", "train.num_workers",
    "train.progress", "train.tensorboard", "train.threads", "train.device", "train.save_final_checkpoint",
    "train.reuse_freed_memory",
    "data.cache_dir", "data.dir",
})
LONGER_ON_RESUME = frozenset({"train.epochs", "train.max_steps"})
SCHEDULED_METHODS = ("adalora", "elalora")
"""Their rank schedule (t_i, t_f, T) is fixed by the first start: a longer run is another run."""
IGNORED = frozenset({"train.resume", "output_dir"})


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def config_changes(saved_yaml: str, new_yaml: str) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (run's value, new value)}`` for every setting that differs (ignoring resume itself)."""
    old, new = flatten(yaml.safe_load(saved_yaml) or {}), flatten(yaml.safe_load(new_yaml) or {})
    keys = [k for k in dict.fromkeys([*old, *new]) if k not in IGNORED]
    return {k: (old.get(k), new.get(k)) for k in keys if old.get(k) != new.get(k)}


def check_resume_changes(changes: dict[str, tuple[Any, Any]], run_dir: Any, longer: bool) -> None:
    """Refuse the changes that would mix two runs, naming each one; ``longer``: the new settings give
    more optimizer steps than the run had (then train.epochs/max_steps may change)."""
    unsafe = {k: v for k, v in changes.items() if not (k in SAFE_ON_RESUME or (k in LONGER_ON_RESUME and longer))}
    if not unsafe:
        return
    listed = "\n  ".join(f"{k}: {old!r} in the run, {new!r} now" for k, (old, new) in unsafe.items())
    raise ConfigError(f"train.resume=true would continue {run_dir} with other settings than it was trained with:\n  "
                      f"{listed}\nthe rest of the run would not be the run it resumes. Resume with the run's own "
                      f"settings (rankadapt train {run_dir}/config.yaml train.resume=true), or start a new run in "
                      "another output_dir. Only the evaluation/logging frequency, devices, workers and caches may "
                      "change, and train.epochs/max_steps may grow.")

