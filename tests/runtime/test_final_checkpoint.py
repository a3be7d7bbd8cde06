"""``train.save_final_checkpoint=false``: a short job skips the end-of-run checkpoint (issue 22) and
loses nothing else; a resume continues from the last intermediate checkpoint to the same run."""

from __future__ import annotations

import json

from helpers import custom_task_args, make_model_dir
from test_cli import events, train_ok


def _loop_step(run_dir) -> int:
    return json.loads((run_dir / "checkpoint" / "loop.json").read_text())["step"]


def test_skipping_the_final_checkpoint_changes_nothing_else_and_a_resume_reproduces_the_run(tmp_path):
    model_dir = make_model_dir(tmp_path / "model")
    common = custom_task_args(tmp_path, model_dir, tmp_path / "x") + [
        "method.name=lora", "method.lora_dropout=0.1", "train.eval_strategy=steps", "train.eval_steps=5"]
    default, short = tmp_path / "default", tmp_path / "short"
    train_ok(*common, f"output_dir={default}")
    train_ok(*common, f"output_dir={short}", "train.save_final_checkpoint=false")
    assert _loop_step(default) == 16  # 64 examples / batch 8 x 2 epochs: the end of the run
    assert _loop_step(short) == 15  # the evaluation at step 15 still wrote one
    results = lambda d: json.loads((d / "results.json").read_text())
    assert results(short)["final_metrics"] == results(default)["final_metrics"]
    assert (short / "adapter" / "adapter_model.safetensors").read_bytes() == (
        default / "adapter" / "adapter_model.safetensors").read_bytes()

    train_ok(*common, f"output_dir={short}", "train.resume=true")  # the option may change on resume
    losses = lambda d: [(e["step"], e["loss"]) for e in events(d, "train")]
    assert losses(short) == losses(default)
    assert results(short)["final_metrics"] == results(default)["final_metrics"]
