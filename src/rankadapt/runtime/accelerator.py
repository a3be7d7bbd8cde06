"""The Accelerate set-up of a run: device, mixed precision, CPU threads."""

from __future__ import annotations

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
    return Accelerator(cpu=config.train.device == "cpu", mixed_precision=config.train.mixed_precision)
