#!/usr/bin/env bash
# The test command: installs what it needs (venv, [dev] extras, Mosquitto), lints, type-checks,
# and runs the whole suite. Extra arguments go to pytest, e.g. scripts/test.sh -k mqtt
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$ROOT"
ensure_mosquitto
ensure_venv dev
echo "==> ruff"
"$VENV/bin/ruff" check .
echo "==> mypy"
"$VENV/bin/mypy"
echo "==> pytest"
exec "$PY" -m pytest "$@"
