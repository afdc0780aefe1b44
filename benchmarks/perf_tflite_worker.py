"""Times the edge's own Scorer on the legacy ``tflite-runtime`` backend, in a separate venv.

tflite-runtime's newest wheel for Python 3.11 is 2.14, built against numpy 1.x, so it runs in its
own virtual environment (numpy < 2, tflite-runtime, nothing else) rather than the project's. This
script runs there under perf_scoring.py's control, so that its timing blocks interleave with the
in-process alternatives. It imports only numpy and the edge modules that need nothing else.

Protocol (one JSON object per line): stdin ``{"batch": B, "threads": T, "budget_s": S,
"max_reps": N, "warmup": W}``; stdout ``{"seconds": [...]}`` (one duration per Scorer.score call
of B crops), or ``{"error": "..."}``. The crops come from the .npy file named on the command line.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.bundle import load_bundle  # noqa: E402
from edge.scoring import Scorer  # noqa: E402


def time_block(scorer: Scorer, crops: np.ndarray, batch: int, request: dict[str, Any],
               cursor: int) -> tuple[list[float], int]:
    """Score consecutive batches of ``crops`` for about ``budget_s``; durations in seconds."""
    def take(at: int) -> np.ndarray:
        idx = (np.arange(batch) + at) % len(crops)
        return crops[idx]

    for _ in range(int(request.get("warmup", 0))):
        scorer.score(take(cursor))
    seconds: list[float] = []
    deadline = time.perf_counter() + float(request["budget_s"])
    while len(seconds) < int(request["max_reps"]) and (
            len(seconds) < 3 or time.perf_counter() < deadline):
        chunk = take(cursor)
        cursor += batch
        start = time.perf_counter()
        scorer.score(chunk)
        seconds.append(time.perf_counter() - start)
    return seconds, cursor


def main() -> int:
    bundle = load_bundle(Path(sys.argv[1]))
    crops = np.load(sys.argv[2])
    scorers: dict[tuple[int, int], Scorer] = {}
    cursor = 0
    print(json.dumps({"ready": True, "numpy": np.__version__}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        key = (int(request["batch"]), int(request["threads"]))
        try:
            if key not in scorers:
                scorers[key] = Scorer(bundle, backend="tflite-runtime", num_threads=key[1],
                                      batch_sizes=(key[0],))
            seconds, cursor = time_block(scorers[key], crops, key[0], request, cursor)
            print(json.dumps({"seconds": seconds}), flush=True)
        except Exception as exc:  # reported to the driver, which puts it in the table
            print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
