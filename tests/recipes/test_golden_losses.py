"""Golden losses: for every method, the first logged training losses of a tiny run through the CLI are
pinned to values recorded before the architecture refactor (torchtune's habit), so that numerics cannot
drift silently when code moves.

Each run has 12 optimizer steps with ``train.logging_steps=1``; the schedules are short enough that
AdaLoRA masks, ElaLoRA moves ranks and SoRA prunes gates inside the window, and the regularization terms and
the rank pattern at every change are pinned too. Regenerate (only when a change of numerics is intended, and say so in the commit)::

    PYTHONPATH=$PWD/src python3 tests/recipes/test_golden_losses.py --record

Why a relative tolerance of 1e-6 and not bit equality: the runs use one CPU thread, so on one machine
they are bit-reproducible, but a CPU with other vector units (AVX-512 vs AVX2) runs other matmul
kernels, whose sums round differently in the last bits; a refactor that changes the numerics moves the
losses by far more than 1e-6 after a few Adam steps.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # helpers.py, also when run as a script

from helpers import custom_task_args, make_model_dir  # noqa: E402

GOLDEN = HERE / "golden_losses.json"
RELATIVE_TOLERANCE = 1e-6
SIX = "[query,key,value,attention.output,intermediate,layer.output]"
# 64 examples / batch 8 = 8 steps per epoch; max_steps 12. Rank decisions fall inside the 12 steps.
METHODS: dict[str, list[str]] = {
    "head": [],
    "full": [],
    "lora": ["method.lora_r=4", "method.lora_dropout=0.1"],
    "adalora": ["method.lora_r=4", "method.target_rank=2", "method.init_warmup=2", "method.final_warmup=4",
                "method.mask_interval=2"],
    "elalora": ["method.lora_r=3", "method.max_rank=6", "method.b=4", "method.k=2", "method.init_warmup=2",
                "method.final_warmup=2", "method.mask_interval=3"],
    "sora": ["method.lora_r=4", "method.sparse_lambda_2=0.1", "method.sparse_lambda=0.01"],
    "rmlora": ["method.lora_r=4", "method.random_rank=2", "method.lora_type=v2"],
}


def run_method(method: str, tmp: Path, model_dir: Path) -> dict[str, list]:
    """Train ``method`` through the CLI; its logged losses and rank events."""
    from typer.testing import CliRunner

    from rankadapt.cli import app

    run_dir = tmp / method
    args = custom_task_args(tmp, model_dir, run_dir) + [
        f"method.name={method}", f"method.lora_module={SIX}", "train.max_steps=12", "train.learning_rate=1e-2",
        "train.eval_strategy=no", "train.tensorboard=false", "train.threads=1",
        "train.mixed_precision=no", *METHODS[method]]  # the recorded losses are fp32 (auto: bf16 where native)
    if method in ("head", "full"):
        args = [a for a in args if not a.startswith("method.lora_module")]
    threads = torch.get_num_threads()
    try:
        result = CliRunner().invoke(app, ["train", *args])
    finally:
        torch.set_num_threads(threads)  # train.threads is process-wide; later tests keep their own
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["event"] == "train"]
    return {"loss": [r["loss"] for r in train], "regularization": [r.get("regularization") for r in train],
            "ranks": [[r["step"], r["ranks"]] for r in records if r["event"] == "ranks"]}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("golden-tiny-bert"))


@pytest.mark.parametrize("method", list(METHODS))
def test_first_losses_match_the_recorded_ones(method, model_dir, tmp_path):
    golden = json.loads(GOLDEN.read_text())[method]
    got = run_method(method, tmp_path, model_dir)
    assert len(got["loss"]) == len(golden["loss"]) == 12
    for step, (value, expected) in enumerate(zip(got["loss"], golden["loss"]), start=1):
        assert value == pytest.approx(expected, rel=RELATIVE_TOLERANCE, abs=0), f"{method}: loss at step {step}"
    for step, (value, expected) in enumerate(zip(got["regularization"], golden["regularization"]), start=1):
        assert value == (None if expected is None else pytest.approx(expected, rel=RELATIVE_TOLERANCE, abs=0)), \
            f"{method}: regularization at step {step}"
    assert got["ranks"] == golden["ranks"], f"{method}: rank events"


def record() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_model_dir(Path(tmp) / "model")
        golden = {method: run_method(method, Path(tmp), model_dir) for method in METHODS}
    GOLDEN.write_text(json.dumps(golden, indent=1) + "\n")
    print(f"wrote {GOLDEN}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        sys.exit("usage: python tests/recipes/test_golden_losses.py --record")
    record()
