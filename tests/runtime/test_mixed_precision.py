"""``train.mixed_precision=auto``: bf16 where the hardware executes it natively, else no; the choice is
printed, recorded in results.json and in the checkpoint, and a resume that would resolve it otherwise is
refused."""

from __future__ import annotations

import json

import pytest

import rankadapt.runtime.accelerator as accelerator
from helpers import custom_task_args, make_model_dir
from test_cli import invoke, train_ok


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 amx_tile\n\nprocessor\t: 1\n")
    assert {"avx512_bf16", "amx_tile", "fpu"} <= accelerator.cpu_flags(cpuinfo)
    assert accelerator.cpu_flags(tmp_path / "absent") == set()


@pytest.mark.parametrize("flags, native", [({"avx2", "amx_bf16"}, True), ({"avx512_bf16"}, True), ({"avx2"}, False)])
def test_cpu_bf16_is_native_with_amx_or_avx512_bf16(monkeypatch, flags, native):
    monkeypatch.setattr(accelerator, "cpu_flags", lambda: flags)
    found, reason = accelerator.native_bf16("cpu")
    assert found is native and ("this CPU has" in reason)
    assert accelerator.resolve_mixed_precision("auto", "cpu") == ("bf16" if native else "no")


def test_explicit_settings_pass_through(monkeypatch):
    monkeypatch.setattr(accelerator, "cpu_flags", lambda: set())
    assert [accelerator.resolve_mixed_precision(s, "cpu") for s in ("no", "bf16")] == ["no", "bf16"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("tiny-bert"))


@pytest.mark.parametrize("native", [True, False])
def test_auto_is_printed_and_recorded(native, model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(accelerator, "native_bf16", lambda device: (native, "told by the test"))
    run_dir = tmp_path / "run"
    result = train_ok(*custom_task_args(tmp_path, model_dir, run_dir), "train.mixed_precision=auto", "train.max_steps=2")
    expected = "bf16" if native else "no"
    assert f"mixed precision: {expected} (train.mixed_precision=auto: told by the test)" in result.stderr
    assert json.loads((run_dir / "results.json").read_text())["mixed_precision"] == expected
    assert json.loads((run_dir / "checkpoint" / "loop.json").read_text())["mixed_precision"] == expected


def test_a_resume_where_auto_resolves_otherwise_is_refused(model_dir, tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    args = [*custom_task_args(tmp_path, model_dir, run_dir), "train.mixed_precision=auto", "train.eval_strategy=steps",
            "train.eval_steps=2", "train.max_steps=4"]
    monkeypatch.setattr(accelerator, "native_bf16", lambda device: (True, "bf16 here"))
    train_ok(*args, "train.max_steps=2")  # a finished first part: its checkpoint says bf16
    monkeypatch.setattr(accelerator, "native_bf16", lambda device: (False, "no bf16 on this machine"))
    result = invoke("train", *args, "train.resume=true")
    assert result.exit_code == 2
    assert "was trained with mixed precision 'bf16', but train.mixed_precision=auto gives 'no'" in result.output
    monkeypatch.setattr(accelerator, "native_bf16", lambda device: (True, "bf16 here"))
    train_ok(*args, "train.resume=true")  # where auto gives bf16 again, the run continues
    assert json.loads((run_dir / "results.json").read_text())["steps"] == 4
