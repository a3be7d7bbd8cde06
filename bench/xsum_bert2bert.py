"""The real-weights summarization run: bert2bert on XSum through ``rankadapt train``, next to lead-1.

    python bench/xsum_bert2bert.py [--config configs/summarization/xsum-bert2bert.yaml] [KEY=VALUE ...]

No pretrained seq2seq checkpoint can be had offline here, so the shipped config warm-starts an
EncoderDecoderModel from the installed all-MiniLM-L6-v2 (Rothe et al., 2020) and fine-tunes it on the
800 XSum articles of ``xsum/train.jsonl`` (data.dir defaults to ../shared/data). This script runs that
training job exactly as the command line does (``rankadapt.recipes.finetune.train``), then scores the
trivial baseline, each article's first sentence ("lead-1"), on the very same evaluation articles with the
same ROUGE code, and prints both as one table (ROUGE F ×100). Overrides are the command line's
(``method.name=full``, ``train.epochs=1`` ...).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rankadapt.core.config_files import load_config
from rankadapt.core.messages import setup_messages
from rankadapt.recipes.finetune import train
from rankadapt.tasks import family_for_task
from rankadapt.tasks.summarization import lead_1, rouge_scores

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("rouge1", "rouge2", "rougeL", "rougeLsum")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "summarization" / "xsum-bert2bert.yaml"))
    parser.add_argument("overrides", nargs="*", help="key=value, as on the rankadapt command line")
    args = parser.parse_args()
    setup_messages()  # the run's status lines on stderr, as the command line shows them
    overrides = list(args.overrides)
    if not any(o.startswith("data.dir=") for o in overrides):
        overrides.append(f"data.dir={ROOT.parent / 'shared' / 'data'}")
    config = load_config(args.config, overrides)
    family = family_for_task(config.data.task)
    validation = family.load_data(config).eval_splits["validation"]
    baseline = rouge_scores([lead_1(p.source) for p in validation], [p.target for p in validation])
    start = time.perf_counter()
    results = train(config)
    wall = time.perf_counter() - start
    final = results["final_metrics"]
    print(f"\n{config.method.name} bert2bert on {len(validation)} XSum validation articles "
          f"({results['steps']} steps, {wall / 60:.1f} min wall, {results['trainable_parameters']:,} trainable)\n")
    print("| | " + " | ".join(KEYS) + " |\n|---|" + "---|" * len(KEYS))
    print(f"| rankadapt {config.method.name} | " + " | ".join(f"{final[k]:.2f}" for k in KEYS) + " |")
    print("| lead-1 (same articles) | " + " | ".join(f"{baseline[k]:.2f}" for k in KEYS) + " |")
    out = config.resolved_output_dir() / "lead_1.json"
    out.write_text(json.dumps(baseline, indent=2))
    print(f"\npredictions: {config.resolved_output_dir() / 'predictions.jsonl'}; lead-1: {out}")


if __name__ == "__main__":
    main()
