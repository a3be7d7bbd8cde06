"""Progress on stderr for every long phase of ``rankadapt train``, ``eval`` and ``export``: tokenising,
training (the loss shown moves every step; the finished bar is drawn once), evaluating, exporting.

tqdm redraws at most every 0.1 s; the tests make it draw on every update, so that what a slow real
run shows can be read from the output of a fast tiny one."""

from __future__ import annotations

import re
from functools import partial

import pytest
from typer.testing import CliRunner

from rankadapt.core import progress
from rankadapt.cli import app

from helpers import custom_task_args, make_model_dir

runner = CliRunner()


@pytest.fixture
def every_draw_shown(monkeypatch):
    import rankadapt.recipes.finetune

    drawn_always = partial(progress.bar, mininterval=0, miniters=1)
    monkeypatch.setattr(progress, "bar", drawn_always)  # phases, tokenising, predict import it late
    monkeypatch.setattr(rankadapt.recipes.finetune, "bar", drawn_always)


def draws(stderr: str, label: str) -> list[str]:
    """Every state of the bars whose label starts with ``label``, as drawn (tqdm separates them by \\r)."""
    return [part.strip() for part in re.split(r"[\r\n]", stderr) if part.strip().startswith(label)]


def test_train_shows_tokenising_a_live_loss_one_final_bar_evaluation_and_export(every_draw_shown, tmp_path):
    args = custom_task_args(tmp_path, make_model_dir(tmp_path / "model"), tmp_path / "run") + [
        "method.name=lora", "train.progress=true", "train.logging_steps=1000", "train.eval_strategy=no"]
    result = runner.invoke(app, ["train", *args])
    assert result.exit_code == 0, result.output
    stderr = result.stderr
    assert draws(stderr, "tokenising train") and draws(stderr, "tokenising validation")
    steps = draws(stderr, "train:")
    total = 16  # 64 examples, batch 8, 2 epochs
    assert len([d for d in steps if f"{total}/{total}" in d]) == 1, "the finished bar is drawn exactly once"
    # between logs (logging_steps=1000: only the last step logs) the bar shows the running mean loss
    losses = [re.search(r"loss=([0-9.]+)", d) for d in steps if not d.startswith("train:   0%")]
    assert all(losses) and len({m.group(1) for m in losses}) > total // 2, steps
    assert draws(stderr, "eval validation")
    assert any(d.endswith("done in 00:00") for d in draws(stderr, f"exporting {tmp_path / 'run' / 'adapter'}"))
    # stdout keeps the results, no bars and no status lines (those are on stderr, tests/core/test_messages.py)
    assert "train: 100%" not in result.stdout and "lora on custom:" in result.stdout
    assert "data: " not in result.stdout and "data: " in stderr


def test_eval_and_merged_export_show_progress(every_draw_shown, tmp_path):
    run_dir = tmp_path / "run"
    args = custom_task_args(tmp_path, make_model_dir(tmp_path / "model"), run_dir) + ["method.name=lora",
                                                                                      "train.epochs=1"]
    assert runner.invoke(app, ["train", *args]).exit_code == 0
    evaluated = runner.invoke(app, ["eval", str(run_dir), f"data.cache_dir={tmp_path / 'fresh-cache'}",
                                    "train.progress=true"])
    assert evaluated.exit_code == 0, evaluated.output
    assert draws(evaluated.stderr, "tokenising validation") and draws(evaluated.stderr, "eval validation")
    exported = runner.invoke(app, ["export", str(run_dir), "--merged", str(tmp_path / "merged")])
    assert exported.exit_code == 0, exported.output
    assert draws(exported.stderr, f"exporting {tmp_path / 'merged'}: done in")
