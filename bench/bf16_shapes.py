"""Does bf16 autocast keep its lead when every step has another sequence length?

    python bench/bf16_shapes.py [--lora-dropout 0.1]

MiniLM with LoRA r = 8 on all six module types, batch 16, training steps (forward, backward, AdamW)
in fp32 and in bf16 autocast over eight steps each: at one fixed length, at eight different lengths
(as length-grouped batches give), and at those lengths rounded up to multiples of 32. Prints the
milliseconds per token column (one position across the batch), so the rows compare despite
different lengths. A question raised by section 4 of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch

from rankadapt.core.config import MethodConfig, ModelConfig
from rankadapt.methods.adapting import prepare_model
from rankadapt.core.models import load_model

SIX = ["query", "key", "value", "attention.output", "intermediate", "layer.output"]
VARYING = [203, 177, 256, 145, 231, 209, 190, 256]
SCHEDULES = {"fixed 208": [208] * 8, "varying": VARYING, "varying, x32": [-(-n // 32) * 32 for n in VARYING]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lora-dropout", type=float, default=0.0, help="method.lora_dropout (the quick start uses 0.1)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = prepare_model(load_model(ModelConfig(), 2), MethodConfig(name="lora", lora_r=8, lora_module=SIX,
                                                                                lora_dropout=args.lora_dropout)).model
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step(length: int, bf16: bool) -> float:
        batch = {"input_ids": torch.randint(1000, 30000, (16, length)),
                 "attention_mask": torch.ones(16, length, dtype=torch.long), "labels": torch.randint(0, 2, (16,))}
        tic = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return time.perf_counter() - tic

    for bf16 in (False, True):
        for name, lengths in SCHEDULES.items():
            step(lengths[0], bf16)  # warm-up
            seconds = sum(step(n, bf16) for n in lengths)
            print(f"{'bf16' if bf16 else 'fp32'} {name:<13} {1000 * seconds / sum(lengths):.2f} ms per token column")


if __name__ == "__main__":
    main()
