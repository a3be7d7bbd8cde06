"""The accuracy and time effect of bf16 autocast against fp32: LoRA and AdaLoRA on IMDB, SST-2 and
MRPC, and LoRA on the quick start's job, three seeds, every run repeated with only
``train.mixed_precision`` changed.

    python bench/mixed_precision.py [--data-dir ../shared/data] [--seeds 0 1 2] [--tasks imdb sst2 mrpc quickstart]

The evidence for ``train.mixed_precision=auto`` being the default (issue 22): bf16 is kept only
where the median over seeds of the main metric stays within 0.5 points of fp32's. The jobs:

- ``imdb``: issue 22's short everyday job, the quick start's config (``configs/imdb.yaml``: MiniLM,
  six module types, r = 8, LoRA dropout 0.1, 256 tokens, batch 16) on 1,000 training reviews, one
  epoch, lr 1e-3, 500 held-out reviews; AdaLoRA from r = 12 to an average of 8 (the same s = α/r = 2);
- ``sst2`` and ``mrpc``: the LoRA and AdaLoRA rows of ``bench/compare_methods.py`` (rank 2 budget,
  3 epochs, batch 32, lr 1e-3; full dev sets);
- ``quickstart``: the README quick start's job as shipped (``configs/imdb.yaml``: 3,200 reviews, lr 2e-3,
  2,500 held-out reviews), LoRA only; the job on which bf16 once diverged (BENCHMARKS.md section 3).

Every run is an ordinary ``rankadapt train`` run under ``--out`` (an existing ``results.json`` is
reused, so an interrupted grid continues). Prints the table of medians and writes
``OUT.json`` beside ``--out`` (``bench/results/mixed_precision.json``). Runs are sequential; the seconds are each run's training
loop, so they are comparable only when the machine was otherwise idle.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from compare_methods import COMMON, METHODS, TASKS

from rankadapt.core.config_files import load_config
from rankadapt.recipes.finetune import train

IMDB_SHORT = ["data.train_limit=1000", "data.eval_limit=500", "train.learning_rate=1e-3"]
IMDB_METHODS = {"lora": [],
                "adalora": ["method.name=adalora", "method.lora_r=12", "method.target_rank=8", "method.lora_alpha=24",
                            "method.mask_interval=1", "method.reg_orth_coef=0.1"]}
QUIET = ["train.export=last", "train.progress=false", "train.tensorboard=false"]
PRECISIONS = ("no", "bf16")
TASK_METHODS = {"imdb": ("lora", "adalora"), "sst2": ("lora", "adalora"), "mrpc": ("lora", "adalora"),
                "quickstart": ("lora",)}


def overrides_for(task: str, method: str) -> tuple[str | None, list[str]]:
    """(config file, overrides) of one job, before data dir, seed, output and precision."""
    if task == "quickstart":
        return "configs/imdb.yaml", list(QUIET)
    if task == "imdb":
        return "configs/imdb.yaml", [*IMDB_SHORT, *QUIET, *IMDB_METHODS[method]]
    return None, [*COMMON, *TASKS[task][0], *METHODS[method]]


def run_one(task: str, method: str, seed: int, precision: str, data_dir: str, out: Path) -> dict:
    run_dir = out / f"{task}-{method}-seed{seed}-{precision}"
    if (run_dir / "results.json").is_file():
        return json.loads((run_dir / "results.json").read_text())
    config_file, overrides = overrides_for(task, method)
    overrides += [f"data.dir={data_dir}", f"train.seed={seed}", f"output_dir={run_dir}",
                  f"train.mixed_precision={precision}"]
    return train(load_config(config_file, overrides))


def main_metric(task: str, results: dict) -> float:
    return results["final_metrics"]["accuracy"]  # IMDB, SST-2 and MRPC all report accuracy


def cells(args: argparse.Namespace) -> list[tuple[str, str]]:
    """The (task, method) pairs of the grid: the asked methods that each task's job has."""
    return [(task, method) for task in args.tasks for method in args.methods if method in TASK_METHODS[task]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--tasks", nargs="+", default=["imdb", "sst2", "mrpc"], choices=sorted(TASK_METHODS))
    parser.add_argument("--methods", nargs="+", default=["lora", "adalora"], choices=["lora", "adalora"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", default="bench/results/mixed_precision")
    args = parser.parse_args()
    out = Path(args.out)
    runs: dict[str, dict] = {}
    for seed in args.seeds:  # seed-major, so an interrupted grid has whole seeds of every cell
        for task, method in cells(args):
            for precision in PRECISIONS:
                results = run_one(task, method, seed, precision, args.data_dir, out)
                runs[f"{task}/{method}/{seed}/{precision}"] = {
                    "metric": main_metric(task, results), "train_seconds": results["train_seconds"],
                    "resolved_precision": results.get("mixed_precision", precision)}
    rows = summarise(runs, args)
    print(f"\n{'task':<11}{'method':<9}{'fp32 median':>12}{'bf16 median':>12}{'change (pt)':>12}"
          f"{'within 0.5':>11}{'time bf16/fp32':>16}")
    for row in rows:
        print(f"{row['task']:<11}{row['method']:<9}{100 * row['fp32_median']:>12.2f}{100 * row['bf16_median']:>12.2f}"
              f"{row['change_points']:>+12.2f}{'yes' if row['within_half_point'] else 'no':>11}"
              f"{row['time_ratio']:>16.2f}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"runs": runs, "rows": rows}, indent=2))


def summarise(runs: dict[str, dict], args: argparse.Namespace) -> list[dict]:
    """Per task and method: the medians over seeds of each precision, their difference in points and
    the median ratio of training times."""
    rows = []
    for task, method in cells(args):
        cell = {p: [runs[f"{task}/{method}/{s}/{p}"] for s in args.seeds] for p in PRECISIONS}
        fp32 = statistics.median(r["metric"] for r in cell["no"])
        bf16 = statistics.median(r["metric"] for r in cell["bf16"])
        ratio = statistics.median(b["train_seconds"] / f["train_seconds"] for f, b in zip(cell["no"], cell["bf16"]))
        change = 100 * (bf16 - fp32)
        rows.append({"task": task, "method": method, "fp32_median": fp32, "bf16_median": bf16,
                     "fp32": [r["metric"] for r in cell["no"]], "bf16": [r["metric"] for r in cell["bf16"]],
                     "change_points": change, "within_half_point": abs(change) <= 0.5, "time_ratio": ratio})
    return rows


if __name__ == "__main__":
    main()
