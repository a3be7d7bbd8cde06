#!/usr/bin/env bash
# The prepared GPU check: the `cuda` tests, then the training-step benchmark on the GPU, in one run.
#
#   bash bench/device_check.sh OUT_DIR            # on a machine with a CUDA GPU (under 8 minutes on one H200)
#   bash bench/device_check.sh OUT_DIR --smoke    # anywhere: the same stages on the CPU, tiny, in minutes
#
# Writes at most four files to OUT_DIR: device_check.json (the environment, every stage's exit status
# and seconds, and each benchmark's rows), device_check.log (everything printed), cuda_tests.xml
# (the tests' JUnit report) and device_check.md (the step tables).
#
# Installs nothing from the network: rankadapt runs from src/ (PYTHONPATH), and what the GPU image
# lacks (pydantic) is installed from the wheels in .whl/ when it is missing (bench/device_wheels.sh
# fetches them on a machine with registry access). Models are built from configs (tiny, MiniLM's
# shape, BERT-base's shape), so no weights or downloads are needed.
#
# Stages, most important first; each has a time limit, and a stage that would start too late for the
# overall budget (DEVICE_CHECK_BUDGET seconds, default 450) is recorded as skipped instead:
#   tests             pytest -m cuda tests/test_cuda.py
#   minilm-fp32       every method, stock PEFT LoRA/AdaLoRA and the frozen floor, MiniLM shape, 32x128
#   minilm-bf16       bf16 autocast, LoRA dropout 0: both sides of the fused product and of the dropout
#   bert-base-bf16    BERT-base shape, 32x256, bf16
#   bert-base-fp32    the same in fp32
#   tiny              fixed per-step overheads (2 layers, hidden 32)
#   padding-*         fixed / dynamic / length-grouped batches of IMDB-like lengths, MiniLM shape, bf16
#   compile           torch.compile against the same variants eagerly (minilm-bf16)
set -uo pipefail

OUT=${1:?usage: bash bench/device_check.sh OUT_DIR [--smoke]}
SMOKE=${2:-}
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d)
LOG="$OUT/device_check.log"
: >"$LOG"
: >"$WORK/stages.tsv"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1

say() { echo "$*" | tee -a "$LOG"; }

# ---- what rankadapt needs, from the repository's own files ------------------------------------------
if ! python3 -c "import pydantic" 2>/dev/null && compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" \
    .whl/*.whl >>"$LOG" 2>&1 || { say "installing .whl/*.whl failed (see $LOG)"; exit 2; }
  export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
if ! python3 -c "import rankadapt.recipes.finetune, peft, psutil, pytest" >>"$LOG" 2>&1; then
  say "rankadapt cannot be imported here (see $LOG); a missing pydantic is fetched by 'bash bench/device_wheels.sh'"
  say "on a machine with registry access, and its .whl/ folder must travel with the repository"
  exit 2
fi

if [ "$SMOKE" = "--smoke" ]; then
  # Every stage, tiny and on the CPU, one or two variants each: that the script works up to CUDA itself.
  DEVICE=cpu BUDGET=${DEVICE_CHECK_BUDGET:-1500} SCALE=4
  MINILM=tiny BERT=tiny SIZE=4x32 LONG=4x64 STEPS=(--warmup 2 --repeats 3 --threads 2)  # AdaLoRA needs > 4 steps
  TESTS=(env RANKADAPT_TEST_DEVICE=cpu python3 -m pytest -m cuda tests/test_cuda.py -q -rs -p no:cacheprovider
         -k "fused_product or overflow" --junitxml="$OUT/cuda_tests.xml")
  EVERY=(floor lora peft-lora) SIDES=(lora-composed lora-fast-dropout) FEW=(adalora) PADDED=(lora) COMPILED=(lora)
elif python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  DEVICE=cuda BUDGET=${DEVICE_CHECK_BUDGET:-450} SCALE=1
  MINILM=minilm BERT=bert-base SIZE=32x128 LONG=32x256 STEPS=(--warmup 3 --repeats 10 --threads 8)
  TESTS=(python3 -m pytest -m cuda tests/test_cuda.py -q -rs -p no:cacheprovider --junitxml="$OUT/cuda_tests.xml")
  EVERY=(floor full lora lora-composed lora-fast-dropout adalora elalora sora rmlora peft-lora peft-adalora)
  SIDES=(floor lora lora-composed lora-fast-dropout adalora peft-lora peft-adalora)
  FEW=(floor lora lora-composed adalora peft-lora peft-adalora) PADDED=(lora peft-lora)
  COMPILED=(lora lora-composed peft-lora)
else
  say "no CUDA device is visible: run on a GPU machine, or pass --smoke for the CPU dry run"
  exit 2
fi

python3 - >"$WORK/environment.json" 2>>"$LOG" <<'EOF'
import json, platform, torch, transformers, peft
info = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
        "peft": peft.__version__, "cuda": torch.version.cuda,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}
print(json.dumps(info))
EOF
say "environment: $(cat "$WORK/environment.json")"

# run_stage NAME LIMIT_SECONDS COMMAND...: runs it under `timeout`, unless too little of the budget is left.
run_stage() {
  local name=$1 limit=$(($2 * SCALE)); shift 2
  local left=$((BUDGET - SECONDS))
  if ((left < limit / 3 || left < 20)); then
    say "== $name: skipped, ${left}s of the ${BUDGET}s budget left"
    printf '%s\t%s\t%s\n' "$name" skipped 0 >>"$WORK/stages.tsv"
    return
  fi
  ((limit > left)) && limit=$left
  say "== $name (at most ${limit}s): $*"
  local start=$SECONDS
  timeout "$limit" "$@" >>"$LOG" 2>&1
  local rc=$?
  say "== $name: exit $rc after $((SECONDS - start))s"
  printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - start))" >>"$WORK/stages.tsv"
}

steps() {  # steps NAME LIMIT MODEL SIZE [steps.py options...]
  local name=$1 limit=$2 model=$3 size=$4; shift 4
  run_stage "$name" "$limit" python3 bench/steps.py --device "$DEVICE" --model "$model" --sizes "$size" \
    "${STEPS[@]}" --out "$WORK/$name.json" "$@"
}

run_stage tests 180 "${TESTS[@]}"
steps minilm-fp32 120 "$MINILM" "$SIZE" --lora-dropout 0.1 --variants "${EVERY[@]}"
# LoRA dropout 0 here: on CUDA an adapter with dropout takes the composed path (torch's dropout), so only
# without it do lora and lora-composed compare the fused product; lora-fast-dropout: the encoder's masks.
steps minilm-bf16 80 "$MINILM" "$SIZE" --lora-dropout 0 --autocast bf16 --variants "${SIDES[@]}"
steps bert-base-bf16 80 "$BERT" "$LONG" --lora-dropout 0.1 --autocast bf16 --variants "${SIDES[@]}"
steps bert-base-fp32 70 "$BERT" "$LONG" --lora-dropout 0.1 --variants "${FEW[@]}"
steps tiny 60 tiny "$SIZE" --variants "${FEW[@]}"
for padding in fixed dynamic grouped; do
  steps "padding-$padding" 30 "$MINILM" "$LONG" --lora-dropout 0.1 --autocast bf16 --padding "$padding" \
    --variants "${PADDED[@]}"
done
steps compile 120 "$MINILM" "$SIZE" --lora-dropout 0.1 --autocast bf16 --compile --variants "${COMPILED[@]}"

python3 - "$WORK" "$OUT" <<'EOF'
"""Gather the stages into device_check.json and their step tables into device_check.md."""
import json, sys
from pathlib import Path

sys.path.insert(0, "bench")
from steps import table

work, out = Path(sys.argv[1]), Path(sys.argv[2])
stages, tables = [], []
for line in (work / "stages.tsv").read_text().splitlines():
    name, status, seconds = line.split("\t")
    result = work / f"{name}.json"
    record = {"name": name, "exit": status, "seconds": int(seconds)}
    if result.is_file():
        record["result"] = json.loads(result.read_text())
        rows, failures = record["result"]["rows"], record["result"]["failures"]
        failed = "".join(f"\nfailed: {f['variant']} {f['batch']}x{f['seq']}: {f['error'].strip().splitlines()[-1]}"
                         for f in failures)
        tables.append(f"### {name}\n\n{table(rows) if rows else '(no rows)'}\n{failed}\n")
    stages.append(record)
environment = json.loads((work / "environment.json").read_text())
(out / "device_check.json").write_text(json.dumps({"environment": environment, "stages": stages}, indent=2))
(out / "device_check.md").write_text("\n".join(tables))
failed = [s["name"] for s in stages if s["exit"] != "0" or s.get("result", {}).get("failures")]
print(f"device check: {len(stages)} stages, not passed: {', '.join(failed) or 'none'}")
EOF
rm -rf "$WORK"
say "done in ${SECONDS}s; results in $OUT"
