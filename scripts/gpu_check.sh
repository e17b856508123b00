#!/usr/bin/env bash
# One prepared GPU run: the CUDA-marked tests, the loss / training-step benchmarks, an end-to-end `lidarseg train`
# at 64x2048 with its data-loading share, and `lidarseg infer` timings on CUDA; results as JSON and Markdown.
#
#   bash scripts/gpu_check.sh [OUT_DIR]      # default: $OUT (the device tool's folder), else runs/gpu-check
#
# Runs without a GPU too (CUDA tests skipped, small CPU sizes), to check the script itself. Each stage has its own
# time limit and writes its files as it goes, so a stage that fails or runs out of time leaves the others' results.
# Files: env.json, pytest.txt, bench.json/bench.log, train.log, infer.json, and gpu.json + gpu.md (all merged).
# Nothing is installed: it runs from the working tree (PYTHONPATH) with the machine's torch.
# Environment: PYTHON (default python3), GPU_CHECK_STEPS (training steps end to end, default 200),
# GPU_CHECK_STAGES (default "tests bench train": a rerun can repeat some), GPU_CHECK_BENCH (extra `bench gpu` args).
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python3}
OUT_DIR=${1:-${OUT:-runs/gpu-check}}
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/lidarseg-gpu-check.XXXXXX")
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
start=$(date +%s)
stage() { echo "[gpu_check $(( $(date +%s) - start )) s] $*"; }
stages=" ${GPU_CHECK_STAGES:-tests bench train} "
want() { [[ "$stages" == *" $1 "* ]]; }
cuda=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)

stage "environment"
"$PY" - > "$OUT_DIR/env.json" <<'EOF'
import datetime, json, os, subprocess, torch
def smi(q):
    try:
        return subprocess.run(["nvidia-smi", f"--query-gpu={q}", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=20).stdout.strip()
    except Exception:
        return None
print(json.dumps({"date": str(datetime.date.today()), "torch": torch.__version__, "cuda": torch.version.cuda,
                  "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
                  "driver": smi("driver_version"), "gpu_memory": smi("memory.total"), "cpus": os.cpu_count()}))
EOF
cat "$OUT_DIR/env.json"

want tests && {
stage "1/5 CUDA-marked tests"
per_test=$("$PY" -c "import pytest_timeout" 2>/dev/null && echo "--timeout=60")   # a hung NCCL init fails one test
timeout 110 "$PY" -m pytest -m cuda -p no:cacheprovider -rs -v --continue-on-collection-errors $per_test tests \
  2>&1 | tee "$OUT_DIR/pytest.txt" | grep -E "PASS|FAIL|ERROR|SKIP|passed|failed|Error" | tail -30
}

want bench && {
stage "2/5 benchmarks: loss, crossover, training steps"
budget=$([ "$cuda" = 1 ] && echo 160 || echo 120)
timeout $(( budget + 40 )) "$PY" -m lidarseg bench gpu --json "$OUT_DIR/bench.json" --budget "$budget" \
  $([ "$cuda" = 1 ] || echo "--repeat 2 --models rangenet21") ${GPU_CHECK_BENCH:-} > "$OUT_DIR/bench.log" 2>&1
grep -E "^\[bench gpu|^ours|check " "$OUT_DIR/bench.log"
}

want train && {
stage "3/5 synthetic data for the end-to-end run"
if [ "$cuda" = 1 ]; then width=2048 scans=40; else width=512 scans=8; fi
timeout 80 "$PY" -m lidarseg synth --out "$WORK/data" --sequences 0 1 8 --scans "$scans" --azimuth-steps "$width" \
  > "$WORK/synth.log" 2>&1 || { stage "synth failed:"; tail -5 "$WORK/synth.log"; }
tail -2 "$WORK/synth.log"

stage "4/5 lidarseg train (RangeNet53 recipe, its 8 DataLoader workers) and infer on CUDA"
steps=${GPU_CHECK_STEPS:-200}
per_epoch=$(( 2 * scans / 8 ))
epochs=$(( (steps + per_epoch - 1) / per_epoch ))
[ "$cuda" = 1 ] || epochs=2
common=(--set "data.sensor.width=$width" --set "data.sequences.train=[0,1]" --set "data.sequences.valid=[8]"
        --set "data.sequences.test=[8]" --set "val.every=0" --set "train.progress=false")
[ "$cuda" = 1 ] || common+=(--set "model.width=0.125" --set "model.blocks=[1,1,1,1,1]" --set "data.workers=2")
timeout 120 "$PY" -m lidarseg train --config configs/rangenet53.yaml --data "$WORK/data" --out "$WORK/run" \
  --set "train.epochs=$epochs" "${common[@]}" > "$OUT_DIR/train.log" 2>&1 || stage "train ended with an error"
grep -E "^epoch|rror" "$OUT_DIR/train.log" | tail -6
if [ "$cuda" = 1 ]; then
  timeout 50 "$PY" -m lidarseg train --config configs/rangenet53.yaml --data "$WORK/data" --out "$WORK/run-bf16" \
    --set "train.epochs=4" --set "train.amp=bf16" --set "train.channels_last=true" "${common[@]}" \
    > "$OUT_DIR/train-bf16.log" 2>&1 || stage "bf16 train ended with an error"
  grep -E "^epoch|rror" "$OUT_DIR/train-bf16.log" | tail -3
fi
ckpt="$WORK/run/last.pt"
[ -f "$ckpt" ] && timeout 45 "$PY" -m lidarseg infer --checkpoint "$ckpt" --split valid --out "$WORK/pred" --knn \
  --limit 30 --no-progress --json "$OUT_DIR/infer.json" 2>&1 | tail -8
}

stage "5/5 report"
"$PY" -m lidarseg bench gpu --report "$OUT_DIR" > /dev/null 2>&1 || stage "report failed"
cat "$OUT_DIR/gpu.md" 2>/dev/null
rm -rf "$WORK"
stage "done"
