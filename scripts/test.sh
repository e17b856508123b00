#!/usr/bin/env bash
# Installs what is missing (plus test dependencies) and runs the test suite. Extra args go to pytest.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
export PYTHON
bash "$ROOT/scripts/setup_env.sh" test
cd "$ROOT"
exec "$PYTHON" -m pytest "$@"
