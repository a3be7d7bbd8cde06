"""What dynamic padding and length-grouped batches buy, measured in the same run.

    python bench/padding.py [--config configs/imdb.yaml] [--data-dir ../shared/data] [--steps 50]

Runs the quick start's job (``rankadapt train CONFIG``) for its first ``--steps`` optimizer steps three
ways, each a fresh process, evaluating on 64 held-out reviews only (the evaluation is not what is
measured here):

1. ``data.padding=max_length train.group_by_length=false``: every batch padded to 256 tokens, as the
   PEFT + Trainer baseline of ``bench/end_to_end.py`` pads;
2. ``data.padding=longest train.group_by_length=false``: dynamic padding, random batches;
3. the defaults: dynamic padding with length-grouped batches.

Prints the training seconds per step of each (the ``train_seconds`` the trainer records) and the ratio
to the first, and writes ``bench/results/padding.json``. Extra ``key=value`` arguments go to every run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from end_to_end import run_rankadapt

SETTINGS = {
    "fixed padding, random batches": ["data.padding=max_length", "train.group_by_length=false"],
    "dynamic padding, random batches": ["data.padding=longest", "train.group_by_length=false"],
    "dynamic padding, length-grouped": ["data.padding=longest", "train.group_by_length=true"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/imdb.yaml")
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--results", default="bench/results/padding")
    args, extra = parser.parse_known_args()
    common = [f"data.dir={args.data_dir}", f"train.max_steps={args.steps}", "data.eval_limit=64",
              "train.eval_strategy=no", *extra]
    rows = {}
    for i, (name, overrides) in enumerate(SETTINGS.items()):
        out = Path(args.results) / f"setting-{i}"
        seconds = run_rankadapt(args.config, [*common, *overrides, "train.mixed_precision=no"], out)["train_seconds"]
        rows[name] = {"train_seconds": seconds, "seconds_per_step": seconds / args.steps}
        print(f"{name}: {rows[name]['seconds_per_step']:.3f} s/step", flush=True)
    first = next(iter(rows.values()))["seconds_per_step"]
    print("\n| batches | s/step | speed-up |\n|---|---|---|")
    for name, row in rows.items():
        row["speedup"] = first / row["seconds_per_step"]
        print(f"| {name} | {row['seconds_per_step']:.3f} | {row['speedup']:.2f}× |")
    Path(args.results).mkdir(parents=True, exist_ok=True)
    summary = {"config": args.config, "steps": args.steps, "overrides": common, "settings": rows}
    (Path(args.results).parent / "padding.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
