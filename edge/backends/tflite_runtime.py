"""Legacy backend: the tflite-runtime wheel found on older Raspberry Pi OS images (numpy < 2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge.errors import BackendError


def create(model_path: Path, num_threads: int) -> Any:
    try:
        from tflite_runtime.interpreter import Interpreter
    except ImportError as exc:
        raise BackendError(
            "backend 'tflite-runtime' needs the tflite-runtime package, which is not installed "
            f"({exc}). It needs numpy < 2: pip install 'edge-anomaly[tflite-runtime]', or use "
            "backend = \"litert\"."
        ) from exc
    try:
        return Interpreter(model_path=str(model_path), num_threads=num_threads)
    except ValueError as exc:
        raise BackendError(f"tflite-runtime cannot load {model_path} ({exc}).") from exc
    except SystemError as exc:  # what its wheels built for numpy 1 raise under numpy 2
        import numpy

        raise BackendError(
            f"tflite-runtime cannot create an interpreter ({exc}); it was built for numpy 1 and "
            f"this environment has numpy {numpy.__version__}. Install it in an environment with "
            "numpy < 2 (pip install 'edge-anomaly[tflite-runtime]' in a fresh venv), or use "
            "backend = \"litert\"."
        ) from exc
