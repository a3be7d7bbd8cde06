"""End to end: wall-clock time of whole fine-tunes, rankadapt against stock PEFT + the Hugging Face
Trainer on the same examples and hyperparameters, run alternately so that a drifting machine affects both.

    python bench/end_to_end.py [--job short|quick-start] [--pairs 3] [--data-dir ../shared/data]

Two everyday IMDB jobs (MiniLM, LoRA r = 8 on all six module types plus the head, 256 tokens,
batch 16, one epoch, seed 42):

- ``quick-start``: the quick start's ``configs/imdb.yaml`` (3,200 training reviews, lr 2e-3, 2,500
  held-out reviews); it "reaches" the target when its held-out accuracy is at least ``--target`` (0.85);
- ``short``: issue 22's short job, the same config on 1,000 training reviews, lr 1e-3, 500 held-out reviews.

Each round runs, one after the other, each a fresh process timed from launch to exit (imports, model
load, reading and tokenising the data, training, the held-out evaluation, saving the adapter):

- ``peft+trainer``: ``bench/peft_trainer_baseline.py`` (fixed padding to max length, default Trainer
  settings, fp32);
- ``rankadapt``: ``rankadapt train CONFIG`` with ``train.mixed_precision=auto``, the default (bf16 where
  the hardware executes it natively; BENCHMARKS.md section 3 measures its accuracy against fp32);
- ``rankadapt fp32``: the same with ``train.mixed_precision=no`` (the figures beside);
- with ``--torch-dropout``, also ``rankadapt fp32 torch dropout`` (``train.fast_dropout=false``).

The speed-up of a round is its peer's wall time over the job's; the table gives the median of the
rounds' speed-ups, of the wall times and of each process's peak resident memory, the accuracies, the 1-minute load average before each round
(2 cores here: an idle machine reads below ~0.3 after a pause), and rankadapt's own phase times
(``results.json``'s ``phase_seconds``: where its wall time outside the training loop went). Writes
``bench/results/end_to_end-JOB.json``. Extra ``key=value`` arguments go to every job (e.g.
``model.name=DIR`` for a smoke run). rankadapt's tokenisation cache is warm after the first round
(``data.cache_dir``); the first round's figures show the cold start.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
JOBS = {
    "quick-start": [],
    "short": ["data.train_limit=1000", "data.eval_limit=500", "train.learning_rate=1e-3"],
}
PEER = "peft+trainer"


def timed(command: list[str]) -> tuple[float, float]:
    """Run ``command`` to completion; its wall-clock seconds and peak resident memory (MB, from the
    child's own rusage). A failing job stops the benchmark."""
    start = time.perf_counter()
    process = subprocess.Popen(command, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed with exit status {process.returncode}")
    return seconds, usage.ru_maxrss / 1024  # Linux reports KiB


def run_peer(config: str, overrides: list[str], out: Path) -> dict:
    seconds, peak = timed([sys.executable, str(HERE / "peft_trainer_baseline.py"), config, *overrides,
                           f"output_dir={out}"])
    record = json.loads((out / "baseline.json").read_text())
    return {"wall_seconds": seconds, "peak_rss_mb": peak, "accuracy": record["accuracy"],
            "train_seconds": record["train_seconds"], "trainable_parameters": record["trainable_parameters"]}


def run_rankadapt(config: str, overrides: list[str], out: Path) -> dict:
    seconds, peak = timed([sys.executable, "-m", "rankadapt", "train", config, *overrides, f"output_dir={out}",
                           "train.progress=false"])
    record = json.loads((out / "results.json").read_text())
    return {"wall_seconds": seconds, "peak_rss_mb": peak, "accuracy": record["final_metrics"]["accuracy"],
            "train_seconds": record["train_seconds"], "trainable_parameters": record["trainable_parameters"],
            "mixed_precision": record["mixed_precision"], "phase_seconds": record.get("phase_seconds", {})}


def rankadapt_jobs(torch_dropout: bool) -> dict[str, list[str]]:
    """The rankadapt jobs of a round: name -> their own overrides."""
    jobs = {"rankadapt": ["train.mixed_precision=auto"], "rankadapt fp32": ["train.mixed_precision=no"]}
    if torch_dropout:
        jobs["rankadapt fp32 torch dropout"] = ["train.mixed_precision=no", "train.fast_dropout=false"]
    return jobs


def one_round(config: str, overrides: list[str], root: Path, torch_dropout: bool) -> dict[str, dict]:
    results = {PEER: run_peer(config, overrides, root / "peer")}
    for name, own in rankadapt_jobs(torch_dropout).items():
        results[name] = run_rankadapt(config, [*overrides, *own], root / name.replace(" ", "-"))
    return results


def summarise(rounds: list[dict], target: float | None) -> dict[str, dict]:
    """Per job: median wall and training seconds, median speed-up over the same round's peer, accuracies."""
    summary = {}
    for name in rounds[0]["jobs"]:
        runs = [r["jobs"][name] for r in rounds]
        speedups = [r["jobs"][PEER]["wall_seconds"] / r["jobs"][name]["wall_seconds"] for r in rounds]
        row = {"wall_seconds": [round(j["wall_seconds"], 1) for j in runs],
               "median_wall_seconds": statistics.median(j["wall_seconds"] for j in runs),
               "median_peak_rss_mb": statistics.median(j["peak_rss_mb"] for j in runs),
               "median_train_seconds": statistics.median(j["train_seconds"] for j in runs),
               "accuracies": [j["accuracy"] for j in runs], "speedups": [round(s, 3) for s in speedups],
               "median_speedup": statistics.median(speedups)}
        if target is not None:
            row["reached_target"] = all(j["accuracy"] >= target for j in runs)
        if "phase_seconds" in runs[0]:
            phases = {k for j in runs for k in j["phase_seconds"]}
            row["median_phase_seconds"] = {k: round(statistics.median(j["phase_seconds"].get(k, 0.0) for j in runs), 2)
                                           for k in sorted(phases)}
            row["mixed_precision"] = runs[0]["mixed_precision"]
        summary[name] = row
    return summary


def print_table(summary: dict[str, dict], rounds: list[dict]) -> None:
    loads = ", ".join(f"{r['load_before']:.2f}" for r in rounds)
    print(f"\n{len(rounds)} rounds; 1-minute load average before each: {loads}")
    print(f"{'job':<30}{'wall s (median)':>16}{'train s':>9}{'peak MB':>9}{'speed-up (median)':>19}  accuracy")
    for name, row in summary.items():
        accuracy = "/".join(f"{a:.4f}" for a in sorted(set(row["accuracies"])))
        print(f"{name:<30}{row['median_wall_seconds']:>16.1f}{row['median_train_seconds']:>9.1f}"
              f"{row['median_peak_rss_mb']:>9.0f}{row['median_speedup']:>18.2f}x  {accuracy}")
    for name, row in summary.items():
        if "median_phase_seconds" in row:
            phases = ", ".join(f"{k} {v}" for k, v in row["median_phase_seconds"].items())
            print(f"{name} ({row['mixed_precision']}) phases, s: {phases}")


def wait_for_quiet(limit: float, patience: float) -> float:
    """Wait (at most ``patience`` seconds) until the 1-minute load average is below ``limit``; returns it."""
    deadline = time.monotonic() + patience
    while os.getloadavg()[0] >= limit and time.monotonic() < deadline:
        time.sleep(5)
    return os.getloadavg()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--job", choices=sorted(JOBS), default="short")
    parser.add_argument("--config", default="configs/imdb.yaml")
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--pairs", type=int, default=3, help="rounds of peer, rankadapt, rankadapt fp32")
    parser.add_argument("--target", type=float, default=None,
                        help="held-out accuracy to reach (default: 0.85 for quick-start, none for short)")
    parser.add_argument("--torch-dropout", action="store_true",
                        help="also run rankadapt fp32 with train.fast_dropout=false (the before of fast dropout)")
    parser.add_argument("--quiet-load", type=float, default=0.5,
                        help="before each round, wait up to 2 minutes for the 1-minute load average to fall below this")
    parser.add_argument("--results", default="bench/results")
    args, extra = parser.parse_known_args()
    target = args.target if args.target is not None else (0.85 if args.job == "quick-start" else None)
    overrides = [f"data.dir={args.data_dir}", *JOBS[args.job], *extra]
    root = Path(args.results) / f"end_to_end-{args.job}"
    rounds = []
    for index in range(args.pairs):
        load = wait_for_quiet(args.quiet_load, patience=120)
        jobs = one_round(args.config, overrides, root / f"round{index + 1}", args.torch_dropout)
        rounds.append({"load_before": load, "jobs": jobs})
    summary = summarise(rounds, target)
    print_table(summary, rounds)
    record = {"job": args.job, "config": args.config, "overrides": overrides, "target": target,
              "cpu_count": os.cpu_count(), "summary": summary, "rounds": rounds}
    (Path(args.results) / f"end_to_end-{args.job}.json").write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
