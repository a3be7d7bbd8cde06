#!/usr/bin/env bash
# Effect and cost of the consistency-training options (rankadapt.tasks.text_classification.augment) on a real task:
# LoRA on SST-2 (600-example stratified train subset, full 872-example dev set), all-MiniLM-L6-v2,
# 2 epochs, batch 16, seeds 1-3; plain training, span Cutoff (microsoft/LoRA's mnli.cutoff.sh
# settings) and R-drop (mnli.rdrop.sh's weight 1.0). Sized for ~30 min on a shared 2-core CPU.
#
#     bench/consistency_options.sh [RUNS_DIR] [DATA_DIR]
#
# Prints one line per run (option, seed, dev accuracy, training seconds, samples/s); the README's
# table holds the medians. Rerunning skips runs whose results.json exists.
set -euo pipefail
runs=${1:-runs/consistency}
data=${2:-../shared/data}
common=(data.dir="$data" data.train_limit=600 train.epochs=2 train.batch_size=16 train.learning_rate=0.0008
        train.eval_strategy=no train.progress=false train.tensorboard=false)
declare -A options=([plain]="" [span_cutoff]="train.aug_type=span_cutoff train.aug_cutoff_ratio=0.1 train.aug_ce_loss=1.0 train.aug_js_loss=1.0"
                    [rdrop]="train.reg_loss_wgt=1.0")
for seed in 1 2 3; do
  for option in plain span_cutoff rdrop; do
    out="$runs/$option-seed$seed"
    if [ ! -f "$out/results.json" ]; then
      # shellcheck disable=SC2086
      python3 -m rankadapt train configs/glue/sst2.yaml "${common[@]}" train.seed=$seed ${options[$option]} \
        output_dir="$out" > "$runs/$option-seed$seed.log" 2>&1
    fi
    python3 - "$out/results.json" "$option" "$seed" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]:12s} seed {sys.argv[3]}  accuracy {r['final_metrics']['accuracy']:.4f}  "
      f"train {r['train_seconds']:.0f} s  {r['samples_per_second']} samples/s")
PY
  done
done
