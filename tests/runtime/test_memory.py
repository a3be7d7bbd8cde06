"""``train.reuse_freed_memory``: CPU training keeps the memory it frees (glibc's mallopt) and gives it back
at the end; nothing else about a run changes."""

from __future__ import annotations

import ctypes
import json

import pytest
import torch

from helpers import custom_task_args, make_model_dir
from rankadapt.runtime import memory
from test_cli import events, train_ok


class FakeLibc:
    """Records mallopt / malloc_trim calls instead of changing this process's allocator."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def mallopt(self, option, value) -> int:
        self.calls.append(("mallopt", option.value, value.value))
        return 1

    def malloc_trim(self, pad) -> int:
        self.calls.append(("malloc_trim", pad))
        return 1


def test_the_block_keeps_freed_memory_and_restores_glibc_defaults_even_on_error():
    libc = FakeLibc()
    with pytest.raises(RuntimeError), memory.freed_memory_kept(True, "cpu", libc) as kept:
        assert kept is True
        assert libc.calls == [("mallopt", memory.M_MMAP_MAX, 0), ("mallopt", memory.M_TRIM_THRESHOLD, -1)]
        raise RuntimeError("a failing step")
    assert libc.calls[2:] == [("mallopt", memory.M_MMAP_MAX, 65536), ("mallopt", memory.M_TRIM_THRESHOLD, 128 * 1024),
                              ("malloc_trim", 0)]


@pytest.mark.parametrize("enabled, device", [(False, "cpu"), (True, "cuda")])
def test_off_or_on_a_gpu_nothing_is_touched(enabled, device):
    libc = FakeLibc()
    with memory.freed_memory_kept(enabled, device, libc) as kept:
        assert kept is False
    assert libc.calls == []


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]


def test_with_glibc_a_large_block_comes_from_the_heap_inside_and_from_mmap_again_after():
    libc = memory.glibc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        pytest.skip("needs glibc >= 2.33 (mallinfo2)")
    libc.mallinfo2.restype = MallInfo2
    mapped = lambda: libc.mallinfo2().hblkhd  # bytes in mmap-served blocks
    size = 48 << 20  # above glibc's largest dynamic mmap threshold (32 MiB): always mmap-served by default
    with memory.freed_memory_kept(True, "cpu") as kept:
        assert kept
        before = mapped()
        block = torch.empty(size, dtype=torch.uint8)
        assert mapped() - before < size
        del block
    before = mapped()
    block = torch.empty(size, dtype=torch.uint8)
    assert mapped() - before >= size
    del block


def test_a_run_is_the_same_with_and_without_it(tmp_path):
    model_dir = make_model_dir(tmp_path / "model")
    common = custom_task_args(tmp_path, model_dir, tmp_path / "x") + ["method.name=lora", "method.lora_dropout=0.1",
                                                                      "train.max_steps=6", "train.eval_strategy=no"]
    kept, plain = tmp_path / "kept", tmp_path / "plain"
    train_ok(*common, f"output_dir={kept}")
    train_ok(*common, f"output_dir={plain}", "train.reuse_freed_memory=false")
    losses = lambda d: [(e["step"], e["loss"]) for e in events(d, "train")]
    assert losses(kept) == losses(plain) and len(losses(kept)) > 0
    metrics = lambda d: json.loads((d / "results.json").read_text())["final_metrics"]
    assert metrics(kept) == metrics(plain)
