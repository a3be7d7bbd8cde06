"""Trust (issue 16): no code runs from a checkpoint, nothing is deleted that rankadapt did not write,
a resume continues exactly the run it resumes, and bad input ends in one clear message.

The fault-injection test stops a run at every instant rankadapt marks as a crash point (after each
event line, inside each checkpoint write and each directory swap, before results.json), by copying
the run directory as it is on disk at that instant — what a kill -9 would leave — and resumes every
copy: each ends with the uninterrupted run's weights, rank events and metrics.jsonl.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rankadapt.core import ownership
from rankadapt.runtime.checkpoint import has_checkpoint
from rankadapt.core.ownership import RunLock

from helpers import custom_task_args, make_model_dir, sentiment_rows, write_csv
from test_cli import events, invoke, train_ok

# 32 examples / batch 8 = 4 steps per epoch, 2 epochs = 8 steps; evaluations (and checkpoints) at
# steps 3 and 6; a train loss every 3 steps, so a checkpoint falls inside a logging window.
ADALORA = ["method.name=adalora", "method.lora_r=4", "method.target_rank=2", "method.init_warmup=2",
           "method.final_warmup=3", "method.mask_interval=1", "method.lora_dropout=0.1"]
SHORT = ["train.epochs=2", "train.eval_strategy=steps", "train.eval_steps=3", "train.logging_steps=2",
         "train.tensorboard=false", "train.threads=1"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("tiny-bert"))


def short_args(tmp: Path, model_dir: Path, run_dir: Path, *extra: str) -> list[str]:
    return [*custom_task_args(tmp, model_dir, run_dir, n_train=32, n_eval=16), *ADALORA, *SHORT, *extra]


def fails(*args: str) -> str:
    """Run a command that must be refused: exit 2 and one `error:` message, no traceback."""
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and "Traceback" not in result.output
    return result.output


def untimed(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in e.items() if k != "samples_per_second"} for e in events(run_dir)]


def tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def assert_same_run(run_dir: Path, reference: Path) -> None:
    assert untimed(run_dir) == untimed(reference)
    for name in ("adapter/adapter_model.safetensors", "checkpoint/model.safetensors"):
        ours, theirs = tensors(run_dir / name), tensors(reference / name)
        assert ours.keys() == theirs.keys()
        for key in ours:
            assert torch.equal(ours[key], theirs[key]), (name, key)
    results = lambda d: json.loads((d / "results.json").read_text())
    assert results(run_dir)["final_metrics"] == results(reference)["final_metrics"]
    assert results(run_dir)["rank_pattern"] == results(reference)["rank_pattern"]


@pytest.fixture(scope="module")
def finished(model_dir, tmp_path_factory) -> tuple[Path, list[str]]:
    """An uninterrupted run, and the arguments that made it."""
    tmp = tmp_path_factory.mktemp("finished")
    args = short_args(tmp, model_dir, tmp / "run")
    train_ok(*args)
    return tmp / "run", args


def copy_of(run_dir: Path, where: Path) -> Path:
    shutil.copytree(run_dir, where)
    return where


# ==================================================================================================
# 1. Nothing is unpickled
# ==================================================================================================

class _Payload:
    """Unpickling this runs ``touch <path>``: what a crafted training_state.pt can do to torch.load."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_checkpoint_holds_no_pickle_and_a_crafted_state_file_never_runs(finished, tmp_path):
    run_dir, args = finished
    assert not list((run_dir / "checkpoint").glob("*.pt"))
    assert {"model.safetensors", "state.safetensors", "state.json", "loop.json", "manifest.json"} <= {
        p.name for p in (run_dir / "checkpoint").iterdir()}
    shared = copy_of(run_dir, tmp_path / "shared")
    checkpoint = shared / "checkpoint"
    marker = tmp_path / "code-ran"
    for name in ("state.json", "state.safetensors", "manifest.json"):
        (checkpoint / name).unlink()
    with (checkpoint / "training_state.pt").open("wb") as f:
        pickle.dump({"optimizer": _Payload(marker)}, f)
    output = fails("train", *args, f"output_dir={shared}", "train.resume=true")
    assert not marker.exists(), "loading the checkpoint ran code"
    assert "training_state.pt" in output and "older rankadapt" in output


# ==================================================================================================
# 8. Corrupt checkpoints are refused with a message
# ==================================================================================================

def _zero_bytes(path: Path) -> None:
    path.write_bytes(b"")


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


CORRUPTIONS = {
    "model weights empty": ("model.safetensors", _zero_bytes),
    "model weights flipped": ("model.safetensors", _flip_a_byte),
    "state tensors truncated": ("state.safetensors", _truncate),
    "state json garbage": ("state.json", lambda p: p.write_text("{not json")),
    "loop json garbage": ("loop.json", lambda p: p.write_text("[1, 2")),
    "loop json unknown key": ("loop.json", lambda p: p.write_text(json.dumps({"step": 3, "bogus": 1}))),
    "state json missing": ("state.json", Path.unlink),
    "manifest empty": ("manifest.json", _zero_bytes),
}


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_a_corrupt_checkpoint_is_refused_with_a_message(kind, finished, tmp_path):
    run_dir, args = finished
    copy = copy_of(run_dir, tmp_path / "copy")
    name, damage = CORRUPTIONS[kind]
    damage(copy / "checkpoint" / name)
    output = fails("train", *args, f"output_dir={copy}", "train.resume=true")
    assert "checkpoint" in output


# ==================================================================================================
# 2. Nothing is deleted that rankadapt did not write
# ==================================================================================================

def test_export_never_replaces_what_rankadapt_did_not_write(finished, tmp_path):
    run_dir, _ = finished
    users = tmp_path / "mine"
    users.mkdir()
    (users / "notes.txt").write_text("keep me")
    assert "mine" in fails("export", run_dir, "--merged", users)
    assert (users / "notes.txt").read_text() == "keep me"

    copy = copy_of(run_dir, tmp_path / "run")
    before = sorted(p.name for p in copy.iterdir())
    assert "overlaps" in fails("export", copy, "--merged", copy)
    fails("export", copy, "--merged", copy / "adapter")
    assert sorted(p.name for p in copy.iterdir()) == before and (copy / "adapter" / "adapter_config.json").is_file()

    merged = tmp_path / "merged"
    for _ in range(2):  # a merged export rankadapt wrote may be replaced by the next one
        result = invoke("export", run_dir, "--merged", merged)
        assert result.exit_code == 0, result.output
    assert (merged / "config.json").is_file()


def test_a_fresh_run_never_deletes_what_rankadapt_did_not_write(model_dir, tmp_path):
    workdir = tmp_path / "work"
    base = make_model_dir(workdir / "model")  # a base model in ./model, output_dir=. next to it
    args = short_args(tmp_path, base, workdir)
    output = fails("train", *args)
    assert "model/" in output and "output_dir" in output
    assert (base / "config.json").is_file() and (base / "model.safetensors").is_file()

    own_config = tmp_path / "exp"
    own_config.mkdir()
    (own_config / "config.yaml").write_text("train:\n  seed: 3\n")
    fails("train", *short_args(tmp_path, model_dir, own_config))
    assert (own_config / "config.yaml").read_text() == "train:\n  seed: 3\n"


def test_a_fresh_run_replaces_its_own_earlier_outputs(finished, tmp_path):
    run_dir, args = finished
    copy = copy_of(run_dir, tmp_path / "again")
    train_ok(*args, f"output_dir={copy}")
    assert untimed(copy) == untimed(run_dir)


# ==================================================================================================
# 3. A resume with other settings is refused, or recorded when safe
# ==================================================================================================

@pytest.mark.parametrize("changed", [
    ["train.learning_rate=1e-3"],
    ["train.seed=7", "train.grad_accum=2"],
    ["method.lora_r=8"],
    ["train.max_steps=4"],
])
def test_a_resume_with_changed_meaning_is_refused_naming_each_key(changed, finished, tmp_path):
    run_dir, args = finished
    copy = copy_of(run_dir, tmp_path / "copy")
    output = fails("train", *args, f"output_dir={copy}", "train.resume=true", *changed)
    for item in changed:
        assert item.split("=")[0] in output
    assert untimed(copy) == untimed(run_dir)


@pytest.fixture(scope="module")
def finished_lora(model_dir, tmp_path_factory) -> tuple[Path, list[str]]:
    tmp = tmp_path_factory.mktemp("lora")
    args = [*custom_task_args(tmp, model_dir, tmp / "run", n_train=32, n_eval=16), *SHORT, "method.name=lora"]
    train_ok(*args)
    return tmp / "run", args


@pytest.mark.parametrize("changed", ["method.name=rmlora", "method.lora_module=[query,key,value]", "model.name"])
def test_another_method_modules_or_model_on_resume_is_refused(changed, finished_lora, tmp_path):
    """Today these end in a traceback (KeyError 'seed', RuntimeError) or, for another base model of
    the same shapes, in a silently mixed run."""
    run_dir, args = finished_lora
    copy = copy_of(run_dir, tmp_path / "copy")
    if changed == "model.name":
        changed = f"model.name={_other_base(tmp_path / 'other', hidden=32, seed=5)}"
    output = fails("train", *args, f"output_dir={copy}", "train.resume=true", changed)
    assert changed.split("=")[0] in output and "would continue" in output


def test_a_safe_change_on_resume_is_recorded(finished_lora, tmp_path):
    run_dir, args = finished_lora
    run_dir = copy_of(run_dir, tmp_path / "copy")
    args = [*args, f"output_dir={run_dir}"]
    train_ok(*args, "train.resume=true", "train.max_steps=10", "train.logging_steps=1")
    changed = events(run_dir, "config_changed")
    assert len(changed) == 1 and changed[0]["step"] == 8
    assert changed[0]["changes"] == {"train.max_steps": {"from": None, "to": 10},
                                     "train.logging_steps": {"from": 2, "to": 1}}
    assert "max_steps: 10" in (run_dir / "config.yaml").read_text()
    assert json.loads((run_dir / "results.json").read_text())["steps"] == 10
    assert [e["step"] for e in events(run_dir, "train")][-2:] == [9, 10]


def test_a_longer_adalora_run_is_refused(finished, tmp_path):
    """AdaLoRA's rank schedule was laid out over the first T: more steps would be another run."""
    run_dir, args = finished
    copy = copy_of(run_dir, tmp_path / "copy")
    assert "train.max_steps" in fails("train", *args, f"output_dir={copy}", "train.resume=true", "train.max_steps=10")


# ==================================================================================================
# 4. One run per directory
# ==================================================================================================

def test_a_second_run_in_a_locked_directory_is_refused(finished, tmp_path):
    run_dir, args = finished
    copy = copy_of(run_dir, tmp_path / "busy")
    with RunLock(copy):
        assert "in use by another rankadapt run" in fails("train", *args, f"output_dir={copy}", "train.resume=true")
        assert "pid" in fails("train", *args, f"output_dir={copy}")
    assert untimed(copy) == untimed(run_dir)


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, sys, time\n"
        f"f = open({str(tmp_path / ownership.LOCK_FILE)!r}, 'a+')\n"
        "fcntl.flock(f, fcntl.LOCK_EX)\n"
        "f.write('{\"pid\": 1, \"host\": \"h\", \"since\": \"t\"}'); f.flush()\n"
        "print('locked', flush=True)\n"
        "time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(Exception, match="in use"):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()  # SIGKILL: no cleanup runs in the holder
        holder.wait()
    assert (tmp_path / ownership.LOCK_FILE).exists()
    RunLock(tmp_path).acquire().release()


# ==================================================================================================
# 5. The swap is crash-safe; stale temporaries are removed
# ==================================================================================================

def test_a_crash_between_the_two_renames_keeps_the_checkpoint(finished, tmp_path, monkeypatch):
    run_dir, args = finished
    copy = copy_of(run_dir, tmp_path / "copy")
    checkpoint = copy / "checkpoint"
    # What a kill between the renames leaves: the good checkpoint as .checkpoint.old, no checkpoint/,
    # plus the debris of an earlier crashed write.
    os.replace(checkpoint, copy / ".checkpoint.old")
    (copy / ".checkpoint.tmp-crashed").mkdir()
    (copy / ".checkpoint.tmp-crashed" / ownership.OWNER_MARKER).write_text("{}")
    assert has_checkpoint(copy)
    train_ok(*args, f"output_dir={copy}", "train.resume=true")
    assert (checkpoint / "manifest.json").is_file()
    assert not list(copy.glob(".checkpoint.*"))
    assert untimed(copy) == untimed(run_dir)


# ==================================================================================================
# 6. No checkpoint of diverged weights
# ==================================================================================================

def test_diverged_weights_are_never_checkpointed(model_dir, tmp_path):
    run_dir = tmp_path / "nan"
    args = short_args(tmp_path, model_dir, run_dir, "train.learning_rate=1e30", "train.max_grad_norm=null",
                      "train.eval_steps=1", "method.name=lora", "train.warmup_steps=0")
    args = [a for a in args if not a.startswith("method.") or a in ("method.name=lora",)]
    output = fails("train", *args)
    assert "last good checkpoint" in output or "no checkpoint was written yet" in output
    if has_checkpoint(run_dir):
        assert all(torch.isfinite(t).all() for t in tensors(run_dir / "checkpoint" / "model.safetensors").values())
        step = json.loads((run_dir / "checkpoint" / "loop.json").read_text())["step"]
        evaluations = [e for e in events(run_dir, "eval") if e["step"] == step]
        assert evaluations and all(v is not None for v in evaluations[0].values())
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda name: pytest.fail(f"bare {name} in metrics.jsonl"))


# ==================================================================================================
# 7. Logs never break a resume and equal an uninterrupted run's
# ==================================================================================================

def test_a_partial_last_line_does_not_break_resume(finished, tmp_path):
    run_dir, args = finished
    copy = copy_of(run_dir, tmp_path / "copy")
    (copy / "results.json").unlink()
    with (copy / "metrics.jsonl").open("a") as f:
        f.write('{"event": "train", "step": 9, "lo')  # a crash or a full disk mid-write
    train_ok(*args, f"output_dir={copy}", "train.resume=true")
    assert untimed(copy) == untimed(run_dir)


def test_resuming_a_finished_run_adds_no_events(finished, tmp_path):
    run_dir, args = finished
    copy = copy_of(run_dir, tmp_path / "copy")
    for _ in range(2):
        train_ok(*args, f"output_dir={copy}", "train.resume=true")
    (copy / "results.json").unlink()  # a kill between the last checkpoint and results.json
    train_ok(*args, f"output_dir={copy}", "train.resume=true")
    assert untimed(copy) == untimed(run_dir)
    assert json.loads((copy / "results.json").read_text())["final_metrics"] == \
        json.loads((run_dir / "results.json").read_text())["final_metrics"]


# ==================================================================================================
# The fault-injection test
# ==================================================================================================

def test_a_run_killed_at_any_instant_resumes_to_the_uninterrupted_run(finished, model_dir, tmp_path, monkeypatch):
    """Copy the run directory at every crash point of one run (the disk as a kill -9 there leaves
    it: after each metrics.jsonl line, inside each checkpoint write, before, between and after the
    renames of each directory swap, before results.json), then resume the copies (or, before the
    first checkpoint, start them again). Every one must end as the uninterrupted run."""
    reference, _ = finished
    run_dir = tmp_path / "run"
    args = short_args(tmp_path, model_dir, run_dir)
    snapshots: list[tuple[str, Path]] = []

    def snapshot(where: str) -> None:
        copy = tmp_path / "kills" / f"{len(snapshots):03d}"
        shutil.copytree(run_dir, copy)
        snapshots.append((where, copy))

    monkeypatch.setattr(ownership, "crash_hook", snapshot)
    train_ok(*args)
    monkeypatch.setattr(ownership, "crash_hook", None)
    assert_same_run(run_dir, reference)
    kinds = {where for where, _ in snapshots}
    assert {"swap: between the renames", "checkpoint: state written", "metrics.jsonl: event written",
            "train: before results.json"} <= kinds

    # Every instant inside a swap between its renames and the last one; six others at random (all 33
    # pass, in 12 s: the choice keeps CI short; the seed makes a failure reproducible).
    forced = [i for i, (where, _) in enumerate(snapshots) if where == "swap: between the renames"]
    others = [i for i in range(len(snapshots) - 1) if i not in forced]
    chosen = sorted({*forced, len(snapshots) - 1, *random.Random(16).sample(others, 6)})
    for index in chosen:
        where, copy = snapshots[index]
        resume = ["train.resume=true"] if has_checkpoint(copy) else []
        result = invoke("train", *args, f"output_dir={copy}", *resume)
        assert result.exit_code == 0, (index, where, result.output)
        assert_same_run(copy, reference)
        assert not list(copy.glob(".checkpoint.*")) and not list(copy.glob(".adapter.*")), (index, where)


# ==================================================================================================
# 8. One clear message instead of a traceback
# ==================================================================================================

def test_an_unusable_output_dir_is_a_clear_error(model_dir, tmp_path, monkeypatch):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    assert "is a file" in fails("train", *short_args(tmp_path, model_dir, a_file))
    assert "under a file" in fails("train", *short_args(tmp_path, model_dir, a_file / "run"))
    assert a_file.read_text() == "x"

    write_text = Path.write_text

    def read_only(self, *args, **kwargs):  # tests run as root, whom chmod does not stop
        if self.name.startswith(".rankadapt-write-test"):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", read_only)
    assert "not writable" in fails("train", *short_args(tmp_path, model_dir, tmp_path / "ro"))


def test_a_full_disk_is_a_message_and_the_last_checkpoint_survives(finished, model_dir, tmp_path, monkeypatch):
    import rankadapt.runtime.checkpoint as checkpoint

    reference, _ = finished
    run_dir = tmp_path / "full"
    args = short_args(tmp_path, model_dir, run_dir)
    writes = {"n": 0}
    save_file = checkpoint.save_file

    def disk_full_at_the_second_checkpoint(tensors, path, *rest, **kwargs):
        writes["n"] += 1
        if writes["n"] == 3:  # two files per checkpoint: the second checkpoint's first file
            raise OSError(errno.ENOSPC, "No space left on device", path)
        return save_file(tensors, path, *rest, **kwargs)

    monkeypatch.setattr(checkpoint, "save_file", disk_full_at_the_second_checkpoint)
    output = fails("train", *args)
    assert "No space left on device" in output and "train.resume=true" in output
    monkeypatch.setattr(checkpoint, "save_file", save_file)
    assert json.loads((run_dir / "checkpoint" / "loop.json").read_text())["step"] == 3
    assert not list(run_dir.glob(".checkpoint.*"))
    train_ok(*args, "train.resume=true")
    assert_same_run(run_dir, reference)


def test_lengths_beyond_the_models_positions_are_refused(finished, model_dir, tmp_path):
    run_dir, _ = finished
    output = fails("train", *short_args(tmp_path, model_dir, tmp_path / "long", "data.max_length=100"))
    assert "data.max_length=100" in output and "64" in output
    assert "--max-length" in fails("predict", run_dir, "good film", "--max-length", "100")
    result = invoke("predict", run_dir, "good film", "--max-length", "0")
    assert result.exit_code == 2 and "--max-length" in result.output


def test_a_negative_seed_is_refused(model_dir, tmp_path):
    assert "train.seed" in fails("train", *short_args(tmp_path, model_dir, tmp_path / "neg", "train.seed=-1"))


def test_predict_refuses_a_file_that_is_not_utf8(finished, tmp_path):
    run_dir, _ = finished
    latin1 = tmp_path / "texts.txt"
    latin1.write_bytes("très bon film\n".encode("latin-1"))
    assert "UTF-8" in fails("predict", run_dir, "--file", latin1)


def _other_base(directory: Path, hidden: int, seed: int) -> Path:
    """A tiny BERT with the test tokenizer: of another shape (hidden != 32) or the same shape and other weights."""
    import transformers

    from conftest import tiny_config
    from helpers import make_tokenizer

    tokenizer = make_tokenizer(directory)
    config = tiny_config("bert")
    config.vocab_size = max(config.vocab_size, len(tokenizer))
    config.hidden_size, config.intermediate_size = hidden, 2 * hidden
    torch.manual_seed(seed)
    transformers.AutoModelForSequenceClassification.from_config(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def test_eval_on_another_base_model_is_refused(finished, tmp_path):
    run_dir, _ = finished
    wider = _other_base(tmp_path / "wider", hidden=48, seed=0)
    assert "does not fit" in fails("eval", run_dir, f"model.name={wider}")
    same_shape = _other_base(tmp_path / "same-shape", hidden=32, seed=5)
    assert "other weights" in fails("eval", run_dir, f"model.name={same_shape}")
    assert invoke("eval", run_dir).exit_code == 0


# ==================================================================================================
# 9. Input that was silently accepted
# ==================================================================================================

def test_duplicate_csv_columns_are_refused(model_dir, tmp_path):
    rows = [(text, label, "x") for text, label in sentiment_rows(16, seed=1)]
    doubled = write_csv(tmp_path / "doubled.csv", rows, header=("text", "label", "text"))
    output = fails("train", *short_args(tmp_path, model_dir, tmp_path / "dup"), f"data.train_file={doubled}")
    assert "'text'" in output and "unique" in output


def test_a_json_object_in_a_text_field_is_refused(model_dir, tmp_path):
    records = [{"text": {"title": "good"} if i == 3 else text, "label": label}
               for i, (text, label) in enumerate(sentiment_rows(16, seed=1))]
    path = tmp_path / "objects.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records))
    output = fails("train", *short_args(tmp_path, model_dir, tmp_path / "obj"), f"data.train_file={path}")
    assert "record 4" in output and "dict" in output


# ==================================================================================================
# 10. Outputs follow the umask
# ==================================================================================================

def test_run_outputs_follow_the_process_umask(model_dir, tmp_path):
    previous = os.umask(0o022)
    try:
        run_dir = tmp_path / "shared-run"
        train_ok(*short_args(tmp_path, model_dir, run_dir))
    finally:
        os.umask(previous)
    for name in ("adapter", "checkpoint"):
        assert (run_dir / name).stat().st_mode & 0o777 == 0o755, name
        for path in (run_dir / name).iterdir():
            assert path.stat().st_mode & 0o777 == 0o644, path
