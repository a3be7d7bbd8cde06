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
from ..tasks.text_classification.specs import TASKS

# What the official scripts do when a flag is absent (transformers' TrainingArguments defaults), so a
# pasted command runs with the same settings, not with rankadapt's own defaults.
HF_TRAINING_DEFAULTS = {"learning_rate": 5e-5, "batch_size": 8, "weight_decay": 0.0, "epochs": 3.0,
                        "eval_strategy": "no", "logging_steps": 500, "seed": 42, "max_grad_norm": 1.0}
TASK_ALIASES = {"sst-2": "sst2", "sts-b": "stsb", "mnli-m": "mnli", "mnli-mm": "mnli", "mnli_matched": "mnli"}

# flag: (type, rankadapt key). A method's own flags come from its module (policy.glue_flags) and are checked
# against the method the flags select.
_VALUES: dict[str, tuple[type, str]] = {
    "model_name_or_path": (str, "model.name"), "cls_dropout": (float, "model.cls_dropout"),
    "max_seq_length": (int, "data.max_length"), "max_train_samples": (int, "data.train_limit"),
    "max_eval_samples": (int, "data.eval_limit"), "train_file": (str, "data.train_file"),
    "validation_file": (str, "data.eval_file"), "data_dir": (str, "data.dir"),
    "per_device_train_batch_size": (int, "train.batch_size"),
    "per_device_eval_batch_size": (int, "train.eval_batch_size"),
    "gradient_accumulation_steps": (int, "train.grad_accum"), "learning_rate": (float, "train.learning_rate"),
    "num_train_epochs": (float, "train.epochs"), "max_steps": (int, "train.max_steps"),
    "warmup_steps": (int, "train.warmup_steps"), "warmup_ratio": (float, "train.warmup_ratio"),
    "weight_decay": (float, "train.weight_decay"), "max_grad_norm": (float, "train.max_grad_norm"),
    "seed": (int, "train.seed"), "eval_steps": (int, "train.eval_steps"), "logging_steps": (int, "train.logging_steps"),
    "dataloader_num_workers": (int, "train.num_workers"), "evaluation_strategy": (str, "train.eval_strategy"),
    "eval_strategy": (str, "train.eval_strategy"), "metric_for_best_model": (str, "train.metric_for_best"),
    # Cutoff (with --do_aug --aug_type) and R-drop, as microsoft/LoRA's mnli.cutoff.sh / mnli.rdrop.sh.
    "aug_cutoff_ratio": (float, "train.aug_cutoff_ratio"), "aug_ce_loss": (float, "train.aug_ce_loss"),
    "aug_js_loss": (float, "train.aug_js_loss"), "reg_loss_wgt": (float, "train.reg_loss_wgt"),
}
_SPECIAL_VALUES = ("task_name", "dataset_name", "lora_module", "lora_type", "lora_path", "output_dir",
                   "root_output_dir", "tokenizer_name", "config_name", "sparse_lr", "lambda_schedule", "max_lambda",
                   "lambda_num", "resume_from_checkpoint", "aug_type")
_BOOLS = ("do_train", "do_eval", "do_predict", "apply_lora", "apply_adalora", "apply_elalora", "train_sparse",
          "do_aug", "fp16", "bf16", "no_cuda", "load_best_model_at_end", "pad_to_max_length")
_IGNORED = {
    "logging_dir": "logs go to OUTPUT_DIR/metrics.jsonl and tensorboard/",
    "logging_strategy": "train.logging_steps sets the logging interval", "logging_first_step": "",
    "save_strategy": "checkpoint/ is written at every evaluation; adapter/ holds the exported model",
    "save_steps": "checkpoint/ is written at every evaluation", "save_total_limit": "one checkpoint/ is kept",
    "overwrite_output_dir": "a new run always starts a fresh output directory (train.resume=true continues one)",
    "overwrite_cache": "tokenised data is cached by content", "cache_dir": "", "report_to": "TensorBoard is on by default",
    "run_name": "", "disable_tqdm": "train.progress=false hides the progress bar", "greater_is_better": "",
    "ddp_find_unused_parameters": "", "local_rank": "", "tb_writter_loginterval": "", "wandb_offline": "",
    "use_fast_tokenizer": "", "model_revision": "", "dataloader_drop_last": "", "prediction_loss_only": "",
}


@dataclass
class GlueCommand:
    """A parsed official command line: the run configuration and what to do with it."""

    config: RunConfig
    action: str
    """``train`` (train, then evaluate), ``eval`` (evaluate the untouched model) or ``eval-loralib``."""
    lora_path: str | None = None
    notes: list[str] = field(default_factory=list)


def method_flags() -> dict[str, tuple[type, list[str]]]:
    """The registered methods' run_glue.py flags: flag -> (type, methods that read it)."""
    flags: dict[str, tuple[type, list[str]]] = {}
    for name, policy in registered_policies().items():
        for flag in policy.glue_flags:
            flags.setdefault(flag, (_flag_type(policy.settings.model_fields[flag].annotation), []))[1].append(name)
    return flags


def _flag_type(annotation: Any) -> type:
    """int, float or bool of a settings field (``int | None`` is int)."""
    for kind in (bool, int, float):
        if annotation is kind or kind in getattr(annotation, "__args__", ()):
            return kind
    return str


def _selector_flags() -> list[str]:
    """Boolean flags that select a registered method and are not among the official ones above
    (a method of your own: ``glue_selectors = ("apply_mine",)``)."""
    known = set(_BOOLS) | set(_VALUES) | set(_SPECIAL_VALUES) | set(method_flags())
    return [flag for policy in registered_policies().values() for flag in policy.glue_selectors if flag not in known]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rankadapt run-glue", add_help=False, allow_abbrev=True)
    for flag, (kind, _) in _VALUES.items():
        parser.add_argument(f"--{flag}", type=kind, default=None)
    for flag, (kind, _) in method_flags().items():
        if kind is bool:
            parser.add_argument(f"--{flag}", nargs="?", const="true", default=None)
        else:
            parser.add_argument(f"--{flag}", type=kind, default=None)
    for flag in _SPECIAL_VALUES:
        parser.add_argument(f"--{flag}", default=None)
    for flag in (*_BOOLS, *_selector_flags()):
        parser.add_argument(f"--{flag}", nargs="?", const="true", default=None)
    for flag in _IGNORED:
        parser.add_argument(f"--{flag}", nargs="?", const="true", default=None)
    return parser


def _bool(value: str | None, flag: str) -> bool | None:
    if value is None:
        return None
    lowered = str(value).lower()
    if lowered in ("true", "1", "yes", "y", "t"):
        return True
    if lowered in ("false", "0", "no", "n", "f"):
        return False
    raise ConfigError(f"--{flag} {value}: expected true or false")


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


def _value(flag: str, value: Any) -> Any:
    if flag == "max_steps" and value <= 0:
        return None  # HF's -1 means "use num_train_epochs"
    if flag == "metric_for_best_model":
        return str(value).removeprefix("eval_")
    return value


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


def _special(given: dict[str, Any], flags: dict[str, bool | None], method: str, notes: list[str]) -> dict[str, Any]:
    tree: dict[str, Any] = {"data": {}, "model": {}, "method": {}, "train": {}}
    tree["data"].update(_task(given, notes))
    if "lora_module" in given:
        tree["method"]["lora_module"] = [m.strip() for m in given["lora_module"].split(",") if m.strip()]
    if "lora_type" in given and method == "rmlora":
        tree["method"]["lora_type"] = given["lora_type"]
    out = given.get("output_dir") or given.get("root_output_dir")
    if out:
        tree["output_dir"] = out
    for other in ("tokenizer_name", "config_name"):
        if given.get(other) not in (None, given["model_name_or_path"]):
            raise ConfigError(f"--{other} {given[other]}: rankadapt uses the tokenizer and config of "
                              "--model_name_or_path; give a model directory that holds both")
    _sora_flags(given, notes)
    tree["train"].update(_cutoff_flags(given, flags))
    if flags.get("fp16") or flags.get("bf16"):
        tree["train"]["mixed_precision"] = "bf16" if flags.get("bf16") else "fp16"
    if flags.get("no_cuda"):
        tree["train"]["device"] = "cpu"
    tree["train"]["export"] = "best" if flags.get("load_best_model_at_end") else "last"
    if given.get("resume_from_checkpoint"):
        tree["train"]["resume"] = True
        notes.append("--resume_from_checkpoint: rankadapt resumes from OUTPUT_DIR/checkpoint/")
    if flags.get("pad_to_max_length"):
        notes.append("--pad_to_max_length is ignored: batches are padded to their longest example")
    return {k: v for k, v in tree.items() if v != {}}


def _task(given: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    name = given.get("task_name")
    if name is None and given.get("dataset_name"):
        name = str(given["dataset_name"]).rstrip("/").split("/")[-1]
        notes.append(f"--dataset_name {given['dataset_name']}: read as task {name.lower()} from rankadapt's data "
                     "sources (data.dir=..., $RANKADAPT_DATA_DIR or the hub)")
    if name is None:
        if given.get("train_file"):
            return {"task": "custom"}
        raise ConfigError("run-glue needs --task_name (a GLUE task) or --train_file/--validation_file")
    task = TASK_ALIASES.get(name.lower(), name.lower())
    if task not in TASKS:
        raise ConfigError(f"--task_name {name}: unknown task; choose one of {', '.join(TASKS)}")
    return {"task": task}


def _sora_flags(given: dict[str, Any], notes: list[str]) -> None:
    if given.get("lambda_schedule") not in (None, "none", "None"):
        raise ConfigError("--lambda_schedule: SoRA's schedule over several sparsity levels is not implemented; run "
                          "one sweep per --sparse_lambda_2 value instead (rankadapt sweep)")
    for flag in ("max_lambda", "lambda_num"):
        if flag in given:
            notes.append(f"--{flag} is ignored: it only matters with --lambda_schedule")
    if "sparse_lr" in given and float(given["sparse_lr"]) != float(given.get("learning_rate") or 5e-4):
        raise ConfigError("--sparse_lr: rankadapt trains the gates with --learning_rate (one optimizer); "
                          "drop --sparse_lr or set it equal to --learning_rate")


def _cutoff_flags(given: dict[str, Any], flags: dict[str, bool | None]) -> dict[str, Any]:
    """``--do_aug --aug_type span_cutoff`` → train.aug_type. The official scripts read --aug_type only
    under --do_aug; each without the other is an error here rather than a silent no-op."""
    if flags.get("do_aug") and not given.get("aug_type"):
        raise ConfigError("--do_aug needs --aug_type token_cutoff, span_cutoff or dim_cutoff")
    if given.get("aug_type") and not flags.get("do_aug"):
        raise ConfigError(f"--aug_type {given['aug_type']} applies only with --do_aug (as in the official scripts); "
                          "add --do_aug or remove --aug_type")
    return {"aug_type": given["aug_type"]} if flags.get("do_aug") else {}


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
