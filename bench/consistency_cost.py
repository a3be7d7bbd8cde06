"""What Cutoff and R-drop cost per training step, measured in CPU time so that other jobs on the
machine do not distort the ratio.

    python bench/consistency_cost.py [--steps 8] [--batch 16] [--length 32]

all-MiniLM-L6-v2 with LoRA r = 8 on query and value, one torch thread, a fixed batch of random tokens;
rounds alternate plain training, span Cutoff and R-drop so that drift hits all three alike. Prints
the median CPU milliseconds of one optimizer step (forward, backward, AdamW) per option and its ratio
to plain training.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from rankadapt.tasks.text_classification.augment import build_objective
from rankadapt.core.config import MethodConfig, ModelConfig, TrainConfig
from rankadapt.methods.adapting import prepare_model
from rankadapt.core.models import load_model

OPTIONS = {"plain": TrainConfig(), "span_cutoff": TrainConfig(aug_type="span_cutoff"),
           "rdrop": TrainConfig(reg_loss_wgt=1.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8, help="measured steps per option (after 2 warmup steps)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    adapted = prepare_model(load_model(ModelConfig(), 2), MethodConfig(name="lora", lora_r=8))
    model = adapted.model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    batch = {"input_ids": torch.randint(1000, 20000, (args.batch, args.length)),
             "attention_mask": torch.ones(args.batch, args.length, dtype=torch.long),
             "labels": torch.randint(0, 2, (args.batch,))}
    objectives = {name: build_objective(cfg, model.get_input_embeddings()) for name, cfg in OPTIONS.items()}
    times: dict[str, list[float]] = {name: [] for name in OPTIONS}
    for step in range(args.steps + 2):
        for name, objective in objectives.items():
            start = time.process_time()
            objective(model, batch).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if step >= 2:
                times[name].append(time.process_time() - start)
    plain = statistics.median(times["plain"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:12s} {1000 * median:7.0f} CPU ms/step  x{median / plain:.2f}")


if __name__ == "__main__":
    main()
