"""Methods as policies over the shared adapter layer. Importing this package registers them all."""

from . import adalora, baselines, elalora, lora, rmlora, sora  # noqa: F401  (registration side effects)
from .base import (Adapters, MethodPolicy, StepContext, available_methods, build_policy, register_method)

__all__ = ["Adapters", "MethodPolicy", "StepContext", "available_methods", "build_policy", "register_method"]
