#!/usr/bin/env bash
# Installs what is missing for lidarseg, idempotently. Sourced by scripts/train.sh and scripts/test.sh.
#   PYTHON    interpreter to use (default: python3)
#   $1        "test" to also install the test extras and the mmseg extra (CI runs the mmsegmentation plug-in's tests)
# torch: if `import torch` fails we install torch==2.13.0 (a CPU build on these machines; an unpinned torch
# pulls several GB of CUDA packages). A torch that already imports is never touched, so GPU users install their
# own torch first (see README).
set -euo pipefail
PYTHON=${PYTHON:-python3}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
extras=${1:-}

"$PYTHON" - <<'PY' || { echo "lidarseg needs Python >= 3.10" >&2; exit 1; }
import sys
sys.exit(0 if sys.version_info >= (3, 10) else 1)
PY

if ! "$PYTHON" -c "import torch" >/dev/null 2>&1; then
  echo "[setup] torch not importable: installing torch==2.13.0"
  "$PYTHON" -m pip install --quiet "torch==2.13.0"
fi

# Reinstall (editable) when an import fails, or when the package metadata or the interpreter changed since the last
# install (stamp = their hash). The import check runs outside the repository, so a stale editable install that
# does not map a package (e.g. one made before models/ existed) is caught too. Test extras are checked by import.
stamp_file="$ROOT/.lidarseg-installed"
stamp=$( { cat "$ROOT/setup.cfg" "$ROOT/pyproject.toml"; "$PYTHON" -c "import sys; print(sys.executable)"; } | sha256sum | cut -d' ' -f1)
want_mods="lidarseg lidarseg.models numba yaml tensorboard tqdm scipy matplotlib"
[ "$extras" = "test" ] && want_mods="$want_mods pytest hypothesis onnx onnxscript onnxruntime mmseg mmengine mmcv ftfy regex pkg_resources"
have_all=1
(cd / && "$PYTHON" -c "import importlib.util as u,sys; sys.exit(any(u.find_spec(m) is None for m in sys.argv[1:]))" $want_mods) >/dev/null 2>&1 || have_all=0
if [ "$have_all" = 0 ] || [ ! -f "$stamp_file" ] || [ "$(cat "$stamp_file")" != "$stamp" ]; then
  spec="."
  [ "$extras" = "test" ] && spec=".[test,mmseg]"
  echo "[setup] installing lidarseg ($spec) in editable mode"
  (cd "$ROOT" && "$PYTHON" -m pip install --quiet -e "$spec")
  echo "$stamp" > "$stamp_file"
fi
