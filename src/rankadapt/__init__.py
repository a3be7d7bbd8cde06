"""rankadapt: LoRA and the rank-adaptive family (AdaLoRA, ElaLoRA, SoRA, RM-LoRA) for encoder
classifiers, as one adapter layer with several policies, exported as stock PEFT adapters.

Python API::

    from rankadapt import MethodConfig, prepare_model, export_peft
    adapted = prepare_model(model, MethodConfig(name="lora", lora_r=8, lora_module=["query", "value"]))
    ...train adapted.model...
    export_peft(adapted, "my-adapter", base_model="sentence-transformers/all-MiniLM-L6-v2")

A method of your own: settings (a subclass of ``AdapterSettings``) and a policy (a subclass of
``MethodPolicy``) in one module, registered with ``@register_method`` (CONTRIBUTING.md).
"""

__version__ = "0.1.0"

from .core.config import DataConfig, MethodConfig, MethodSettings, ModelConfig, RunConfig, TrainConfig
from .core.config_files import load_config
from .core.errors import ConfigError, DataError, ModelError, RankAdaptError, TrainingError
from .core.layer import AdapterLinear
from .methods import AdapterSettings, MethodPolicy, StepContext, available_methods, register_method
from .methods.adapting import AdaptedModel, prepare_model
from .methods.export import export_merged, export_peft, load_peft_adapter
from .tasks import TaskFamily, family_for_task, register_family

__all__ = [
    "AdaptedModel", "AdapterLinear", "AdapterSettings", "ConfigError", "DataConfig", "DataError", "MethodConfig",
    "MethodPolicy", "MethodSettings",
    "ModelConfig", "ModelError", "RankAdaptError", "RunConfig", "StepContext", "TrainConfig", "TrainingError",
    "available_methods", "export_merged", "export_peft", "load_config", "load_peft_adapter", "prepare_model",
    "register_method", "TaskFamily", "family_for_task", "register_family",
]
