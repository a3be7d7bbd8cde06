"""``rankadapt run-glue``: the command lines of the source repositories' ``run_glue.py`` scripts.

A user pastes an official command (microsoft/LoRA, AdaLoRA, ElaLoRA, SoRA, RM-LoRA), replacing
``python examples/text-classification/run_glue.py`` by ``rankadapt run-glue`` (a leading
``python [-m torch.distributed.launch ...] .../run_glue.py`` is also skipped). Those scripts parse
their flags with Hugging Face's argparse-based ``HfArgumentParser``, so this module uses argparse
too: booleans accept ``--flag`` or ``--flag true``, and unambiguous prefixes work (``--logging_step``).
Training settings a command leaves out take the scripts' defaults (transformers' ``TrainingArguments``:
learning rate 5e-5, batch 8, no weight decay, 3 epochs, evaluation at the end only), not rankadapt's.

Which method the flags select, as in the official scripts:
``--apply_elalora`` → elalora; ``--apply_adalora`` → adalora (``--lora_type svd`` is their SVD form);
``--train_sparse`` → sora; ``--random_rank`` or ``--lora_type v1|v2`` → rmlora; ``--apply_lora`` →
lora; none of them → full fine-tuning with ``--do_train``, or the untouched pretrained model (``none``)
with only ``--do_eval``. ``--lora_path`` evaluates a loralib checkpoint (with ``--do_eval`` alone) or
starts training from it (``init_from``). GLUE task names are lowercased (``SST-2`` → sst2,
``mnli-m`` → mnli); ``--lora_module`` is comma-separated. Trailing ``key=value`` arguments are
rankadapt overrides (``data.dir=../shared/data``).

Flags that change nothing here (logging, saving, hub, tqdm ...) are accepted with a printed note;
flags that cannot apply (another tokenizer, SoRA's λ schedule, an unknown flag) are a
:class:`~rankadapt.core.errors.ConfigError` that says why.

The flag tables, the parser and the translation of single flags are in :mod:`.run_glue_flags`; this
module turns a whole command line into a :class:`GlueCommand` (method, action, configuration) and runs it.
"""

from __future__ import annotations

import argparse
import difflib
from dataclasses import dataclass, field
from typing import Any

from ..core.config import RunConfig
from ..core.config_files import _deep_merge, build_config, parse_overrides
from ..core.errors import ConfigError
from ..methods import policy_class, registered_policies
from .run_glue_flags import (_BOOLS, _IGNORED, _VALUES, HF_TRAINING_DEFAULTS, TASK_ALIASES,  # noqa: F401  (re-exported)
                             _bool, _parser, _selector_flags, _special, _value, method_flags)


@dataclass
class GlueCommand:
    """A parsed official command line: the run configuration and what to do with it."""

    config: RunConfig
    action: str
    """``train`` (train, then evaluate), ``eval`` (evaluate the untouched model) or ``eval-loralib``."""
    lora_path: str | None = None
    notes: list[str] = field(default_factory=list)


def _strip_launcher(args: list[str], notes: list[str]) -> list[str]:
    """Drop ``python [-m torch.distributed.launch ...] path/run_glue.py`` in front of the flags."""
    for i, token in enumerate(args):
        if token.startswith("--model_name_or_path"):
            break
        if token.endswith(".py"):
            notes.append(f"skipped the launcher {' '.join(args[:i + 1])!r}; rankadapt runs in this process "
                         "(use torchrun/accelerate launch -m rankadapt for several GPUs)")
            return args[i + 1:]
    return args


def parse_glue_args(argv: list[str]) -> GlueCommand:
    """The run configuration an official ``run_glue.py`` command line asks for."""
    notes: list[str] = []
    argv = _strip_launcher(list(argv), notes)
    overrides = [a for a in argv if "=" in a and not a.startswith("-")]
    argv = [a for a in argv if a not in overrides]
    parser = _parser()
    try:
        ns, unknown = parser.parse_known_args(argv)
    except SystemExit:  # argparse already printed why (a missing value, an ambiguous prefix)
        raise ConfigError("run-glue: the flags above could not be parsed; see the message before this one") from None
    _reject_unknown(unknown, parser)
    given = {k: v for k, v in vars(ns).items() if v is not None}
    if "model_name_or_path" not in given:
        raise ConfigError("run-glue needs --model_name_or_path (as the official scripts do)")
    own = method_flags()
    booleans = {*_BOOLS, *_selector_flags(), *(flag for flag, (kind, _) in own.items() if kind is bool)}
    flags = {k: _bool(v, k) for k, v in given.items() if k in booleans}
    method = _select_method(given, flags)
    tree: dict[str, Any] = {"train": dict(HF_TRAINING_DEFAULTS)}
    _drop_ignored_flags(given, method, notes)
    for flag, value in given.items():
        if flag in _VALUES:
            _set(tree, _VALUES[flag][1], _value(flag, value))
        elif flag in own:
            _set(tree, f"method.{flag}", flags[flag] if flag in flags else value)
    _check_method_flags(given, method, own)
    tree = _deep_merge(tree, _special(given, flags, method, notes))
    for flag in sorted(set(given) & set(_IGNORED)):
        notes.append(f"--{flag} is ignored" + (f": {_IGNORED[flag]}" if _IGNORED[flag] else ""))
    action = _action(given, flags, method, notes)
    tree.setdefault("method", {})["name"] = "none" if action == "eval" else method
    if action == "train" and given.get("lora_path"):
        tree["init_from"] = given["lora_path"]
    config = build_config(_deep_merge(tree, parse_overrides(overrides)))
    return GlueCommand(config, action, given.get("lora_path"), notes)


def _reject_unknown(unknown: list[str], parser: argparse.ArgumentParser) -> None:
    flags = [u for u in unknown if u.startswith("-")]
    if flags:
        known = [a for action in parser._actions for a in action.option_strings]
        bad = flags[0].split("=")[0]
        close = difflib.get_close_matches(bad, known, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ConfigError(f"run-glue: unknown flag {bad}{hint} (rankadapt accepts the flags of the official "
                          "run_glue.py scripts; rankadapt settings go after them as key=value)")
    if unknown:
        raise ConfigError(f"run-glue: unexpected argument {unknown[0]!r}; flags take one value each "
                          "(--lora_module takes a comma-separated list: query,value)")


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    section, key = dotted.split(".")
    tree.setdefault(section, {})[key] = value


def _select_method(given: dict[str, Any], flags: dict[str, bool | None]) -> str:
    """The method the flags ask for: each method module says which flags select it (policy.glue_selectors,
    policy.selected_by_glue); plain LoRA's --apply_lora only counts when no other method is selected."""
    lora_type = given.get("lora_type")
    if lora_type is not None and lora_type not in ("svd", "v1", "v2"):
        raise ConfigError(f"--lora_type {lora_type}: rankadapt implements svd (AdaLoRA/ElaLoRA) and v1/v2 (RM-LoRA)")
    policies = registered_policies()
    chosen = [name for name, policy in policies.items()
              if not policy.glue_fallback and policy.selected_by_glue(given, flags)]
    if len(chosen) > 1:
        raise ConfigError(f"run-glue: the flags select several methods ({', '.join(chosen)}); keep one")
    if lora_type == "svd" and chosen not in (["adalora"], ["elalora"]):
        raise ConfigError("--lora_type svd is the SVD form of AdaLoRA/ElaLoRA; add --apply_adalora or --apply_elalora")
    if chosen:
        return chosen[0]
    fallback = [name for name, policy in policies.items() if policy.glue_fallback and policy.selected_by_glue(given, flags)]
    return fallback[0] if fallback else "full"


def _drop_ignored_flags(given: dict[str, Any], method: str, notes: list[str]) -> None:
    """Flags the official script of ``method`` accepts and ignores (ElaLoRA's final-rank flags)."""
    for flag, why in policy_class(method).glue_ignored.items():
        if given.pop(flag, None) is not None:
            notes.append(f"--{flag} is ignored: {why}")


def _check_method_flags(given: dict[str, Any], method: str, own: dict[str, tuple[type, list[str]]]) -> None:
    for flag in given:
        if flag in own and method not in own[flag][1]:
            raise ConfigError(f"--{flag} applies to {', '.join(own[flag][1])}, but these flags select {method}; "
                              f"remove --{flag} or add the flag of the method it belongs to")


def _action(given: dict[str, Any], flags: dict[str, bool | None], method: str, notes: list[str]) -> str:
    if flags.get("do_predict"):
        notes.append("--do_predict is ignored: GLUE test labels are not public; rankadapt reports the dev split")
    if flags.get("do_train"):
        if given.get("lora_path"):
            notes.append(f"--lora_path with --do_train: training starts from {given['lora_path']} (init_from)")
        return "train"
    if not flags.get("do_eval"):
        raise ConfigError("run-glue: nothing to do; add --do_train (train, then evaluate) and/or --do_eval")
    if given.get("lora_path"):
        return "eval-loralib"
    if method != "full":
        raise ConfigError(f"--do_eval without --do_train and without --lora_path has no {method} adapter to evaluate; "
                          "add --do_train, --lora_path CHECKPOINT, or drop the method flags to evaluate the pretrained model")
    notes.append("--do_eval without --do_train: evaluating the pretrained model untouched (method none, fresh head)")
    return "eval"


def run_glue_command(command: GlueCommand) -> dict[str, Any]:
    """Do what the command asks; returns results.json's record (train, eval) or the metrics (loralib)."""
    if command.action == "eval-loralib":
        from ..recipes.evaluate import evaluate_loralib

        return evaluate_loralib(command.config, command.lora_path)
    from ..recipes.finetune import train

    return train(command.config)
