"""rankadapt: LoRA and the rank-adaptive family (AdaLoRA, ElaLoRA, SoRA, RM-LoRA) for encoder
classifiers, as one adapter layer with several policies, exported as stock PEFT adapters."""

__version__ = "0.1.0"
