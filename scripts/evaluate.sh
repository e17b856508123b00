#!/usr/bin/env bash
# Point-level evaluation of prediction files, as semantic-kitti-api's evaluate_semantics.py.
# Installs what is missing first, then runs `lidarseg evaluate` with the given arguments, e.g.
#   scripts/evaluate.sh --data data/synthetic-kitti --predictions runs/x/predictions --split valid --json report.json
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
export PYTHON
bash "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
exec "$PYTHON" -m lidarseg evaluate "$@"
