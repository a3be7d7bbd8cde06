"""One channel for status messages (rankadapt.core.messages): the ``rankadapt`` logger on stderr through
``tqdm.write``, set up by the command line only; results alone on stdout."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rankadapt.core.messages import ProgressAwareHandler, setup_messages
from rankadapt.core.progress import bar

from helpers import custom_task_args, make_model_dir

SRC = Path(__file__).resolve().parents[2] / "src"
log = logging.getLogger("rankadapt.tests.messages")


def test_a_message_during_a_bar_clears_it_writes_its_line_and_draws_it_again(capsys):
    setup_messages()
    with bar(4, "demo", "step", show=True, mininterval=0, miniters=1) as progress:
        progress.update(2)
        log.info("half way")
        progress.update(2)
    err = capsys.readouterr().err
    before, after = err.split("half way\n")
    assert before.endswith("\r") and before[:-1].rsplit("\r", 1)[-1].strip() == "", "the bar is cleared first"
    assert "demo:  50%" in before.rsplit("\r", 3)[-3]
    assert after.startswith("\rdemo:  50%"), "and drawn again where it was"
    assert after.rstrip("\n").rsplit("\r", 1)[-1].startswith("demo: 100%")


def test_the_format_is_plain_and_warnings_and_errors_say_so(capsys):
    setup_messages()
    log.info("data: 64 examples")
    log.warning("could not write the cache")
    log.error("the run diverged")
    log.debug("not shown at the default level")
    assert capsys.readouterr() == ("", "data: 64 examples\nwarning: could not write the cache\n"
                                       "error: the run diverged\n")


def test_setup_is_idempotent(capsys):
    for _ in range(3):
        setup_messages()
    package = logging.getLogger("rankadapt")
    assert len([h for h in package.handlers if isinstance(h, ProgressAwareHandler)]) == 1
    log.info("once")
    assert capsys.readouterr().err == "once\n"
    setup_messages(logging.WARNING)  # a later call only changes the level
    log.info("hidden")
    log.warning("shown")
    assert capsys.readouterr().err == "warning: shown\n"


def test_processes_other_than_the_main_one_are_quiet_but_for_errors(capsys, monkeypatch):
    setup_messages()  # before RANK is read, as under torchrun: the filter asks at every record
    monkeypatch.setenv("RANK", "1")
    log.info("status")
    log.warning("a warning every process would repeat")
    log.error("this process failed")
    assert capsys.readouterr() == ("", "error: this process failed\n")
    monkeypatch.setenv("RANK", "0")
    log.info("status")
    assert capsys.readouterr().err == "status\n"


def test_a_library_user_keeps_their_own_logging():
    """In a fresh interpreter: importing the package (the CLI and the recipes included) adds no handler
    anywhere, and the user's basicConfig formats the package's messages."""
    code = """
import logging
import rankadapt, rankadapt.cli, rankadapt.recipes.finetune, rankadapt.experiments.runner
assert logging.getLogger().handlers == [], logging.getLogger().handlers
assert logging.getLogger("rankadapt").handlers == [] and logging.getLogger("rankadapt").propagate
logging.getLogger("rankadapt.recipes.finetune").info("not shown: the root logger's level is WARNING")
logging.basicConfig(level=logging.INFO, format="USER %(levelname)s %(name)s: %(message)s")
logging.getLogger("rankadapt.recipes.finetune").info("data: 64 examples")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(SRC)})
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert done.stderr.splitlines() == ["USER INFO rankadapt.recipes.finetune: data: 64 examples"], done.stderr


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("tiny-bert"))


def test_training_from_python_logs_its_status_and_prints_nothing(model_dir, tmp_path, capsys, caplog):
    """Without setup_messages the status goes to the user's logging (here pytest's caplog), never to stdout."""
    from rankadapt.core.config_files import load_config
    from rankadapt.recipes.finetune import train

    config = load_config(None, custom_task_args(tmp_path, model_dir, tmp_path / "run") + ["method.name=lora",
                                                                                        "train.epochs=1"])
    with caplog.at_level(logging.INFO, logger="rankadapt"):
        train(config)
    assert "trainable parameters: " in caplog.text and "data: " in caplog.text
    assert capsys.readouterr().out == ""


def test_train_writes_status_to_stderr_and_only_results_to_stdout(model_dir, tmp_path):
    from rankadapt.cli import app, final_line

    run_dir = tmp_path / "run"
    args = custom_task_args(tmp_path, model_dir, run_dir) + [
        "method.name=lora", "method.budget=2000", "method.lora_module=[query,value]", "train.epochs=1",
        "train.progress=true", "train.eval_strategy=steps", "train.eval_steps=4"]
    runner = CliRunner()
    first = runner.invoke(app, ["train", *args])
    assert first.exit_code == 0, first.output

    def results_lines() -> list[str]:
        results = json.loads((run_dir / "results.json").read_text())
        return ["", final_line(results), f"results: {run_dir / 'results.json'}", f"adapter: {run_dir / 'adapter'}"]

    assert first.stdout.splitlines() == results_lines()
    # every status line starts a line of its own on stderr, between the bars' draws
    lines = re.split(r"[\r\n]", first.stderr)
    for start in ("method.budget=2,000 → method.lora_r=", "trainable parameters: ", "data: ", "step 4: accuracy "):
        assert any(line.startswith(start) for line in lines), (start, first.stderr)
    assert draws_of(first.stderr, "train:"), "the bar is there too"

    resumed = runner.invoke(app, ["train", *args, "train.epochs=2", "train.resume=true"])
    assert resumed.exit_code == 0, resumed.output
    assert resumed.stdout.splitlines() == results_lines()
    assert f"resuming {run_dir} at optimizer step 8" in resumed.stderr.splitlines()
    assert "resumed with changed settings: train.epochs 1.0 -> 2.0" in resumed.stderr


def draws_of(stderr: str, label: str) -> list[str]:
    return [part for part in re.split(r"[\r\n]", stderr) if part.startswith(label)]
