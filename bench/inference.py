"""Inference throughput: the bare base model, a LoRA adapter merged into it, and the same adapter unmerged.

    python bench/inference.py [--batch 64] [--seq 128] [--repeats 10]

Merging folds ΔW = s·B·A into W (``AdaptedModel.merge``), so the merged model runs exactly the base
model's computation; the unmerged adapter pays for the extra low-rank products. All three use the
same weights (all six module types adapted at r = 8), the same batch, threads pinned, eval mode,
no gradients; the figure is the median over repeated forward passes after warm-up, in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from rankadapt.core.config import MethodConfig, ModelConfig
from rankadapt.methods.adapting import prepare_model
from rankadapt.core.models import load_model

SIX = ["query", "key", "value", "attention.output", "intermediate", "layer.output"]


@torch.no_grad()
def throughput(model: torch.nn.Module, inputs: dict[str, torch.Tensor], warmup: int, repeats: int) -> float:
    """Examples per second, median over ``repeats`` forward passes."""
    for _ in range(warmup):
        model(**inputs)
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        model(**inputs)
        times.append(time.perf_counter() - tic)
    return inputs["input_ids"].shape[0] / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    inputs = {"input_ids": torch.randint(1000, 20000, (args.batch, args.seq)),
              "attention_mask": torch.ones(args.batch, args.seq, dtype=torch.long)}
    base = load_model(ModelConfig(name=args.model), 2).eval()
    base_rate = throughput(base, inputs, args.warmup, args.repeats)
    adapted = prepare_model(base, MethodConfig(name="lora", lora_r=8, lora_module=SIX))
    with torch.no_grad():  # a trained adapter: non-zero B so merging really changes W
        for layer in adapted.adapters.values():
            layer.lora_B.normal_(std=0.02)
    unmerged_rate = throughput(adapted.model, inputs, args.warmup, args.repeats)
    adapted.merge()
    merged_rate = throughput(adapted.model, inputs, args.warmup, args.repeats)
    print(f"model {args.model}, batch {args.batch} x seq {args.seq}, {args.threads} threads, "
          f"median of {args.repeats} passes\n")
    print("| model | examples/s | vs base |\n|---|---|---|")
    for name, rate in (("base", base_rate), ("LoRA merged", merged_rate), ("LoRA unmerged", unmerged_rate)):
        print(f"| {name} | {rate:.1f} | {rate / base_rate:.3f} |")


if __name__ == "__main__":
    main()
