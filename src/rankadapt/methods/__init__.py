"""Methods as policies over the shared adapter layer, one module each (settings, policy, budget plan,
report keys, run-glue flags). Importing this package registers them all; a method of your own is one
module with ``@register_method`` (see CONTRIBUTING.md)."""

# Registration order is the order of reports and listings: baselines, LoRA, then the adaptive family.
from . import baselines, lora, adalora, elalora, sora, rmlora  # noqa: F401, I001  (registration side effects)
from .base import (Adapters, MethodPolicy, StepContext, available_methods, build_policy, policy_class,
                   register_method, registered_policies)
from .settings import AdapterSettings

__all__ = ["AdapterSettings", "Adapters", "MethodPolicy", "StepContext", "available_methods", "build_policy",
           "policy_class", "register_method", "registered_policies"]
