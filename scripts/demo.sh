#!/usr/bin/env bash
# The demo: generate a casting-tray line, train the int8 bundle on normal wells, start a broker,
# replay the line through `edge run`, print what an independent subscriber received, and
# summarise per-well TPR / TNR against ground truth. Output goes to demo-out/.
source "$(dirname "${BASH_SOURCE[0]}")/_env.sh"
cd "$ROOT"
ensure_mosquitto || { echo "error: the demo needs the Mosquitto broker; install it (apt install mosquitto mosquitto-clients) and run again." >&2; exit 1; }
ensure_venv "trainer"
exec "$PY" "$ROOT/scripts/demo.py" "$@"
