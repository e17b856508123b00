#!/usr/bin/env bash
# Train, then predict and score the validation split.
#
#   bash scripts/train.sh                      # the demo: synthetic data, configs/demo.yaml, < 15 min on 2 cores
#   bash scripts/train.sh --data /data/semantic-kitti --config configs/rangenet53.yaml
#   bash scripts/train.sh --config configs/demo.yaml --out runs/demo2 --set optim.lr=0.002 --seed 1
#
# Options: --data ROOT (SemanticKITTI layout; default: the synthetic dataset, generated if absent),
# --config FILE (default: configs/demo.yaml), --out DIR (default: runs/<config name>), --no-knn (infer without
# KNN); everything else goes to `lidarseg train` (--set key=value, --seed N, --resume auto|PATH, --quiet).
# A run directory that already holds last.pt is continued (--resume auto), so re-running after an interruption
# resumes, and re-running a finished run only repeats the inference.
# Multi-GPU: NPROC=4 bash scripts/train.sh ... runs the training under torchrun with 4 processes.
# Environment: PYTHON (default python3), NPROC (processes for torchrun; default 1 = no torchrun).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
export PYTHON
NPROC=${NPROC:-1}

data="" config="" out="" knn="--knn" resume=1
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --data) data=$2; shift 2 ;;
    --data=*) data=${1#*=}; shift ;;
    --config) config=$2; shift 2 ;;
    --config=*) config=${1#*=}; shift ;;
    --out) out=$2; shift 2 ;;
    --out=*) out=${1#*=}; shift ;;
    --no-knn) knn="--no-knn"; shift ;;
    --resume|--resume=*) resume=0; extra+=("$1"); [ "$1" = --resume ] && { extra+=("$2"); shift; }; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) extra+=("$1"); shift ;;
  esac
done

start=$(date +%s)
bash "$ROOT/scripts/setup_env.sh"
cd "$ROOT"  # `python -m lidarseg` from the repository root also finds the `models` package

[ -n "$data" ] && data=$(cd "$data" && pwd)
if [ -z "$data" ]; then
  echo "[train.sh] dataset: the synthetic dataset (generated once, about a minute or two)"
  "$PYTHON" -c "from lidarseg.data.synthetic import ensure_dataset; print('[train.sh] dataset ready:', ensure_dataset())"
elif [ -z "$config" ]; then
  echo "[train.sh] --data given without --config: choose a recipe, e.g. --config configs/rangenet53.yaml" >&2
  exit 2
fi
config=${config:-configs/demo.yaml}
out=${out:-runs/$(basename "$config" .yaml)}

train_args=(--config "$config" --out "$out")
[ -n "$data" ] && train_args+=(--data "$data")
[ "$resume" = 1 ] && [ -f "$out/last.pt" ] && train_args+=(--resume auto)

echo "[train.sh] training $config -> $out"
if [ "$NPROC" -gt 1 ]; then
  "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node "$NPROC" -m lidarseg train "${train_args[@]}" \
    ${extra[@]+"${extra[@]}"}
else
  "$PYTHON" -m lidarseg train "${train_args[@]}" ${extra[@]+"${extra[@]}"}
fi

ckpt="$out/best.pt"
[ -f "$ckpt" ] || ckpt="$out/last.pt"
infer_args=(--checkpoint "$ckpt" --split valid --out "$out/predictions" "$knn" --no-progress --json "$out/valid.json"
            --overwrite)  # the run's own prediction folder: replaced by the current checkpoint's
[ -n "$data" ] && infer_args+=(--data "$data")
echo "[train.sh] predicting the validation split with $ckpt"
"$PYTHON" -m lidarseg infer "${infer_args[@]}"
echo "[train.sh] done in $(( $(date +%s) - start )) s; TensorBoard: tensorboard --logdir $out/tb"
