"""The source systems' baselines (docs/methods/full-and-head.md): no adapters at all.

- ``full``: every weight trains (the seeds' "Task B").
- ``head``: only the classification head trains (a linear probe).
- ``none``: nothing trains; the pretrained encoder is evaluated with its fresh head ("Task A").
"""

from __future__ import annotations

from .base import MethodPolicy, register_method


@register_method
class FullFineTuning(MethodPolicy):
    name = "full"
    injects_adapters = False
    trains_base = True


@register_method
class HeadOnly(MethodPolicy):
    name = "head"
    injects_adapters = False


@register_method
class NoTraining(MethodPolicy):
    name = "none"
    injects_adapters = False
    trains_head = False
