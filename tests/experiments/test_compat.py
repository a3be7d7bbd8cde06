"""``rankadapt run-glue``: official command lines parse into the right configuration; flags that cannot
apply are clear errors; a tiny run end to end."""

from __future__ import annotations

import json
import shlex

import pytest
from typer.testing import CliRunner

from rankadapt.cli import app
from rankadapt.core.errors import ConfigError
from rankadapt.experiments.run_glue import parse_glue_args

from helpers import make_model_dir, sentiment_rows, write_csv

runner = CliRunner()
SIX = ["query", "key", "value", "intermediate", "layer.output", "attention.output"]

# The ElaLoRA README's RTE command (DeBERTaV3-base), with its launcher.
ELALORA_RTE = """python -m torch.distributed.launch --master_port=8679 --nproc_per_node=1 \
examples/text-classification/run_glue.py --model_name_or_path microsoft/deberta-v3-base --task_name rte \
--apply_elalora --apply_lora --lora_r 10 --init_warmup 300 --final_warmup 500 --mask_interval 50 --b 4 --k 2 \
--lora_module query,key,value,intermediate,layer.output,attention.output --lora_alpha 16 --do_train --do_eval \
--max_seq_length 256 --per_device_train_batch_size 64 --learning_rate 1.2e-3 --num_train_epochs 50 \
--warmup_steps 1000 --cls_dropout 0.15 --weight_decay 0 --evaluation_strategy steps --eval_steps 3000 \
--save_strategy steps --save_steps 30000 --logging_steps 500 --seed 6 --enable_scheduler True \
--root_output_dir ./ela_debertabase/glue/rte --overwrite_output_dir"""


def parse(command: str):
    return parse_glue_args(shlex.split(command))


def test_the_elalora_rte_command_parses_into_the_right_config():
    cmd = parse(ELALORA_RTE)
    c = cmd.config
    assert cmd.action == "train"
    assert (c.model.name, c.model.cls_dropout, c.data.task, c.data.max_length) == ("microsoft/deberta-v3-base", 0.15, "rte", 256)
    m = c.method
    assert (m.name, m.lora_r, m.lora_alpha, m.lora_module) == ("elalora", 10, 16.0, SIX)
    assert (m.init_warmup, m.final_warmup, m.mask_interval, m.b, m.k, m.enable_scheduler) == (300, 500, 50, 4, 2, True)
    t = c.train
    assert (t.batch_size, t.learning_rate, t.epochs, t.warmup_steps, t.weight_decay, t.seed) == (64, 1.2e-3, 50, 1000, 0, 6)
    assert (t.eval_strategy, t.eval_steps, t.logging_steps, t.export) == ("steps", 3000, 500, "last")
    assert c.output_dir == "./ela_debertabase/glue/rte"
    notes = "\n".join(cmd.notes)
    assert "skipped the launcher" in notes and "--save_steps is ignored" in notes and "--overwrite_output_dir" in notes
    # ElaLoRA's script takes AdaLoRA's --target_rank and ignores it; so does run-glue, saying so.
    pasted = parse(ELALORA_RTE + " --target_rank 8")
    assert pasted.config.method.name == "elalora" and "target_rank" not in pasted.config.method.model_dump()
    assert any("--target_rank is ignored: ElaLoRA keeps the initial total rank" in n for n in pasted.notes)


@pytest.mark.parametrize("command, method, expected", [
    # AdaLoRA (official SST-2 script, shortened)
    ("--model_name_or_path m --task_name SST-2 --apply_lora --apply_adalora --lora_type svd --target_rank 1 --lora_r 2 "
     "--reg_orth_coef 0.1 --init_warmup 6000 --final_warmup 22000 --mask_interval 100 --beta1 0.85 --beta2 0.85 "
     "--lora_module query,value --do_train --do_eval",
     "adalora", {"target_rank": 1, "lora_r": 2, "init_warmup": 6000, "mask_interval": 100, "lora_module": ["query", "value"]}),
    # SoRA (official script, shortened): --train_sparse, HF's --max_steps -1, the same tokenizer
    ("--model_name_or_path m --tokenizer_name m --task_name mnli-m --sparse_lambda 10 --sparse_lambda_2 3e-4 "
     "--lora_r 8 --max_steps -1 --train_sparse --do_train --do_eval --disable_tqdm true",
     "sora", {"sparse_lambda": 10.0, "sparse_lambda_2": 3e-4, "lora_r": 8}),
    # RM-LoRA (official script, shortened): --dataset_name path, an abbreviated --logging_step
    ("--model_name_or_path m --dataset_name /data/glue/mrpc --apply_lora --lora_r 8 --random_rank 4 "
     "--reg_orth_coef 0.1 --lora_type v2 --do_train --do_eval --logging_step 10",
     "rmlora", {"random_rank": 4, "lora_type": "v2", "lora_r": 8}),
    # microsoft/LoRA
    ("--model_name_or_path roberta-base --task_name rte --apply_lora --lora_r 8 --lora_alpha 8 --do_train",
     "lora", {"lora_r": 8, "lora_alpha": 8.0}),
    ("--model_name_or_path m --task_name cola --do_train", "full", {}),
])
def test_official_command_lines_select_the_method_and_its_settings(command, method, expected):
    cmd = parse(command)
    assert cmd.config.method.name == method
    for key, value in expected.items():
        assert getattr(cmd.config.method, key) == value, key


def test_cutoff_and_rdrop_flags_of_the_lora_repository_scripts():
    """microsoft/LoRA's mnli.cutoff.sh and mnli.rdrop.sh (shortened): the consistency options land in train.*,
    the official SoRA command's ξ keeps its per-step meaning."""
    cutoff = parse("--model_name_or_path m --task_name mnli --apply_lora --lora_r 16 --do_train --do_aug "
                   "--aug_type span_cutoff --aug_cutoff_ratio 0.1 --aug_ce_loss 1.0 --aug_js_loss 1.0").config.train
    assert (cutoff.aug_type, cutoff.aug_cutoff_ratio) == ("span_cutoff", 0.1)
    assert (cutoff.aug_ce_loss, cutoff.aug_js_loss) == (1.0, 1.0)
    assert cutoff.reg_loss_wgt == 0.0
    rdrop = parse("--model_name_or_path m --task_name mnli --apply_lora --do_train --reg_loss_wgt 1.0").config.train
    assert rdrop.reg_loss_wgt == 1.0 and rdrop.aug_type is None
    sora = parse("--model_name_or_path m --task_name rte --train_sparse --sparse_lambda_2 0.005 "
                 "--do_train").config.method
    assert sora.prox_threshold == "xi" and sora.sparse_lambda_2 == 0.005


@pytest.mark.parametrize("flags, precision", [("", "no"), ("--fp16", "fp16"), ("--bf16", "bf16")])
def test_an_official_command_trains_in_the_precision_it_asked_for(flags, precision):
    """The official scripts trained in fp32 without --fp16: a pasted command does not take rankadapt's
    hardware-chosen default (train.mixed_precision=auto)."""
    command = parse(f"--model_name_or_path m --task_name rte --apply_lora --do_train {flags}")
    assert command.config.train.mixed_precision == precision


@pytest.mark.parametrize("flags, message", [
    ("--do_aug", "--do_aug needs --aug_type"),
    ("--aug_type span_cutoff", "applies only with --do_aug"),
    ("--do_aug --aug_type word_cutoff", "aug_type"),
    ("--do_aug --aug_type token_cutoff --reg_loss_wgt 1", "choose one of them"),
    ("--do_aug --aug_type dim_cutoff --aug_ce_loss 0 --aug_js_loss 0", "trains nothing"),
])
def test_cutoff_flags_that_cannot_apply_are_clear_errors(flags, message):
    with pytest.raises(ConfigError, match=message):
        parse(f"--model_name_or_path m --task_name rte --apply_lora --do_train {flags}")


def test_task_names_defaults_and_trailing_overrides():
    cmd = parse("--model_name_or_path m --task_name MNLI-mm --apply_lora --do_train data.dir=/data train.progress=false")
    c = cmd.config
    assert (c.data.task, c.data.dir, c.train.progress) == ("mnli", "/data", False)
    # What the official scripts do without the flags (transformers' TrainingArguments), not rankadapt's defaults.
    assert (c.train.learning_rate, c.train.batch_size, c.train.weight_decay, c.train.eval_strategy) == (5e-5, 8, 0.0, "no")
    assert parse("--model_name_or_path m --task_name rte --do_eval").action == "eval"
    assert parse("--model_name_or_path m --task_name rte --do_eval").config.method.name == "none"
    loralib = parse("--model_name_or_path m --task_name rte --apply_lora --lora_path x.bin --do_eval --lora_alpha 32")
    assert (loralib.action, loralib.lora_path, loralib.config.method.lora_alpha) == ("eval-loralib", "x.bin", 32.0)
    chained = parse("--model_name_or_path m --task_name mrpc --apply_lora --lora_path mnli.bin --do_train")
    assert chained.config.init_from == "mnli.bin"


@pytest.mark.parametrize("command, message", [
    ("--model_name_or_path m --task_name rte --learnig_rate 1e-3 --do_train", "did you mean --learning_rate"),
    ("--model_name_or_path m --task_name rte --apply_adalora --apply_elalora --do_train", "several methods"),
    ("--model_name_or_path m --task_name rte --apply_lora --lora_type svd --do_train", "add --apply_adalora"),
    ("--model_name_or_path m --task_name rte --apply_lora --target_rank 2 --do_train", "--target_rank applies to adalora"),
    ("--model_name_or_path m --task_name rte --train_sparse --lambda_schedule linear --do_train", "not implemented"),
    ("--model_name_or_path m --task_name rte --train_sparse --sparse_lr 1e-2 --learning_rate 1e-3 --do_train",
     "drop --sparse_lr"),
    ("--model_name_or_path m --tokenizer_name other --task_name rte --do_train", "uses the tokenizer and config"),
    ("--model_name_or_path m --task_name rte", "nothing to do"),
    ("--model_name_or_path m --task_name rte --apply_lora --do_eval", "no lora adapter to evaluate"),
    ("--model_name_or_path m --task_name squad --do_train", "unknown task"),
    ("--task_name rte --do_train", "needs --model_name_or_path"),
    ("--model_name_or_path m --task_name rte --lora_module query value --apply_lora --do_train", "comma-separated"),
])
def test_flags_that_cannot_apply_are_clear_errors(command, message):
    with pytest.raises(ConfigError, match=message):
        parse(command)


def test_run_glue_end_to_end_on_a_tiny_model(tmp_path):
    model = make_model_dir(tmp_path / "tiny")
    train = write_csv(tmp_path / "train.csv", sentiment_rows(32, seed=1))
    dev = write_csv(tmp_path / "dev.csv", sentiment_rows(16, seed=2))
    out = tmp_path / "out"
    args = (f"--model_name_or_path {model} --train_file {train} --validation_file {dev} --apply_lora --lora_r 4 "
            f"--max_seq_length 16 --per_device_train_batch_size 8 --num_train_epochs 1 --learning_rate 5e-3 "
            f"--do_train --do_eval --output_dir {out} --report_to none data.cache_dir={tmp_path / 'cache'} "
            "train.progress=false")
    shown = runner.invoke(app, ["run-glue", "--show-config", *shlex.split(args)])
    assert shown.exit_code == 0, shown.output
    assert "name: lora" in shown.output and "# action: train" in shown.output
    result = runner.invoke(app, ["run-glue", *shlex.split(args)])
    assert result.exit_code == 0, result.output
    assert "--report_to is ignored" in result.output
    results = json.loads((out / "results.json").read_text())
    assert results["method"] == "lora" and results["steps"] == 4 and results["task"] == "custom"
    bad = runner.invoke(app, ["run-glue", "--model_name_or_path", str(model), "--task_nam", "rte", "--bogus_flag", "1"])
    assert bad.exit_code == 2 and "unknown flag --bogus_flag" in bad.output and "Traceback" not in bad.output
