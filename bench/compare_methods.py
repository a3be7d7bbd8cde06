"""Real figures: LoRA and the rank-adaptive methods on SST-2 and MRPC with all-MiniLM-L6-v2, at the
same final adapter budget, on this machine's CPU. Produces the README's comparison table.

    python bench/compare_methods.py --data-dir ../shared/data [--tasks sst2 mrpc] [--methods lora adalora ...]

Budget: all six module types of the 6 MiniLM layers are adapted; a rank of one costs
Σ(d_in + d_out) = 41,472 parameters, so the common final budget "average rank 2" is 82,944 adapter
parameters (plus the head, which every method trains). How each method gets there:
- LoRA r = 2, RM-LoRA r = 2 (random_rank 1): fixed rank 2;
- AdaLoRA: initial rank 4 pruned to target_rank 2 by the cubic schedule (final budget exactly 2 x 36);
- ElaLoRA: rank 2 active per matrix at the start, 4 slots; the active total is conserved while ranks move;
- SoRA: starts at r = 4; its proximal step decides the final count, which is reported as achieved.

Every run is an ordinary ``rankadapt train`` run (results.json, metrics.jsonl, adapter/) under --out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import Counter
from pathlib import Path

from rankadapt.core.config_files import load_config
from rankadapt.recipes.finetune import train

SIX = ["query", "key", "value", "attention.output", "intermediate", "layer.output"]
TASKS = {
    # task: (overrides, description)
    "sst2": (["data.task=sst2", "data.max_length=64", "data.train_limit=3000", "train.epochs=3",
              "train.batch_size=32"], "SST-2, 3,000 stratified training sentences, full dev (872)"),
    "mrpc": (["data.task=mrpc", "data.max_length=128", "data.train_limit=2000", "train.epochs=3",
              "train.batch_size=32"], "MRPC, 2,000 stratified training pairs, full dev (408)"),
}
METHODS = {
    "lora": ["method.name=lora", "method.lora_r=2", "method.lora_alpha=4"],
    "adalora": ["method.name=adalora", "method.lora_r=4", "method.target_rank=2", "method.lora_alpha=8",
                "method.mask_interval=1", "method.reg_orth_coef=0.1"],
    "elalora": ["method.name=elalora", "method.lora_r=2", "method.max_rank=4", "method.lora_alpha=4", "method.b=4",
                "method.k=2", "method.mask_interval=10", "method.final_warmup=50"],
    "sora": ["method.name=sora", "method.lora_r=4", "method.lora_alpha=8", "method.sparse_lambda_2=0.005"],
    "rmlora": ["method.name=rmlora", "method.lora_r=2", "method.lora_alpha=4", "method.random_rank=1",
               "method.lora_type=v1"],
}
COMMON = ["model.name=sentence-transformers/all-MiniLM-L6-v2", f"method.lora_module=[{','.join(SIX)}]",
          "train.learning_rate=1e-3", "train.warmup_ratio=0.06", "train.eval_strategy=epoch", "train.export=last",
          "train.progress=false", "train.tensorboard=false",
          "train.mixed_precision=no"]  # the README's table is fp32 (mixed_precision.py overrides it after)


def run_one(task: str, method: str, seed: int, data_dir: str, out: Path) -> dict:
    run_dir = out / f"{task}-{method}-seed{seed}"
    if (run_dir / "results.json").is_file():
        return json.loads((run_dir / "results.json").read_text())
    overrides = [*COMMON, *TASKS[task][0], *METHODS[method], f"data.dir={data_dir}", f"train.seed={seed}",
                 f"output_dir={run_dir}"]
    return train(load_config(None, overrides))


def pattern_summary(pattern: dict[str, int]) -> str:
    """'total 72 over 36 matrices; ranks 1:10 2:16 3:10' — a compact view of a rank pattern."""
    counts = Counter(pattern.values())
    spread = " ".join(f"{r}:{n}" for r, n in sorted(counts.items()))
    return f"total {sum(pattern.values())}; rank:matrices {spread}"


def table(rows: list[dict]) -> str:
    lines = ["| task | method | metric | adapter params (final) | initial | rank pattern | minutes |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        metric = f"{r['metric_name']} {r['metric']:.4f}" + (f", F1 {r['f1']:.4f}" if r.get("f1") is not None else "")
        lines.append(f"| {r['task']} | {r['method']} | {metric} | {r['adapter_parameters']:,} "
                     f"| {r['initial_adapter_parameters']:,} | {r['pattern']} | {r['minutes']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=Path("bench/results/compare"))
    args = parser.parse_args()
    rows = []
    for task in args.tasks:
        for method in args.methods:
            tic = time.perf_counter()
            results = run_one(task, method, args.seed, args.data_dir, args.out)
            name = results["metric_for_best"]
            final = results["final_metrics"]
            rows.append({"task": task, "method": method, "metric_name": name, "metric": final[name],
                         "f1": final.get("f1"),
                         "adapter_parameters": results["adapter_parameters"],
                         "initial_adapter_parameters": results["initial_adapter_parameters"],
                         "pattern": pattern_summary(results["rank_pattern"]),
                         "minutes": results["wall_seconds"] / 60})
            print(f"{task} {method}: {name} {rows[-1]['metric']:.4f} ({time.perf_counter() - tic:.0f} s)", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(table(rows) + "\n")
    (args.out / "rows.json").write_text(json.dumps(rows, indent=2))
    print("\n" + "\n".join(f"- {TASKS[t][1]}" for t in args.tasks))
    print(table(rows))
    print(f"median minutes per run: {statistics.median(r['minutes'] for r in rows):.1f}")


if __name__ == "__main__":
    main()
