#!/usr/bin/env bash
# The loss and scene-mixing comparisons on the synthetic dataset: trains the demo model (configs/demo.yaml) once per
# variant and seed; predicts the validation split with KNN (and, with TTA set, once more with test-time
# augmentation); scores it with `lidarseg evaluate`; then writes the tables and the per-class gain figure.
#
#   bash scripts/compare_losses.sh                              # the four losses, seeds 0 and 1
#   SEEDS="0 1 2" VARIANTS="ce subclassified" bash scripts/compare_losses.sh --set train.epochs=10
#   VARIANTS="ce lasermix paste lasermix_paste lasermix_paste_subclassified subclassified" TTA=flip,shift:4 \
#     REPORT=docs/results-mixing-tables.md FIGURE=docs/figures/mixing-gain.png bash scripts/compare_losses.sh
#
# Variants (each replaces the config's whole loss section with that loss's published defaults):
#   ce, wce (RangeNet++ class weights), subclassified, subclassified_wce (+ the class weights on its CE term);
#   lasermix, paste (rare-class instance paste), lasermix_paste: CE with that data.augment key added (prob 0.5, the
#   other options at their defaults, docs/data.md); lasermix_paste_subclassified: both with the subclassified loss.
# Environment: SEEDS (default "0 1"), VARIANTS (default "ce wce subclassified subclassified_wce"), OUT (default
# runs/compare), CONFIG (default configs/demo.yaml), TTA (an `infer --tta` spec; default: none), REPORT (default
# docs/results-tables.md), FIGURE (default docs/figures/loss-gain.png), PYTHON. Extra arguments go to every
# `lidarseg train`. A run whose eval.json (and, with TTA, eval_tta.json) exists is skipped, so the script can be
# re-run after an interruption.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
export PYTHON
SEEDS=${SEEDS:-"0 1"}
VARIANTS=${VARIANTS:-"ce wce subclassified subclassified_wce"}
OUT=${OUT:-runs/compare}
CONFIG=${CONFIG:-configs/demo.yaml}
TTA=${TTA:-}
REPORT=${REPORT:-docs/results-tables.md}
FIGURE=${FIGURE:-docs/figures/loss-gain.png}
cd "$ROOT"
bash scripts/setup_env.sh
data=$("$PYTHON" -c "from lidarseg.data.synthetic import ensure_dataset; print(ensure_dataset())" | tail -n 1)
mkdir -p "$OUT"
"$PYTHON" -m lidarseg info > "$OUT/versions.txt"

variant_args() {  # variant -> --set arguments (no spaces inside one): the loss section, the mixing keys
  local ce='--set loss={"name":"ce"}' sub='--set loss={"name":"subclassified"}'
  local lasermix='--set data.augment.lasermix={"prob":0.5}' paste='--set data.augment.instancepaste={"prob":0.5}'
  case "$1" in
    ce) echo "$ce" ;;
    wce) echo '--set loss={"name":"wce"}' ;;
    subclassified) echo "$sub" ;;
    subclassified_wce) echo '--set loss={"name":"subclassified","class_weight":"content"}' ;;
    lasermix) echo "$ce $lasermix" ;;
    paste) echo "$ce $paste" ;;
    lasermix_paste) echo "$ce $lasermix $paste" ;;
    lasermix_paste_subclassified) echo "$sub $lasermix $paste" ;;
    *) echo "unknown variant $1 (valid: ce wce subclassified subclassified_wce lasermix paste lasermix_paste" \
            "lasermix_paste_subclassified)" >&2; return 2 ;;
  esac
}

checkpoint() { if [ -f "$1/best.pt" ]; then echo "$1/best.pt"; else echo "$1/last.pt"; fi; }

predict_and_score() {  # run suffix [infer options...]: predict the validation split with KNN, score it
  local run=$1 suffix=$2 tag=${2/-/_}  # "" or -tta: predictions$suffix, eval$tag.json, infer$tag.log
  shift 2
  infer_cmd=("$PYTHON" -m lidarseg infer --checkpoint "$(checkpoint "$run")" --split valid
             --out "$run/predictions$suffix" --knn --no-progress --overwrite "$@")
  eval_cmd=("$PYTHON" -m lidarseg evaluate --data "$data" --predictions "$run/predictions$suffix" --split valid
            --no-progress --json "$run/eval$tag.json")
  "${infer_cmd[@]}" > "$run/infer$tag.log" 2>&1
  "${eval_cmd[@]}" > "$run/eval$tag.log"
}

for variant in $VARIANTS; do variant_args "$variant" > /dev/null; done  # unknown names fail before any training

for variant in $VARIANTS; do
  for seed in $SEEDS; do
    run="$OUT/$variant/seed$seed"
    if [ ! -f "$run/eval.json" ]; then
      mkdir -p "$run"
      train_cmd=("$PYTHON" -m lidarseg train --config "$CONFIG" --out "$run" --seed "$seed" --quiet
                 $(variant_args "$variant") "$@")
      [ -f "$run/last.pt" ] && train_cmd+=(--resume auto)
      echo "[compare] $variant seed $seed: ${train_cmd[*]}"
      t0=$(date +%s)
      "${train_cmd[@]}" > "$run/train.log" 2>&1 || { echo "[compare] training failed, see $run/train.log" >&2; exit 1; }
      t1=$(date +%s)
      predict_and_score "$run" ""
      "$PYTHON" - "$run/meta.json" "$variant" "$seed" "$((t1 - t0))" "${train_cmd[*]}" "${infer_cmd[*]}" \
        "${eval_cmd[*]}" <<'PY'
import json, sys
path, variant, seed, secs, train, infer, evaluate = sys.argv[1:]
json.dump({"variant": variant, "seed": int(seed), "train_seconds": int(secs),
           "commands": [train, infer, evaluate]}, open(path, "w"), indent=1)
PY
      tail -n 1 "$run/eval.log"
    fi
    if [ -n "$TTA" ] && [ ! -f "$run/eval_tta.json" ]; then
      # the same checkpoint, predicted with test-time augmentation (the protocol is in the JSON)
      predict_and_score "$run" -tta --tta "$TTA"
      echo "[compare] $variant seed $seed with TTA $TTA: $(tail -n 1 "$run/eval_tta.log")"
    fi
  done
done

"$PYTHON" scripts/compare_report.py --runs "$OUT" --variants $VARIANTS --seeds $SEEDS --out "$REPORT" \
  --figure "$FIGURE"
best=$(ls "$OUT"/subclassified/seed*/best.pt 2>/dev/null | head -n 1 || true)
[ -n "$best" ] && "$PYTHON" scripts/plot_weight_maps.py --checkpoint "$best" --data "$data" \
  --out docs/figures/weight-maps.png
echo "[compare] tables: $REPORT; figures: $FIGURE, docs/figures/weight-maps.png"
