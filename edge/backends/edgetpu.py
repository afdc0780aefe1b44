"""Coral Edge TPU backend: the LiteRT interpreter with the libedgetpu delegate.

The model must have been compiled with ``edgetpu_compiler`` (a ``*_edgetpu.tflite`` file); the
bundle's plain int8 model runs on the CPU otherwise. Neither the delegate nor a Coral device exists
on CI machines, so this backend is exercised only on hardware.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

from edge.errors import BackendError

EDGETPU_LIBRARY = {
    "Linux": "libedgetpu.so.1",
    "Darwin": "libedgetpu.1.dylib",
    "Windows": "edgetpu.dll",
}


def create(model_path: Path, num_threads: int) -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter, load_delegate
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter, load_delegate
        except ImportError as exc:
            raise BackendError(
                "backend 'edgetpu' needs ai-edge-litert or tflite-runtime; neither is installed."
            ) from exc
    library = EDGETPU_LIBRARY.get(platform.system(), "libedgetpu.so.1")
    try:
        delegate = load_delegate(library)
    except (ValueError, OSError) as exc:
        raise BackendError(
            f"cannot load the Edge TPU delegate {library} ({exc}). Install libedgetpu1-std "
            "from the Coral apt repository and plug in the Coral device, or use "
            "backend = \"litert\"."
        ) from exc
    return Interpreter(
        model_path=str(model_path), experimental_delegates=[delegate], num_threads=num_threads
    )
