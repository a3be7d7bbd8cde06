"""Vision training-step time and peak memory: rankadapt's LoRA against stock PEFT's on the same ViT, same run.

    python bench/vision_steps.py                          # ../shared/models/dinov2-small, batch 8 at 224 x 224
    python bench/vision_steps.py --model tiny --batch 32  # a 2-layer ViT built from a config (smoke test)

Variants: ``floor`` (the frozen model's forward and backward with gradients flowing through every
layer to the pixels: the least any adapter method can cost), ``head`` (the linear probe), rankadapt's
``lora`` (the fused adapter product, ``rankadapt.core.layer``) and stock PEFT's ``peft-lora``, both at
r = 8 on the same 72 linear maps (query, key, value, attention.output, intermediate, layer.output of
all 12 blocks: ``attention.q_proj/k_proj/v_proj/o_proj``, ``mlp.fc1/fc2``) with a 10-class head.

Each variant runs in a fresh subprocess on the same seeded batch of images at the processor's size,
torch threads pinned, a few warm-up steps, then the median over repeated steps. With ``--rounds N``
the variants run in turn N times and each keeps its fastest round, so a burst of load from other
processes on a shared machine does not land on one variant only. Peak memory is the
highest resident-set size sampled over the steps minus the resident size before the first step
(bench/steps.py's ``PeakRSS``): the step's working memory (activations, gradients, optimizer state).
The batch is synthetic (normal pixels): step cost does not depend on the pixel values.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from steps import PeakRSS, adapter_table, run_json_worker

VARIANTS = ["floor", "head", "lora", "peft-lora"]
SIX = ["query", "key", "value", "attention.output", "intermediate", "layer.output"]
DINOV2_SMALL = Path(__file__).resolve().parents[1].parent / "shared" / "models" / "dinov2-small"
NUM_LABELS = 10


def build(variant: str, model_name: str):
    """(model, optimizer, image size) for one variant, all weights seeded identically."""
    import torch

    from rankadapt.core.config import MethodConfig, ModelConfig
    from rankadapt.methods.adapting import prepare_model
    from rankadapt.core.targets import find_targets
    from rankadapt.tasks.image_classification import image_model_from_config, load_image_model

    torch.manual_seed(0)
    if model_name == "tiny":
        import transformers

        config = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                        intermediate_size=64, image_size=32, patch_size=8, num_labels=NUM_LABELS)
        model, size = image_model_from_config(config), 32
    else:
        model = load_image_model(ModelConfig(name=model_name), [str(i) for i in range(NUM_LABELS)])
        size = _processor_size(model_name)
    if variant == "floor":
        model.requires_grad_(False)
    elif variant == "peft-lora":
        import peft

        targets = sorted(find_targets(model, SIX))  # exactly the maps rankadapt adapts
        model = peft.get_peft_model(model, peft.LoraConfig(r=8, lora_alpha=16, target_modules=targets,
                                                           modules_to_save=["classifier"]))
    else:
        method = MethodConfig(name="lora", lora_r=8, lora_module=SIX) if variant == "lora" else \
            MethodConfig(name="head")
        prepare_model(model, method)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4) if params else None
    return model.train(), optimizer, size


def _processor_size(model_name: str) -> int:
    from rankadapt.tasks.image_classification import load_image_processor

    processor = load_image_processor(model_name)
    crop = getattr(processor, "crop_size", None) if getattr(processor, "do_center_crop", False) else None
    size = crop or processor.size
    return int(size.get("height") or size.get("shortest_edge"))


def worker(variant: str, model_name: str, batch: int, warmup: int, repeats: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    model, optimizer, size = build(variant, model_name)
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randn(batch, 3, size, size, generator=gen)
    labels = torch.randint(0, NUM_LABELS, (batch,), generator=gen)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    def train_step() -> None:
        loss = model(pixel_values=pixels.requires_grad_(variant == "floor"), labels=labels).loss
        loss.backward()
        if optimizer is not None:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        pixels.grad = None

    times = []
    rss = PeakRSS().__enter__()
    for step in range(warmup + repeats):
        tic = time.perf_counter()
        train_step()
        if step >= warmup:
            times.append(time.perf_counter() - tic)
    rss.__exit__()
    return {"variant": variant, "model": model_name, "batch": batch, "image_size": size, "threads": threads,
            "trainable_parameters": trainable, "step_seconds": statistics.median(times), "step_seconds_all": times,
            "peak_memory_mb": (rss.peak - rss.start) / 2**20}


def run_variant(variant: str, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", variant, "--model", args.model, "--batch", str(args.batch),
           "--warmup", str(args.warmup), "--repeats", str(args.repeats), "--threads", str(args.threads)]
    return run_json_worker(cmd, args.threads, variant)


table = adapter_table  # step time and peak memory per variant (bench/steps.py)


def main() -> None:
    parser = argparse.ArgumentParser(description="rankadapt vision training-step benchmark")
    parser.add_argument("--model", default=str(DINOV2_SMALL), help="a ViT-family checkpoint directory, or 'tiny'")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="run every variant this many times, keep the fastest")
    parser.add_argument("--out", type=Path, default=Path("bench/results/vision_steps.json"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.model, args.batch, args.warmup, args.repeats, args.threads)))
        return
    best: dict[str, dict] = {}
    for round_ in range(args.rounds):
        for variant in args.variants:
            row = run_variant(variant, args)
            print(f"round {round_ + 1} {variant}: {row['step_seconds']:.3f} s/step, {row['peak_memory_mb']:.0f} MB",
                  flush=True)
            if variant not in best or row["step_seconds"] < best[variant]["step_seconds"]:
                best[variant] = row
    rows = [best[variant] for variant in args.variants]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"model": args.model, "batch": args.batch, "threads": args.threads,
                                    "rounds": args.rounds, "rows": rows}, indent=2))
    print(f"\nmodel {args.model}, batch {args.batch} x {rows[0]['image_size']}², {args.threads} threads, "
          f"median of {args.repeats} steps after {args.warmup} warm-up, fastest of {args.rounds} round(s)\n")
    print(table(rows))


if __name__ == "__main__":
    main()
