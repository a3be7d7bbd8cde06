"""The source systems' baselines (docs/methods/full-and-head.md): no adapters at all.

- ``full``: every weight trains (the seeds' "Task B").
- ``head``: only the classification head trains (a linear probe).
- ``none``: nothing trains; the pretrained encoder is evaluated with its fresh head ("Task A").
"""

from __future__ import annotations

from typing import Literal

from ..core.config import MethodSettings
from .base import MethodPolicy, register_method


class NoTrainingSettings(MethodSettings):
    """``none`` has no keys of its own."""

    name: Literal["none"] = "none"


class HeadOnlySettings(MethodSettings):
    """``head`` has no keys of its own."""

    name: Literal["head"] = "head"


class FullFineTuningSettings(MethodSettings):
    """``full`` has no keys of its own."""

    name: Literal["full"] = "full"


@register_method
class NoTraining(MethodPolicy):
    name = "none"
    settings = NoTrainingSettings
    injects_adapters = False
    trains_head = False
    report_keys = ()
    glue_flags = ()


@register_method
class HeadOnly(MethodPolicy):
    name = "head"
    settings = HeadOnlySettings
    injects_adapters = False
    report_keys = ()
    glue_flags = ()


@register_method
class FullFineTuning(MethodPolicy):
    name = "full"
    settings = FullFineTuningSettings
    injects_adapters = False
    trains_base = True
    report_keys = ()
    glue_flags = ()
