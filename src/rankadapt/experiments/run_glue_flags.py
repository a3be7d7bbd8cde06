"""The flags of the official ``run_glue.py`` scripts, as :mod:`.run_glue` reads them.

What a pasted command runs with when a flag is absent (transformers' ``TrainingArguments`` defaults);
which flag sets which rankadapt key; the flags handled specially, the booleans and the flags accepted
and ignored (with the reason printed); the registered methods' own flags and selectors; the argparse
parser over all of them; and the translation of the flags that set more than one key or can be an
error (task name, output directory, tokenizer, SoRA's λ schedule, Cutoff, precision, resume).
"""

from __future__ import annotations

import argparse
from typing import Any

from ..core.errors import ConfigError
from ..methods import registered_policies
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


def _value(flag: str, value: Any) -> Any:
    if flag == "max_steps" and value <= 0:
        return None  # HF's -1 means "use num_train_epochs"
    if flag == "metric_for_best_model":
        return str(value).removeprefix("eval_")
    return value


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
    # The official scripts trained in fp32 unless --fp16/--bf16 was given: a pasted command means that,
    # not rankadapt's hardware-chosen default (train.mixed_precision=auto).
    tree["train"]["mixed_precision"] = "bf16" if flags.get("bf16") else "fp16" if flags.get("fp16") else "no"
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
