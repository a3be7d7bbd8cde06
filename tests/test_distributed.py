"""Training on two processes (``torchrun``, DDP over gloo on this CPU) on a tiny model equals training on one.

- every method's adapters, head, masks and rank decisions are bit-identical on both processes;
- the loss curve of ``torchrun --nproc_per_node 2 -m rankadapt train`` equals a single-process run with
  the same global batch to within ``LOSS_TOLERANCE``, and its metrics equal a single-process
  evaluation of the same adapter;
- a two-process run interrupted and resumed on two processes equals the uninterrupted one exactly, and
  resumed on one process it continues at the same example and step.

Why the loss curves agree only to ~1e-7 and not bit for bit: each process computes the mean loss of
its half of the batch and DDP all-reduces (sums, then averages) the gradients, so the float sums of
a global batch run in another order than in a single process's batched kernels; and each half is
padded to its own longest example, which changes the shapes of the matmuls and so their rounding.
The differences are float32 rounding (~1e-7 relative) and stay that small over these few steps.
The data sizes are chosen for the cases where sharding goes wrong most easily: in the reference runs
the last global batch of an epoch (59 = 7 x 8 + 3 examples) splits 2 / 1, so only the per-process
weights make the gradient that of the global mean (without them the curves differ by ~1e-5); in the
decision runs it holds one example (57 = 7 x 8 + 1), so one process trains on a stand-in of weight 0.

Cost: each ``torchrun`` launch takes ~10 s here (two processes importing torch and transformers on
shared cores). The default set (sharding unit tests, one launch for the five methods, one for the
loss curve) takes under a minute; the resume tests need five more launches and are marked ``slow``
(``pytest -m "not slow"`` skips them; CI runs everything).

This file is also the worker that ``torchrun`` starts for the tests that inspect every process
(``python tests/test_distributed.py --worker ...``): it trains through ``rankadapt.recipes.finetune`` and dumps
each process's trained state to its own file.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:  # when run by torchrun as a worker script
    sys.path.insert(0, str(TESTS))

from helpers import make_tokenizer, sentiment_rows, write_csv  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="needs torch.distributed with gloo")

LOSS_TOLERANCE = 1e-6
"""Largest |loss(2 processes) − loss(1 process)| per logged step (observed: ≤ 1e-7)."""
SIX = "[query,key,value,attention.output,intermediate,layer.output]"
DECISION_METHODS = {
    # 57 examples / global batch 8 = 8 steps per epoch; 10 steps with warmups 1 and 2 leave 7 steps of rank moves.
    "lora": ["method.lora_r=4"],
    "adalora": ["method.lora_r=4", "method.target_rank=2", "method.init_warmup=1", "method.final_warmup=2",
                "method.mask_interval=1"],
    "elalora": ["method.lora_r=2", "method.max_rank=4", "method.b=4", "method.k=1", "method.init_warmup=1",
                "method.final_warmup=2", "method.mask_interval=1", "method.enable_scheduler=false"],
    # ξ = 0.1 subtracted per step (the official threshold): the earlier η·ξ setting 10 at lr 1e-2
    "sora": ["method.lora_r=4", "method.sparse_lambda_2=0.1", "method.gate_init=normal"],
    "rmlora": ["method.lora_r=4", "method.random_rank=2", "method.lora_type=v2", "method.lora_dropout=0.1"],
}


# ==================================================================================================
# The sharding itself (no processes needed)
# ==================================================================================================

@pytest.mark.parametrize("num_examples, batch_size, processes", [(59, 8, 2), (57, 8, 2), (10, 4, 3), (5, 8, 4)])
def test_process_slices_of_a_global_batch_are_the_single_process_batch(num_examples, batch_size, processes):
    from rankadapt.runtime.sampling import EpochPermutation, GlobalBatchSampler

    def sampler(p: int, n: int) -> GlobalBatchSampler:
        s = GlobalBatchSampler(EpochPermutation(num_examples, seed=3), batch_size, n, p)
        s.set_epoch(1)
        return s

    single = list(sampler(0, 1))
    shards = [list(sampler(p, processes)) for p in range(processes)]
    assert all(len(shard) == len(single) == -(-num_examples // batch_size) for shard in shards)
    for j, batch in enumerate(single):
        shares = [sampler(p, processes).shares(j) for p in range(processes)]
        assert all(total == len(batch) for _, total in shares)
        real = [shard[j] for shard, (rows, _) in zip(shards, shares) if rows]
        assert [i for part in real for i in part] == batch  # in order, no duplicate, nothing left out
        stand_ins = [shard[j] for shard, (rows, _) in zip(shards, shares) if not rows]
        assert all(len(part) == 1 for part in stand_ins)  # weight 0, only so that the process takes part
    resumed = sampler(1, processes)
    resumed.skip(len(single) - 1)
    assert list(resumed) == shards[1][len(single) - 1:]


def test_resume_gives_each_process_its_own_random_state_when_the_world_size_is_unchanged():
    from rankadapt.runtime.checkpoint import rng_state_for

    saved = [{"torch": "state of process 0"}, {"torch": "state of process 1"}]
    assert rng_state_for(saved, 1, 2) == saved[1]
    assert rng_state_for(saved, 2, 3) == saved[0]  # another world size: every process starts from process 0's
    assert rng_state_for(saved[0], 0, 1) == saved[0]  # a single state, as older checkpoints hold


# ==================================================================================================
# Fixtures and launching
# ==================================================================================================

@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A tiny BERT without dropout (so one and two processes see the same function) and the data."""
    import transformers

    from conftest import tiny_config

    root = tmp_path_factory.mktemp("distributed")
    model_dir = root / "model"
    tokenizer = make_tokenizer(model_dir)
    torch.manual_seed(0)
    config = tiny_config("bert")
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    transformers.AutoModelForSequenceClassification.from_config(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    write_csv(root / "train.csv", sentiment_rows(59, seed=1))
    write_csv(root / "train57.csv", sentiment_rows(57, seed=1))
    write_csv(root / "eval.csv", sentiment_rows(33, seed=2))
    return root


def base_args(root: Path, run_dir: Path, train_file: str = "train.csv") -> list[str]:
    return [f"model.name={root / 'model'}", "data.task=custom", f"data.train_file={root / train_file}",
            f"data.eval_file={root / 'eval.csv'}", "data.text_column=text", "data.label_column=label",
            "data.max_length=16", f"data.cache_dir={root / 'cache'}", "train.batch_size=8", "train.epochs=2",
            "train.learning_rate=1e-2", "train.progress=false", "train.logging_steps=1", "train.device=cpu",
            "train.tensorboard=false", "method.name=lora", "method.lora_module=[query,value,intermediate]",
            "train.eval_strategy=epoch", "train.export=last", f"output_dir={run_dir}",
            "train.mixed_precision=no"]  # fp32: the equalities below are to 1e-6 (auto picks bf16 where native)


def torchrun(*args: str, nproc: int = 2, expect_rc: int = 0) -> str:
    """``torchrun --standalone --nproc_per_node N ARGS`` (a free rendezvous port on localhost)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *map(str, args)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=env, cwd=TESTS.parent)
    output = done.stdout + done.stderr
    assert done.returncode == expect_rc, f"exit {done.returncode} (expected {expect_rc}):\n{output[-6000:]}"
    return output


def train_single(*args: str) -> str:
    """One process, in this interpreter, through the command line."""
    from typer.testing import CliRunner

    from rankadapt.cli import app

    result = CliRunner().invoke(app, ["train", *map(str, args)])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result.output


def events(run_dir: Path, kind: str) -> list[dict]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r["event"] == kind]


def losses(run_dir: Path) -> list[tuple[int, float]]:
    return [(e["step"], e["loss"]) for e in events(run_dir, "train")]


def assert_close_curves(a: list[tuple[int, float]], b: list[tuple[int, float]]) -> None:
    assert [s for s, _ in a] == [s for s, _ in b]
    worst = max(abs(x - y) for (_, x), (_, y) in zip(a, b))
    assert worst <= LOSS_TOLERANCE, f"largest loss difference {worst:.3g} > {LOSS_TOLERANCE}"


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


# ==================================================================================================
# Every process holds the same model and makes the same rank decisions
# ==================================================================================================

@pytest.fixture(scope="module")
def decision_runs(workdir) -> Path:
    """One ``torchrun`` launch training every method for 10 steps; each process dumps its state."""
    out = workdir / "decisions"
    runs = {method: base_args(workdir, out / method, "train57.csv")
            + [f"method.name={method}", f"method.lora_module={SIX}", "train.max_steps=10", "train.eval_strategy=no",
               *extra]
            for method, extra in DECISION_METHODS.items()}
    spec = workdir / "decision_runs.json"
    spec.write_text(json.dumps(runs))
    torchrun(__file__, "--worker", spec, out)
    return out


@pytest.mark.parametrize("method", list(DECISION_METHODS))
def test_every_process_holds_bit_identical_adapters_head_and_masks(method, decision_runs):
    rank0, rank1 = (torch.load(decision_runs / method / f"rank{r}.pt") for r in (0, 1))
    assert rank0["state"].keys() == rank1["state"].keys()
    assert any(k.startswith("classifier.") for k in rank0["state"]), "the head is part of the compared state"
    for key, tensor in rank0["state"].items():
        assert torch.equal(tensor, rank1["state"][key]), key
    assert len(rank0["decisions"]) == len(rank1["decisions"])
    assert all(torch.equal(a, b) for a, b in zip(rank0["decisions"], rank1["decisions"]))
    assert rank0["pattern"] == rank1["pattern"]
    assert rank0["steps"] == rank1["steps"] == 10
    pattern, moves = rank0["pattern"], events(decision_runs / method, "ranks")
    if method == "adalora":  # the tests are not vacuous: ranks did move, identically
        assert sum(pattern.values()) == 2 * 12 and len(moves) > 1
    elif method == "elalora":
        assert sum(pattern.values()) == 2 * 12 and set(pattern.values()) != {2}
    elif method == "sora":
        assert sum(pattern.values()) < 4 * 12
    assert (decision_runs / method / "results.json").is_file()


def test_processes_that_disagree_stop_with_a_training_error(decision_runs):
    """The check behind every broadcast: a decision that differs between processes is an error on all."""
    for r in (0, 1):
        message = (decision_runs / f"divergence-rank{r}.txt").read_text()
        assert message.startswith("the 2 processes disagree on a test decision"), message


# ==================================================================================================
# Two processes equal one: loss curve, metrics, resume
# ==================================================================================================

@pytest.fixture(scope="module")
def reference_runs(workdir) -> dict[str, Path]:
    """The same 16-step LoRA run on one process and, through the command line, on two."""
    single, double = workdir / "single", workdir / "double"
    train_single(*base_args(workdir, single))
    output = torchrun("-m", "rankadapt", "train", *base_args(workdir, double))
    (workdir / "double.log").write_text(output)
    return {"single": single, "double": double}


def test_torchrun_loss_curve_and_metrics_equal_a_single_process_run(reference_runs, workdir):
    single, double = reference_runs["single"], reference_runs["double"]
    assert results(double)["num_processes"] == 2 and results(single)["num_processes"] == 1
    assert results(double)["steps"] == results(single)["steps"] == 16  # T from the global batch, not per process
    assert_close_curves(losses(double), losses(single))
    a, b = results(double)["final_metrics"], results(single)["final_metrics"]
    assert a.keys() == b.keys() and a["accuracy"] == b["accuracy"] and a["f1"] == b["f1"]
    assert a["loss"] == pytest.approx(b["loss"], abs=LOSS_TOLERANCE)
    # Only the main process writes and prints: one start event, one summary line.
    assert len(events(double, "start")) == 1 and len(events(double, "eval")) == 2
    assert (workdir / "double.log").read_text().count("results: ") == 1


def test_two_process_metrics_equal_a_single_process_evaluation(reference_runs, workdir):
    """Gathering from two processes (33 examples: uneven shards) drops the padding duplicates."""
    from typer.testing import CliRunner

    from rankadapt.cli import app

    double = reference_runs["double"]
    result = CliRunner().invoke(app, ["eval", str(double)])
    assert result.exit_code == 0, result.output
    evaluated = json.loads(result.stdout)
    assert evaluated["eval_examples"] == {"validation": 33}
    final = results(double)["final_metrics"]
    assert evaluated["metrics"]["accuracy"] == final["accuracy"] and evaluated["metrics"]["f1"] == final["f1"]
    assert evaluated["metrics"]["loss"] == pytest.approx(final["loss"], abs=LOSS_TOLERANCE)


def test_rdrop_without_dropout_follows_plain_training_on_two_processes(reference_runs, workdir):
    """This model has no dropout, so R-drop's two passes agree: ½(CE + CE) + w · 0 is the plain loss and
    the two-process R-drop run (two forward passes per step under DDP) follows the plain one."""
    rdrop = workdir / "rdrop-2"
    torchrun("-m", "rankadapt", "train", *base_args(workdir, rdrop), "train.reg_loss_wgt=1.0")
    assert_close_curves(losses(rdrop), losses(reference_runs["double"]))


def test_cutoff_under_two_processes_keeps_the_replicas_identical(workdir):
    """Each process cuts its own slice; the checkpoints' replica check (every epoch) passes."""
    cutoff = workdir / "cutoff-2"
    torchrun("-m", "rankadapt", "train", *base_args(workdir, cutoff), "train.aug_type=span_cutoff",
             "train.aug_cutoff_ratio=0.3")
    assert results(cutoff)["steps"] == 16 and len(events(cutoff, "eval")) == 2


@pytest.fixture(scope="module")
def crashed_run(workdir) -> Path:
    """The two-process run of ``reference_runs``, stopped at step 11; its checkpoint is at step 8 (epoch end)."""
    crashed = workdir / "crashed"
    spec = workdir / "crashed_run.json"
    spec.write_text(json.dumps({"crashed": base_args(workdir, crashed)}))
    torchrun(__file__, "--worker", spec, workdir / "crashed-dumps", "--crash-at", 10, expect_rc=1)
    assert json.loads((crashed / "checkpoint" / "loop.json").read_text())["step"] == 8
    return crashed


@pytest.mark.slow
def test_resume_under_two_processes_equals_an_uninterrupted_run(reference_runs, crashed_run, workdir):
    resumed = workdir / "resumed-2"
    shutil.copytree(crashed_run, resumed)
    torchrun("-m", "rankadapt", "train", *base_args(workdir, resumed), "train.resume=true")
    assert losses(resumed) == losses(reference_runs["double"])
    assert results(resumed)["final_metrics"] == results(reference_runs["double"])["final_metrics"]


@pytest.mark.slow
def test_a_two_process_checkpoint_resumes_on_one_process(reference_runs, crashed_run, workdir):
    """N → M: the position counts global batches, so one process continues at the same example."""
    resumed = workdir / "resumed-1"
    shutil.copytree(crashed_run, resumed)
    output = train_single(*base_args(workdir, resumed), "train.resume=true")
    assert "written by 2 processes, continuing on 1" in output
    assert results(resumed)["steps"] == 16 and results(resumed)["num_processes"] == 1
    assert_close_curves(losses(resumed), losses(reference_runs["double"]))
    final, uninterrupted = results(resumed)["final_metrics"], results(reference_runs["double"])["final_metrics"]
    assert final["accuracy"] == uninterrupted["accuracy"]
    assert final["loss"] == pytest.approx(uninterrupted["loss"], abs=LOSS_TOLERANCE)


@pytest.mark.slow
def test_resume_with_dropout_under_two_processes_equals_an_uninterrupted_run(workdir):
    """With dropout the masks after resume come from the restored RNG states (one per process)."""
    straight, crashed = workdir / "dropout-straight", workdir / "dropout-crashed"
    dropout = ["method.lora_dropout=0.3"]
    spec = workdir / "dropout_runs.json"
    spec.write_text(json.dumps({"crashed": base_args(workdir, crashed) + dropout}))
    torchrun(__file__, "--worker", spec, workdir / "dropout-dumps", "--crash-at", 10, expect_rc=1)
    torchrun("-m", "rankadapt", "train", *base_args(workdir, crashed), *dropout, "train.resume=true")
    torchrun("-m", "rankadapt", "train", *base_args(workdir, straight), *dropout)
    assert losses(crashed) == losses(straight)


# ==================================================================================================
# Worker: run by torchrun, one per process
# ==================================================================================================

def _worker(spec: Path, out: Path, crash_at: int | None) -> None:
    """Train each run of ``spec`` ({name: overrides}) and dump this process's trained state.

    The dump holds what must agree across processes: the trainable tensors with masks and gates
    (head included), the policy's decision tensors, the rank pattern and the step count.
    """
    from rankadapt.core.config_files import load_config
    from rankadapt.core.distributed import assert_identical, rank
    from rankadapt.core.errors import TrainingError
    from rankadapt.methods.base import MethodPolicy
    from rankadapt.methods.adapting import trainable_state_dict
    from rankadapt.recipes.finetune import _train, build_run

    if crash_at is not None:  # an interruption in the middle of training, on every process
        original = MethodPolicy.after_scheduler_step

        def crash(self, adapters, ctx):
            if ctx.step == crash_at:
                raise KeyboardInterrupt
            return original(self, adapters, ctx)

        MethodPolicy.after_scheduler_step = crash
    for name, overrides in json.loads(spec.read_text()).items():
        run = build_run(load_config(None, overrides))
        try:
            record = _train(run)
        except KeyboardInterrupt:
            sys.exit(1)
        finally:
            run.logger.close()
        adapted = run.adapted
        dump = {"state": {k: v.cpu() for k, v in trainable_state_dict(adapted).items()},
                "decisions": [t.cpu() for t in adapted.policy.decision_tensors(adapted.adapters)],
                "pattern": adapted.rank_pattern(), "steps": record["steps"]}
        (out / name).mkdir(parents=True, exist_ok=True)
        torch.save(dump, out / name / f"rank{rank()}.pt")
    try:  # a decision that differs by process must be caught on every process
        assert_identical("a test decision", [torch.tensor([rank()])])
        message = "no error"
    except TrainingError as err:
        message = str(err)
    (out / f"divergence-rank{rank()}.txt").write_text(message)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="test worker: train under torchrun and dump each process's state")
    parser.add_argument("--worker", nargs=2, type=Path, metavar=("SPEC_JSON", "OUT_DIR"), required=True)
    parser.add_argument("--crash-at", type=int, default=None)
    arguments = parser.parse_args()
    from rankadapt.core.distributed import shutdown

    _worker(*arguments.worker, arguments.crash_at)
    shutdown()  # only after success, as rankadapt's own command line does
