"""Default backend: Google's ai-edge-litert (the successor of tflite-runtime)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge.errors import BackendError


def create(model_path: Path, num_threads: int) -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError as exc:
        raise BackendError(
            "backend 'litert' needs the ai-edge-litert package, which is not installed "
            f"({exc}). Install it with: pip install 'edge-anomaly[edge]'."
        ) from exc
    try:
        return Interpreter(model_path=str(model_path), num_threads=num_threads)
    except ValueError as exc:
        raise BackendError(
            f"LiteRT cannot load {model_path} ({exc}); the file is not a valid TFLite model."
        ) from exc
