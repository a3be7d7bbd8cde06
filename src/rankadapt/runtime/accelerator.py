"""The Accelerate set-up of a run: device, mixed precision (``auto`` resolved by the hardware), CPU threads."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..core.config import RunConfig
from ..core.errors import ConfigError


def make_accelerator(config: RunConfig):
    from accelerate import Accelerator

    if config.train.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but no CUDA device is visible; use train.device=auto or cpu")
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    # Accelerate keeps its settings in a process-wide singleton; several runs in one process (sweeps,
    # tests) may differ in mixed precision or device, so start each run from fresh settings. The
    # process group (PartialState) is kept.
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=False)
    precision = resolve_mixed_precision(config.train.mixed_precision, _device_type(config))
    return Accelerator(cpu=config.train.device == "cpu", mixed_precision=precision)


log = logging.getLogger(__name__)
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
"""/proc/cpuinfo flags of CPUs that execute bf16 matrix products natively (Intel AMX, AVX512-BF16)."""


def resolve_mixed_precision(setting: str, device_type: str) -> str:
    """``train.mixed_precision`` as Accelerate takes it: ``auto`` becomes ``bf16`` where
    :func:`native_bf16` says so, else ``no`` (it never picks fp16, which needs a loss scaler)."""
    if setting != "auto":
        return setting
    native, reason = native_bf16(device_type)
    log.info("mixed precision: %s (train.mixed_precision=auto: %s)", "bf16" if native else "no", reason)
    return "bf16" if native else "no"


def native_bf16(device_type: str) -> tuple[bool, str]:
    """Whether ``device_type`` (``cuda`` or ``cpu``) executes bf16 natively, and why."""
    if device_type == "cuda":
        major, minor = torch.cuda.get_device_capability()
        return major >= 8, f"CUDA compute capability {major}.{minor} ({'>=' if major >= 8 else '<'} 8.0)"
    flags = cpu_flags()
    found = [flag for flag in CPU_BF16_FLAGS if flag in flags]
    return bool(found), (f"this CPU has {', '.join(found)}" if found else
                         f"this CPU has none of {', '.join(CPU_BF16_FLAGS)}")


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags (Linux); empty where they cannot be read."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def _device_type(config: RunConfig) -> str:
    if config.train.device == "cpu":
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"
