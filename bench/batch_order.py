"""The order of length-grouped batches: transformers' sweep against rankadapt's shuffled order (and
random batches, ``train.group_by_length=false``), for speed and accuracy, on issue 22's short IMDB job.

    python bench/batch_order.py [--seeds 0 1 2 42] [--data-dir ../shared/data] [key=value ...]

Both orders hold the same batches (the same examples padded to the same lengths; tested in
``tests/tasks/test_data.py``). transformers' ``get_length_grouped_indices`` emits each mega-batch's
batches from the longest to the shortest, so a run sweeps from long to short reviews every
``mega_batch_mult`` steps (min(50, n / 4B): 15 on this job); rankadapt's ``LengthGroupedSampler`` shuffles the batches.
``random`` is the same job without length grouping (random batches padded to their longest review).
For each seed, one fresh process per order, one after the other (so a drifting machine affects both):
the short job (``configs/imdb.yaml`` on 1,000 training reviews, lr 1e-3, 500 held-out reviews, one
epoch, ``train.mixed_precision=auto``), with the order swapped in for the ``sweep`` runs. Prints each
run's training seconds and held-out accuracy and the medians, and writes
``bench/results/batch_order-SEEDS.json``; finished runs are not reused.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

from end_to_end import timed

SHORT_JOB = ["data.train_limit=1000", "data.eval_limit=500", "train.learning_rate=1e-3", "train.progress=false",
             "train.tensorboard=false"]
ORDERS = ("sweep", "shuffled", "random")
OWN_OVERRIDES = {"sweep": [], "shuffled": [], "random": ["train.group_by_length=false"]}


def child(order: str, overrides: list[str]) -> None:
    """One run in this process, with transformers' order swapped in for ``sweep``."""
    import torch
    from transformers.trainer_pt_utils import get_length_grouped_indices

    from rankadapt.core.config_files import load_config
    from rankadapt.recipes.finetune import train
    from rankadapt.runtime import sampling

    if order == "sweep":
        def transformers_order(self):
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            return get_length_grouped_indices(self.lengths, self.batch_size, self.mega_batch_mult, generator)
        sampling.LengthGroupedSampler.order = transformers_order
    train(load_config("configs/imdb.yaml", overrides))


def one_run(order: str, seed: int, overrides: list[str], out: Path) -> dict:
    run_dir, load = out / f"{order}-seed{seed}", os.getloadavg()[0]
    command = [sys.executable, __file__, "--child", order, *overrides, *SHORT_JOB, *OWN_OVERRIDES[order],
               f"train.seed={seed}", f"output_dir={run_dir}"]
    timed(command)  # end_to_end's runner: a failing run stops the benchmark
    results = json.loads((run_dir / "results.json").read_text())
    return {"train_seconds": results["train_seconds"], "accuracy": results["final_metrics"]["accuracy"],
            "mixed_precision": results["mixed_precision"], "load_before": load}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 42])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--orders", nargs="+", choices=ORDERS, default=list(ORDERS))
    parser.add_argument("--results", default="bench/results")
    parser.add_argument("--child", choices=ORDERS, help=argparse.SUPPRESS)
    args, extra = parser.parse_known_args()
    if args.child:
        return child(args.child, extra)
    out = Path(args.results) / "batch_order"
    runs = {f"{order}/{seed}": one_run(order, seed, [f"data.dir={args.data_dir}", *extra], out)
            for seed in args.seeds for order in args.orders}
    print(f"\n{'order':<10}" + "".join(f"{'seed ' + str(s):>16}" for s in args.seeds) + f"{'median':>16}")
    summary = {}
    for order in args.orders:
        cells = [runs[f"{order}/{seed}"] for seed in args.seeds]
        summary[order] = {"median_train_seconds": statistics.median(c["train_seconds"] for c in cells),
                          "median_accuracy": statistics.median(c["accuracy"] for c in cells)}
        print(f"{order:<10}" + "".join(f"{c['accuracy']:>8.3f}{c['train_seconds']:>7.1f}s" for c in cells)
              + f"{summary[order]['median_accuracy']:>8.3f}{summary[order]['median_train_seconds']:>7.1f}s")
    Path(args.results, f"batch_order-{'-'.join(map(str, args.seeds))}.json").write_text(json.dumps({"runs": runs, "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
