"""The accuracy and time effect of bf16 autocast: the same LoRA run on SST-2 in fp32 and in bf16.

    python bench/mixed_precision.py [--data-dir ../shared/data]

The run is the LoRA row of ``bench/compare_methods.py`` (MiniLM, all six module types at r = 2,
3,000 stratified training sentences, full dev set, 3 epochs, seed 42); only
``train.mixed_precision`` differs. Prints dev accuracy and training seconds for both.
"""

from __future__ import annotations

import argparse
import json

from compare_methods import COMMON, METHODS, TASKS

from rankadapt.core.config_files import load_config
from rankadapt.recipes.finetune import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="../shared/data")
    args = parser.parse_args()
    figures = {}
    for precision in ("no", "bf16"):
        overrides = [*COMMON, *TASKS["sst2"][0], *METHODS["lora"], f"data.dir={args.data_dir}", "train.seed=42",
                     f"output_dir=bench/results/bf16/sst2-lora-{precision}", f"train.mixed_precision={precision}"]
        results = train(load_config(None, overrides))
        figures[precision] = {"accuracy": results["final_metrics"]["accuracy"], "train_seconds": results["train_seconds"]}
    print(json.dumps(figures, indent=2))
    print(f"bf16 / fp32 training time: {figures['bf16']['train_seconds'] / figures['no']['train_seconds']:.2f}; "
          f"accuracy change: {100 * (figures['bf16']['accuracy'] - figures['no']['accuracy']):+.2f} points")


if __name__ == "__main__":
    main()
