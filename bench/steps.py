"""Training-step time, peak memory and per-step method overhead, measured in the same run.

    python bench/steps.py                       # MiniLM, batch 32 x seq 128, every variant
    python bench/steps.py --sizes 16x128 32x128 16x256 32x256 --out bench/results/steps.json
    python bench/steps.py --model tiny          # fixed per-step overheads on a 2-layer model
    python bench/steps.py --variants floor lora peft-lora --profile 8   # where the time goes
    python bench/steps.py --device cuda --model bert-base --autocast bf16 --sizes 32x256   # on a GPU
    python bench/steps.py --device cuda --model minilm --variants lora --padding grouped --lora-dropout 0.1

Models: a Hugging Face name or directory (default: MiniLM, the offline package), or a shape built from a
config with random weights (a step's time does not depend on the weights' values, and no download or
package is needed): ``tiny`` (2 layers, hidden 32: the fixed per-step overheads), ``minilm`` (the
shape of all-MiniLM-L6-v2: 6 layers, hidden 384) and ``bert-base`` (12 layers, hidden 768).

Variants (all six module types adapted at r = 8 for the adapter methods, as the PEFT comparison in
the issue): ``floor`` (the frozen model's forward and backward with gradients flowing through every
layer to the input: the least any adapter method can cost), ``full``, rankadapt's ``lora``,
``adalora``, ``elalora``, ``sora``, ``rmlora``, and stock PEFT's ``peft-lora`` and ``peft-adalora``.
rankadapt's variants run as ``rankadapt train`` runs them, with its fast dropout masks
(``train.fast_dropout``, ``rankadapt.core.dropout``) on the encoder's dropouts and the adapters'; two more
variants give the before/after in the same run: ``floor-fast-dropout`` (the floor with those masks:
what is left of the step for the adapter to cost) and ``lora-torch-dropout`` (rankadapt's LoRA with
torch's dropout, ``train.fast_dropout=false``); ``lora-composed`` is rankadapt's LoRA with the adapter
product as separate autograd operations instead of the fused function (``rankadapt.core.layer``).
``--lora-dropout`` sets the adapters' input dropout for rankadapt and PEFT alike (default 0, PEFT's
default). ``lora-fast-dropout`` forces the fast dropout masks on whatever the device is (on CUDA rankadapt
uses torch's dropout, which is ``lora`` there): the other side of that choice on a GPU.

The choices a GPU may change, each measured from both sides: the fused product (``lora`` against
``lora-composed``), the dropout implementation (``lora`` against ``lora-fast-dropout``), padding and
length grouping (``--padding``: batches of lengths drawn from a seeded IMDB-like distribution, padded to
the full length, to each random batch's longest, or grouped by length with rankadapt's
``LengthGroupedSampler``; mean step time, since the shapes vary) and ``torch.compile`` (``--compile``,
its first step's compilation reported apart).

Each variant runs in a fresh subprocess with the same synthetic batch, torch threads pinned, a few
warm-up steps, then the median over repeated steps (on CUDA each step is timed between two
synchronisations). Peak memory on CUDA is ``torch.cuda.max_memory_allocated`` minus what the model and
optimizer held before the first step; on CPU it is the highest resident-set size
sampled (every 2 ms) over all steps minus the resident size after the model and optimizer were built:
the training step's working memory (activations, gradients, optimizer state). The method-work column times the policy hooks
(importance update and masking, proximal step, gradient masks, the regulariser) inside the step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path

VARIANTS = ["floor", "floor-fast-dropout", "full", "lora", "lora-torch-dropout", "lora-composed", "lora-fast-dropout",
            "adalora", "elalora", "sora", "rmlora", "peft-lora", "peft-adalora"]
SIX = ["query", "key", "value", "attention.output", "intermediate", "layer.output"]
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
SHAPES = {  # models built from a config (BERT architecture), random weights
    "tiny": dict(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
    "minilm": dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                   intermediate_size=1536),
    "bert-base": dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                      intermediate_size=3072),
}
PADDINGS = ["none", "fixed", "dynamic", "grouped"]


# ----------------------------------------------------------------------------------------------------
# Worker: one variant, one size, in its own process
# ----------------------------------------------------------------------------------------------------

class PeakRSS:
    """Samples this process's resident set size in a thread; ``peak`` is the maximum seen."""

    def __init__(self) -> None:
        import psutil

        self.process = psutil.Process()
        self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.002)

    def __enter__(self) -> PeakRSS:
        self.start = self.process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def build(variant: str, model_name: str, total_steps: int, contexts: ExitStack, lora_dropout: float = 0.0,
          device: str = "cpu"):
    """(model, optimizer, policy or None, adapters) for one variant, all weights seeded identically.

    Variants rankadapt trains get its fast dropout masks, as the trainer's ``train.fast_dropout``
    does, entered on ``contexts`` (the caller closes it when the steps are done)."""
    import torch

    from rankadapt.core.dropout import fast_dropout

    from rankadapt.core.config import MethodConfig, ModelConfig
    from rankadapt.methods.adapting import prepare_model
    from rankadapt.core.models import load_model

    torch.manual_seed(0)
    if model_name in SHAPES:
        import transformers

        config = transformers.BertConfig(**SHAPES[model_name])
        model = transformers.AutoModelForSequenceClassification.from_config(config)
    else:
        model = load_model(ModelConfig(name=model_name), 2)
    model.to(device)
    policy, adapters = None, {}
    if variant.startswith("floor"):
        model.requires_grad_(False)
        embeddings = model.base_model.embeddings
        embeddings.register_forward_hook(lambda module, inputs, output: output.requires_grad_(True))
    elif variant.startswith("peft-"):
        import peft

        targets = ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"]
        if variant == "peft-lora":
            config = peft.LoraConfig(task_type="SEQ_CLS", r=8, lora_alpha=16, target_modules=targets,
                                     lora_dropout=lora_dropout)
        else:
            config = peft.AdaLoraConfig(task_type="SEQ_CLS", init_r=8, target_r=4, lora_alpha=16, tinit=2,
                                        lora_dropout=lora_dropout,
                                        tfinal=2, deltaT=1, total_step=total_steps, target_modules=targets)
        model = peft.get_peft_model(model, config)
    else:
        extra = {"adalora": {"target_rank": 4, "init_warmup": 2, "final_warmup": 2, "mask_interval": 1},
                 "elalora": {"init_warmup": 2, "final_warmup": 2, "mask_interval": 1},
                 "rmlora": {"random_rank": 4}}.get(variant, {})
        method_name = variant.removesuffix("-torch-dropout").removesuffix("-composed").removesuffix("-fast-dropout")
        adapter = {"lora_r": 8, "lora_module": SIX, "lora_dropout": lora_dropout}
        method = MethodConfig(name=method_name, **({} if variant == "full" else adapter), **extra)
        adapted = prepare_model(model, method)
        policy, adapters = adapted.policy, adapted.adapters
        if hasattr(policy, "seed"):
            policy.seed = 0
        policy.setup(adapters, total_steps)
        if variant.endswith("-composed"):  # the before of the fused adapter product
            for layer in adapters.values():
                layer.fused_product = False
    if variant.endswith("-fast-dropout"):
        force_fast_dropout()
    if not (variant in ("floor", "lora-torch-dropout") or variant.startswith("peft-")):
        contexts.enter_context(fast_dropout(model))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4) if params else None
    return model.train(), optimizer, policy, adapters


def force_fast_dropout() -> None:
    """Use the fast dropout masks on any device (rankadapt uses them on CPU only): the GPU side of the
    dropout choice. Patches the one predicate every fast path asks, where each module looks it up."""
    import rankadapt.core.dropout
    import rankadapt.core.layer

    def on_every_device(x, p: float, training: bool) -> bool:
        return training and p > 0.0

    rankadapt.core.dropout.uses_fast_path = rankadapt.core.layer.uses_fast_path = on_every_device


def batch_shapes(batch: int, seq: int, steps: int, padding: str, vocab: int, seed: int = 0) -> list[dict]:
    """The inputs of ``steps`` training steps.

    ``none``: one batch of ``batch`` x ``seq`` tokens, all real, every step. Otherwise lengths drawn once
    from a log-normal (median 0.45·seq, σ 0.6; IMDB reviews at max_length 256 look like that), clipped to
    [8, seq], and batched: ``fixed`` random batches padded to ``seq``, ``dynamic`` random batches padded to
    their longest, ``grouped`` batches of rankadapt's ``LengthGroupedSampler`` padded to their longest;
    the steps take batches spread evenly over that epoch (length grouping sorts within mega-batches).
    """
    import torch

    from rankadapt.runtime.sampling import LengthGroupedSampler

    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (batch,), generator=gen)
    if padding == "none":
        ids = torch.randint(1000 % vocab, vocab, (batch, seq), generator=gen)
        return [{"input_ids": ids, "attention_mask": torch.ones(batch, seq, dtype=torch.long), "labels": labels}] * steps
    pool = batch * max(steps, 200)  # enough examples for length grouping's mega-batches
    lengths = (torch.randn(pool, generator=gen) * 0.6).exp().mul(0.45 * seq).round().clamp(8, seq).long().tolist()
    if padding == "grouped":
        order = LengthGroupedSampler(lengths, batch, seed=seed).order()
    else:
        order = torch.randperm(pool, generator=gen).tolist()
    batches, stride = [], pool // batch // steps  # batches spread over the epoch: every length range
    for step in range(steps):
        start = step * stride * batch
        rows = [lengths[i] for i in order[start:start + batch]]
        width = seq if padding == "fixed" else max(rows)
        mask = (torch.arange(width)[None, :] < torch.tensor(rows)[:, None]).long()
        ids = torch.randint(1000 % vocab, vocab, (batch, width), generator=gen) * mask
        batches.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return batches


def profile_ops(step, top: int, steps: int = 2) -> list[tuple[str, float]]:
    """The ``top`` operators by self CPU time (ms per step) over ``steps`` profiled steps: where a
    step's time goes, to explain a ratio (BENCHMARKS.md)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    return [(e.key, e.self_cpu_time_total / 1000 / steps) for e in events[:top]]


def worker(variant: str, model_name: str, batch: int, seq: int, warmup: int, repeats: int, threads: int,
           autocast: str = "no", profile: int = 0, lora_dropout: float = 0.0, device: str = "cpu",
           padding: str = "none", compile_model: bool = False) -> dict:
    import contextlib

    import torch

    from rankadapt.methods import StepContext

    torch.set_num_threads(threads)
    total = warmup + repeats
    contexts = ExitStack()  # held until the worker returns: closing it restores torch's dropout
    model, optimizer, policy, adapters = build(variant, model_name, total, contexts, lora_dropout, device)
    batches = [{k: v.to(device) for k, v in b.items()}
               for b in batch_shapes(batch, seq, total, padding, model.config.vocab_size)]
    forward = torch.compile(model) if compile_model else model
    peft_adalora = variant == "peft-adalora"
    device_type = torch.device(device).type
    precision = (torch.autocast(device_type, dtype=torch.bfloat16) if autocast == "bf16"
                 else contextlib.nullcontext())
    on_cuda = device_type == "cuda"

    def train_step(step: int) -> float:
        """One step in the trainer's order; returns the seconds spent in the method's hooks."""
        with precision:
            loss = forward(**batches[step]).loss
        hook = 0.0
        if policy is not None:
            t = time.perf_counter()
            reg = policy.regularization(adapters)
            if reg is not None:
                loss = loss + reg
            hook += time.perf_counter() - t
        loss.backward()
        if optimizer is not None:
            ctx = StepContext(step=step, total_steps=total, lr=1e-4, optimizer=optimizer)
            t = time.perf_counter()
            if policy is not None:
                policy.before_optimizer_step(adapters, ctx)
            hook += time.perf_counter() - t
            optimizer.step()
            t = time.perf_counter()
            if policy is not None:
                policy.after_optimizer_step(adapters, ctx)
                policy.after_scheduler_step(adapters, ctx)
            if peft_adalora:
                model.base_model.update_and_allocate(step)
            hook += time.perf_counter() - t
            optimizer.zero_grad(set_to_none=True)
        return hook

    step_times, hook_times = [], []
    if on_cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        held = torch.cuda.memory_allocated()
    rss = PeakRSS().__enter__()  # from before the first step: activations, gradients, optimizer state
    for step in range(total):
        tic = time.perf_counter()
        hook = train_step(step)
        if on_cuda:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - tic
        step_times.append(elapsed)
        hook_times.append(hook)
    rss.__exit__()
    peak = (torch.cuda.max_memory_allocated() - held) if on_cuda else rss.peak - rss.start
    timed = step_times[warmup:]
    # With varying shapes the mean is the cost of an epoch; with one shape the median resists outliers.
    typical = statistics.median(timed) if padding == "none" else statistics.mean(timed)
    tokens = sum(int(b["attention_mask"].sum()) for b in batches[warmup:])
    padded = sum(b["attention_mask"].numel() for b in batches[warmup:])
    ops = profile_ops(lambda: train_step(total - 1), profile) if profile else []
    contexts.close()
    suffix = ("+bf16" if autocast == "bf16" else "") + ("" if padding == "none" else f"+pad-{padding}") + (
        "+compile" if compile_model else "")
    return {"ops_ms_per_step": ops, "variant": variant + suffix, "model": model_name, "batch": batch,
            "seq": seq, "threads": threads, "device": _device_name(device), "padding": padding,
            "step_seconds": typical, "step_seconds_all": timed, "first_step_seconds": step_times[0],
            "peak_memory_mb": peak / 2**20, "real_tokens_per_second": tokens / sum(timed),
            "padding_fraction": 1 - tokens / padded,
            "method_work_seconds": statistics.median(hook_times[warmup:]),
            "method_work_fraction": statistics.median(hook_times[warmup:]) / typical}


def _device_name(device: str) -> str:
    import torch

    return torch.cuda.get_device_name(torch.device(device)) if torch.device(device).type == "cuda" else "cpu"


# ----------------------------------------------------------------------------------------------------
# Driver: every variant x size in subprocesses, then the table
# ----------------------------------------------------------------------------------------------------

def run_json_worker(cmd: list[str], threads: int, label: str) -> dict:
    """Run one benchmark worker in a fresh process (threads pinned) and return the JSON record it
    prints last; a failure raises with the end of its stderr."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{label} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def adapter_table(rows: list[dict]) -> str:
    """Markdown rows of step time and peak memory per variant, against ``floor`` and ``peft-lora``."""
    by_name = {r["variant"]: r for r in rows}
    lines = ["| variant | trainable params | step (s) | × floor | × PEFT LoRA | peak mem (MB) | × PEFT LoRA mem |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = lambda name, key: f"{r[key] / by_name[name][key]:.2f}" if name in by_name else "–"
        lines.append(f"| {r['variant']} | {r['trainable_parameters']:,} | {r['step_seconds']:.3f} | "
                     f"{ratio('floor', 'step_seconds')} | {ratio('peft-lora', 'step_seconds')} | "
                     f"{r['peak_memory_mb']:.0f} | {ratio('peft-lora', 'peak_memory_mb')} |")
    return "\n".join(lines)


def run_variant(variant: str, args, batch: int, seq: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", variant, "--model", args.model, "--sizes", f"{batch}x{seq}",
           "--warmup", str(args.warmup), "--repeats", str(args.repeats), "--threads", str(args.threads),
           "--autocast", args.autocast, "--profile", str(args.profile), "--lora-dropout", str(args.lora_dropout),
           "--device", args.device, "--padding", args.padding] + (["--compile"] if args.compile else [])
    return run_json_worker(cmd, args.threads, f"{variant} {batch}x{seq}")


def table(rows: list[dict]) -> str:
    lines = ["| size | variant | step (s) | × floor | × fast floor | × PEFT LoRA | × PEFT AdaLoRA | peak mem (MB) "
             "| method work |", "|---|---|---|---|---|---|---|---|---|"]
    by_size: dict[tuple[int, int], dict[str, dict]] = {}
    for r in rows:
        by_size.setdefault((r["batch"], r["seq"]), {})[r["variant"]] = r
    for (batch, seq), group in by_size.items():
        for variant, r in group.items():
            suffix = variant[len(variant.split("+")[0]):]  # compare bf16 rows with bf16 references
            ref = lambda name: group.get(name + suffix, {}).get("step_seconds")
            ratio = lambda base: f"{r['step_seconds'] / base:.2f}" if base else "–"
            lines.append(f"| {batch}x{seq} | {variant} | {r['step_seconds']:.3f} | {ratio(ref('floor'))} | "
                         f"{ratio(ref('floor-fast-dropout'))} | {ratio(ref('peft-lora'))} | {ratio(ref('peft-adalora'))} | {r['peak_memory_mb']:.0f} | "
                         f"{100 * r['method_work_fraction']:.1f}% |")
    return "\n".join(lines)


def profile_table(rows: list[dict]) -> str:
    """Milliseconds per step of each variant's costliest operators, side by side."""
    names = list(dict.fromkeys(op for r in rows for op, _ in r["ops_ms_per_step"]))
    header = "| operator | " + " | ".join(f"{r['variant']} {r['batch']}x{r['seq']}" for r in rows) + " |"
    lines = [header, "|---" * (len(rows) + 1) + "|"]
    for name in names:
        cells = [dict(r["ops_ms_per_step"]).get(name) for r in rows]
        lines.append(f"| {name} | " + " | ".join("–" if c is None else f"{c:.0f}" for c in cells) + " |")
    totals = [sum(ms for _, ms in r["ops_ms_per_step"]) for r in rows]
    lines.append("| (these operators) | " + " | ".join(f"{t:.0f}" for t in totals) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="rankadapt training-step benchmark")
    parser.add_argument("--model", default=MINILM,
                        help=f"{MINILM} (default), a model directory, or a shape built from a config: {', '.join(SHAPES)}")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--padding", default="none", choices=PADDINGS,
                        help="none: one full batch every step; else variable lengths padded fixed / dynamic / grouped")
    parser.add_argument("--compile", action="store_true", help="train through torch.compile(model)")
    parser.add_argument("--sizes", nargs="+", default=["32x128"], help="BATCHxSEQ, e.g. 16x128 32x256")
    parser.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/results/steps.json"))
    parser.add_argument("--autocast", default="no", choices=["no", "bf16"],
                        help="bf16 autocast for the forward pass (on the chosen device)")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="also profile two steps per variant and print the N costliest operators")
    parser.add_argument("--lora-dropout", type=float, default=0.0,
                        help="dropout on the adapters' input, rankadapt and PEFT alike (the quick start uses 0.1)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes]
    if args.worker:
        print(json.dumps(worker(args.worker, args.model, *sizes[0], args.warmup, args.repeats, args.threads,
                                args.autocast, args.profile, args.lora_dropout, args.device, args.padding,
                                args.compile)))
        return
    rows, failures = [], []
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after every variant: a run stopped by a time limit keeps what it measured
        args.out.write_text(json.dumps({"model": args.model, "device": rows[0]["device"] if rows else args.device,
                                        "threads": args.threads, "lora_dropout": args.lora_dropout,
                                        "autocast": args.autocast, "padding": args.padding, "compile": args.compile,
                                        "rows": rows, "failures": failures}, indent=2))

    for batch, seq in sizes:
        for variant in args.variants:
            try:
                rows.append(run_variant(variant, args, batch, seq))
            except RuntimeError as err:  # recorded, and the other variants still run (torch.compile may fail)
                failures.append({"variant": variant, "batch": batch, "seq": seq, "error": str(err)[-3000:]})
                print(f"{batch}x{seq} {variant}: FAILED\n{failures[-1]['error'][-800:]}", flush=True)
                save()
                continue
            save()
            print(f"{batch}x{seq} {variant}: {rows[-1]['step_seconds']:.3f} s/step, "
                  f"{rows[-1]['peak_memory_mb']:.0f} MB", flush=True)
    print(f"\nmodel {args.model} on {rows[0]['device'] if rows else args.device}, {args.threads} threads, "
          f"lora_dropout {args.lora_dropout}, {'mean' if args.padding != 'none' else 'median'} of {args.repeats} "
          f"steps after {args.warmup} warm-up\n")
    print(table(rows))
    if failures:
        print("\nfailed (see the JSON): " + ", ".join(f"{f['variant']} {f['batch']}x{f['seq']}" for f in failures))
    if args.profile:
        print("\n" + profile_table(rows))


if __name__ == "__main__":
    main()
