"""End to end: wall-clock time for a whole fine-tune to reach the target accuracy on held-out IMDB,
rankadapt against stock PEFT + the Hugging Face Trainer, same data and hyperparameters.

    python bench/end_to_end.py [--config configs/imdb.yaml] [--data-dir ../shared/data] [--target 0.85]

Three jobs, each a fresh process timed from launch to exit (imports, model load, reading and
tokenising the data, training, the held-out evaluation, saving the adapter):

- ``peft+trainer``: ``bench/peft_trainer_baseline.py`` (fixed padding to max length, default
  Trainer settings, fp32);
- ``rankadapt``: ``rankadapt train CONFIG`` (length-grouped batches with dynamic padding, cached
  tokenisation, one evaluation at the end), fp32;
- ``rankadapt bf16``: the same with ``train.mixed_precision=bf16`` (bf16 autocast; skipped where
  the hardware lacks it, see ``--precisions``);
- with ``--torch-dropout``, also ``rankadapt torch dropout``: fp32 with ``train.fast_dropout=false``,
  torch's own dropout masks: what the fast masks bought, measured in the same run.

A job "reaches" the target when its final held-out accuracy is at least ``--target``; the speed-up
is the baseline's wall time over the job's. Prints a table and writes ``bench/results/end_to_end.json``.
Extra ``key=value`` arguments go to all three jobs (e.g. ``model.name=DIR`` for a smoke run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def timed(command: list[str]) -> float:
    """Run ``command`` to completion; its wall-clock seconds. A failing job stops the benchmark."""
    start = time.perf_counter()
    done = subprocess.run(command, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed with exit status {done.returncode}")
    return time.perf_counter() - start


def run_baseline(config: str, overrides: list[str], out: Path) -> dict:
    seconds = timed([sys.executable, str(HERE / "peft_trainer_baseline.py"), config, *overrides,
                     f"output_dir={out}"])
    record = json.loads((out / "baseline.json").read_text())
    return {"wall_seconds": seconds, "accuracy": record["accuracy"], "train_seconds": record["train_seconds"],
            "trainable_parameters": record["trainable_parameters"]}


def run_rankadapt(config: str, overrides: list[str], out: Path, precision: str, fast_dropout: bool = True) -> dict:
    seconds = timed([sys.executable, "-m", "rankadapt", "train", config, *overrides, f"output_dir={out}",
                     f"train.mixed_precision={precision}", f"train.fast_dropout={str(fast_dropout).lower()}",
                     "train.progress=false"])
    record = json.loads((out / "results.json").read_text())
    metric = record["final_metrics"]
    return {"wall_seconds": seconds, "accuracy": metric["accuracy"], "train_seconds": record["train_seconds"],
            "trainable_parameters": record["trainable_parameters"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/imdb.yaml")
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--target", type=float, default=0.85)
    parser.add_argument("--precisions", nargs="+", default=["no", "bf16"], choices=["no", "bf16"],
                        help="rankadapt jobs to run (train.mixed_precision values)")
    parser.add_argument("--torch-dropout", action="store_true",
                        help="also run rankadapt fp32 with train.fast_dropout=false (the before of fast dropout)")
    parser.add_argument("--results", default="bench/results/end_to_end")
    args, overrides = parser.parse_known_args()
    overrides = [f"data.dir={args.data_dir}", *overrides]
    root = Path(args.results)
    jobs = {"peft+trainer": run_baseline(args.config, overrides, root / "baseline")}
    if args.torch_dropout:
        jobs["rankadapt torch dropout"] = run_rankadapt(args.config, overrides, root / "rankadapt-torch-dropout", "no",
                                                        fast_dropout=False)
    for precision in args.precisions:
        name = "rankadapt" if precision == "no" else f"rankadapt {precision}"
        jobs[name] = run_rankadapt(args.config, overrides, root / f"rankadapt-{precision}", precision)

    base = jobs["peft+trainer"]["wall_seconds"]
    print(f"\n{'job':<24}{'wall s':>9}{'train s':>9}{'accuracy':>10}{'reached':>9}{'speed-up':>10}")
    for name, job in jobs.items():
        job["reached_target"] = job["accuracy"] >= args.target
        job["speedup_vs_baseline"] = base / job["wall_seconds"]
        print(f"{name:<24}{job['wall_seconds']:>9.1f}{job['train_seconds']:>9.1f}{job['accuracy']:>10.4f}"
              f"{'yes' if job['reached_target'] else 'no':>9}{job['speedup_vs_baseline']:>9.2f}x")
    summary = {"config": args.config, "overrides": overrides, "target": args.target, "jobs": jobs,
               "threads": os.cpu_count()}
    root.mkdir(parents=True, exist_ok=True)
    (root.parent / "end_to_end.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
