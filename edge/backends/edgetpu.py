"""Coral Edge TPU backend: a TF Lite interpreter with the libedgetpu delegate.

The model must have been compiled with ``edgetpu_compiler``, which replaces the graph with an
``edgetpu-custom-op``. A plain int8 model would run entirely on the CPU with the delegate loaded
and idle, so it is refused here with what to do instead. Coral's libedgetpu is built against one
TF Lite version and its own ``tflite_runtime`` wheel, so that interpreter is preferred when both
are installed. Neither the delegate nor a Coral device exists on CI machines, so this backend is
exercised only on hardware (the refusal of an uncompiled model is tested).
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


# What edgetpu_compiler leaves in a model it mapped onto the Edge TPU.
EDGETPU_CUSTOM_OP = b"edgetpu-custom-op"


def create(model_path: Path, num_threads: int) -> Any:
    if EDGETPU_CUSTOM_OP not in model_path.read_bytes():
        raise BackendError(
            f"{model_path} is not compiled for the Edge TPU (no {EDGETPU_CUSTOM_OP.decode()}): "
            "with backend \"edgetpu\" it would run on the CPU with the Coral idle. Use "
            "backend = \"litert\" for this bundle, or compile its batch-1 model with "
            "'edgetpu_compiler model.tflite', put the compiled file in place of model.tflite and "
            "update its sha256 and bytes in bundle.json (README, Coral Edge TPU)."
        )
    try:
        from tflite_runtime.interpreter import Interpreter, load_delegate
    except ImportError:
        try:
            from ai_edge_litert.interpreter import Interpreter, load_delegate
        except ImportError as exc:
            raise BackendError(
                "backend 'edgetpu' needs tflite-runtime (Coral's build, matching libedgetpu) or "
                "ai-edge-litert; neither is installed."
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
