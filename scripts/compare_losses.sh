#!/usr/bin/env bash
# The loss comparison on the synthetic dataset (issue 8): trains the demo model (configs/demo.yaml) with
# cross-entropy, class-weighted CE, the subclassified loss and the subclassified loss with class weights, for each
# seed; predicts the validation split with KNN; scores it with `lidarseg evaluate`; then writes the tables
# (docs/results-tables.md), the per-class gain figure and the weight-map figure (docs/figures/).
#
#   bash scripts/compare_losses.sh                              # all four losses, seeds 0 and 1
#   SEEDS="0 1 2" VARIANTS="ce subclassified" bash scripts/compare_losses.sh --set train.epochs=10
#
# Environment: SEEDS (default "0 1"), VARIANTS (default "ce wce subclassified subclassified_wce"), OUT (default
# runs/compare), CONFIG (default configs/demo.yaml), PYTHON. Extra arguments go to every `lidarseg train`.
# A run whose eval.json exists is skipped, so the script can be re-run after an interruption.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
export PYTHON
SEEDS=${SEEDS:-"0 1"}
VARIANTS=${VARIANTS:-"ce wce subclassified subclassified_wce"}
OUT=${OUT:-runs/compare}
CONFIG=${CONFIG:-configs/demo.yaml}
cd "$ROOT"
bash scripts/setup_env.sh
data=$("$PYTHON" -c "from lidarseg.data.synthetic import ensure_dataset; print(ensure_dataset())" | tail -n 1)
mkdir -p "$OUT"
"$PYTHON" -m lidarseg info > "$OUT/versions.txt"

loss_args() {  # variant -> a --set that replaces the config's whole loss section (published defaults of each loss)
  case "$1" in
    ce) echo '--set loss={"name":"ce"}' ;;
    wce) echo '--set loss={"name":"wce"}' ;;
    subclassified) echo '--set loss={"name":"subclassified"}' ;;
    subclassified_wce) echo '--set loss={"name":"subclassified","class_weight":"content"}' ;;
    *) echo "unknown variant $1 (valid: ce wce subclassified subclassified_wce)" >&2; return 2 ;;
  esac
}

for variant in $VARIANTS; do
  for seed in $SEEDS; do
    run="$OUT/$variant/seed$seed"
    [ -f "$run/eval.json" ] && { echo "[compare] $run done, skipped"; continue; }
    mkdir -p "$run"
    train_cmd=("$PYTHON" -m lidarseg train --config "$CONFIG" --out "$run" --seed "$seed" --quiet $(loss_args "$variant") "$@")
    [ -f "$run/last.pt" ] && train_cmd+=(--resume auto)
    echo "[compare] $variant seed $seed: ${train_cmd[*]}"
    t0=$(date +%s)
    "${train_cmd[@]}" > "$run/train.log" 2>&1 || { echo "[compare] training failed, see $run/train.log" >&2; exit 1; }
    t1=$(date +%s)
    ckpt="$run/best.pt"; [ -f "$ckpt" ] || ckpt="$run/last.pt"
    infer_cmd=("$PYTHON" -m lidarseg infer --checkpoint "$ckpt" --split valid --out "$run/predictions" --knn --no-progress
               --overwrite)
    eval_cmd=("$PYTHON" -m lidarseg evaluate --data "$data" --predictions "$run/predictions" --split valid
              --no-progress --json "$run/eval.json")
    "${infer_cmd[@]}" > "$run/infer.log" 2>&1
    "${eval_cmd[@]}" > "$run/eval.log"
    "$PYTHON" - "$run/meta.json" "$variant" "$seed" "$((t1 - t0))" "${train_cmd[*]}" "${infer_cmd[*]}" "${eval_cmd[*]}" <<'PY'
import json, sys
path, variant, seed, secs, train, infer, evaluate = sys.argv[1:]
json.dump({"variant": variant, "seed": int(seed), "train_seconds": int(secs),
           "commands": [train, infer, evaluate]}, open(path, "w"), indent=1)
PY
    tail -n 1 "$run/eval.log"
  done
done

"$PYTHON" scripts/compare_report.py --runs "$OUT" --out docs/results-tables.md --figure docs/figures/loss-gain.png
best=$(ls "$OUT"/subclassified/seed*/best.pt 2>/dev/null | head -n 1 || true)
[ -n "$best" ] && "$PYTHON" scripts/plot_weight_maps.py --checkpoint "$best" --data "$data" \
  --out docs/figures/weight-maps.png
echo "[compare] tables: docs/results-tables.md; figures: docs/figures/"
