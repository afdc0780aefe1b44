"""Inference backends: one file per backend, one registry line each.

Every backend module exposes ``create(model_path, num_threads) -> interpreter`` returning an object
with the ``tf.lite.Interpreter`` API (allocate_tensors, get_input_details, set_tensor, invoke, ...).
Which backend runs is configuration, never a code edit.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from edge.errors import BackendError

BACKENDS: dict[str, str] = {
    "litert": "edge.backends.litert",
    "tflite-runtime": "edge.backends.tflite_runtime",
    "edgetpu": "edge.backends.edgetpu",
}
DEFAULT_BACKEND = "litert"


def create_interpreter(model_path: Path, backend: str = DEFAULT_BACKEND,
                       num_threads: int = 2) -> Any:
    """Build (once) and allocate an interpreter for ``model_path`` on ``backend``."""
    if backend not in BACKENDS:
        raise BackendError(
            f"unknown backend {backend!r}; choose one of {sorted(BACKENDS)} in the config's "
            "[scorer] section."
        )
    module = importlib.import_module(BACKENDS[backend])
    interpreter = module.create(model_path, num_threads)
    interpreter.allocate_tensors()
    return interpreter
