"""A real-weights check of the summarization building blocks: bert2bert on XSum, next to lead-1.

    python bench/xsum_bert2bert.py [--data-dir ../shared/data] [--method full|lora] [--epochs 3]

No pretrained seq2seq checkpoint can be had offline, so this warm-starts an EncoderDecoderModel from
the installed all-MiniLM-L6-v2 (encoder and decoder from the same checkpoint, cross-attention new;
Rothe et al., 2020), fine-tunes it on the 800 XSum articles of ``xsum/train.jsonl`` with the family's
label-smoothed loss, and scores beam-search summaries of ``xsum/validation.jsonl`` with the family's
ROUGE, next to the lead-1 baseline computed by the same code. Until issue 15 wires the family into the
training loop, the loop here is a plain one (AdamW, linear decay, length-grouped batches) around the
family's functions and a rankadapt method (``prepare_model``). Writes ``predictions.jsonl`` and
``results.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from rankadapt.core.config import MethodConfig
from rankadapt.methods.adapting import prepare_model
from rankadapt.tasks.summarization import (SummarizationFamily, SummarizationSettings, lead_1, rouge_scores,
                                           target_patterns)
from rankadapt.tasks.summarization.data import length_sorted_batches
from rankadapt.tasks.summarization.family import decode_outputs
from rankadapt.tasks.summarization.rouge import write_predictions

MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def run_config(args) -> SimpleNamespace:
    data = SimpleNamespace(task="xsum", dir=args.data_dir, train_file=None, eval_file=None, text_column=None,
                           train_limit=args.train_limit, eval_limit=args.eval_limit, split_seed=1234,
                           max_length=args.max_length)
    options = SummarizationSettings(max_target_length=64, num_beams=args.beams, batch_size=args.batch_size,
                                    max_new_tokens=args.max_new_tokens, min_new_tokens=min(10, args.max_new_tokens))
    return SimpleNamespace(model=SimpleNamespace(name=MODEL), data=data, task_options=options)


def method_config(name: str, model) -> MethodConfig:
    if name == "full":
        return MethodConfig(name="full")
    return MethodConfig(name=name, lora_r=8, lora_alpha=16, target_modules=target_patterns(model), modules_to_save=[])


def train(adapted, encoded, collate, objective, args) -> list[float]:
    model = adapted.model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    steps = args.epochs * -(-len(encoded) // args.batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: max(0.0, 1 - s / steps))
    losses, rng = [], random.Random(0)
    for epoch in range(args.epochs):
        batches = length_sorted_batches(encoded.lengths, args.batch_size)
        rng.shuffle(batches)
        for batch_indices in batches:
            loss = objective(model, collate([encoded[i] for i in batch_indices]))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            losses.append(loss.item())
        print(f"epoch {epoch + 1}: mean loss {sum(losses[-len(batches):]) / len(batches):.3f}", flush=True)
    return losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--method", default="full")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--beams", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=62)
    parser.add_argument("--train-limit", type=int, default=None)
    parser.add_argument("--eval-limit", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1, help="1 is fastest on a shared CPU (no oversubscription)")
    parser.add_argument("--out", default="bench/results/xsum_bert2bert")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config, family = run_config(args), SummarizationFamily()
    data = family.load_data(config.data, config.task_options)
    validation = data.eval_splits["validation"]
    references = [p.target for p in validation]
    results = {"model": MODEL, "method": args.method, "train_examples": len(data.train),
               "eval_examples": len(validation), "settings": vars(args),
               "lead_1": rouge_scores([lead_1(p.source) for p in validation], references)}
    print("lead-1:", json.dumps(results["lead_1"]), flush=True)

    tokenizer = family.load_processor(MODEL)
    model = family.load_model(config.model, data.spec)
    adapted = prepare_model(model, method_config(args.method, model))
    print(adapted.summary(), flush=True)
    encoded = family.encode("train", data.train, tokenizer, config)
    print(encoded.truncation_report(args.max_length, 64), flush=True)
    start = time.perf_counter()
    losses = train(adapted, encoded, family.collator(tokenizer, config), family.objective(config, model), args)
    results["train_seconds"], results["train_loss_first_last"] = time.perf_counter() - start, [losses[0], losses[-1]]

    evaluation = family.encode("validation", validation, tokenizer, config)
    collate, outputs = family.collator(tokenizer, config), []
    start = time.perf_counter()
    with adapted.merged_for_evaluation(), torch.no_grad():
        for indices in length_sorted_batches(evaluation.lengths, args.batch_size):
            outputs.append(family.eval_step(model.eval(), collate([evaluation[i] for i in indices]), data.spec,
                                            config.task_options))
    gathered = {key: [out[key] for out in outputs] for key in outputs[0]}
    results["eval_seconds"] = time.perf_counter() - start
    results["final_metrics"] = family.compute_metrics(data.spec, gathered, tokenizer, references)
    predictions, _ = decode_outputs(gathered, tokenizer, references)
    out = Path(args.out)
    write_predictions(out / "predictions.jsonl", predictions, references, [p.id for p in validation])
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print("bert2bert:", json.dumps(results["final_metrics"]), flush=True)


if __name__ == "__main__":
    main()
