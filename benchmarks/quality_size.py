"""Where the bytes of an int8 model go, against its float twin (issue: int8 file ≤ ¼ of float?).

Builds the demo's 32×32 model and the MNIST benchmark's 28×28 model, converts each with the
trainer's own code (:mod:`trainer.quantize`: full int8, fixed batch 1, and the float reference)
and takes both flatbuffers apart with TFLite's schema: weight/bias payload, quantization
parameters, tensor names, the rest (tables, signature, metadata), and any byte-identical
duplicated buffer. Sizes do not depend on the weights' values, so untrained models are used.

    python benchmarks/quality_size.py      # seconds; writes benchmarks/results/quality_size.json
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
from quality_common import MNIST_RECIPE, environment, log, write_json

# (name, side px, filters, latent channels)
MODELS: tuple[tuple[str, int, tuple[int, ...], int], ...] = (
    ("demo 32x32 (16,32,64) latent 8", 32, (16, 32, 64), 8),
    ("mnist 28x28 (32,64,64,64) latent 8", int(MNIST_RECIPE["size"]),
     tuple(MNIST_RECIPE["filters"]), int(MNIST_RECIPE["latent"])),
)
CALIBRATION_CROPS = 32
INT64_BYTES, FLOAT32_BYTES = 8, 4
DUPLICATE_MIN_BYTES = 64   # smaller constant buffers are not worth reporting as duplicates


def breakdown(blob: bytes) -> dict[str, Any]:
    """Byte accounting of one TFLite flatbuffer."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(blob, 0)
    graph = model.subgraphs[0]
    payload = [bytes(b.data) if b.data is not None else b"" for b in model.buffers]
    weight_bytes = bias_bytes = 0
    for tensor in graph.tensors:
        size = len(payload[tensor.buffer]) if tensor.buffer < len(payload) else 0
        if tensor.type == schema.TensorType.INT32:
            bias_bytes += size
        else:
            weight_bytes += size
    quant = 0
    for tensor in graph.tensors:
        q = tensor.quantization
        if q is None:
            continue
        quant += FLOAT32_BYTES * sum(len(v) for v in (q.scale, q.min, q.max) if v is not None)
        quant += INT64_BYTES * (len(q.zeroPoint) if q.zeroPoint is not None else 0)
    names = sum(len(t.name or b"") for t in graph.tensors)
    seen: dict[bytes, int] = {}
    duplicates = []
    for index, data in enumerate(payload):
        if len(data) >= DUPLICATE_MIN_BYTES:
            if data in seen:
                duplicates.append((index, seen[data], len(data)))
            seen[data] = index
    buffers = sum(len(d) for d in payload)
    return {"total_bytes": len(blob), "buffer_bytes": buffers,
            "constant_bytes_non_int32": weight_bytes, "int32_bytes": bias_bytes,
            "quantization_param_bytes_approx": quant, "tensor_name_bytes": names,
            "other_bytes": len(blob) - buffers - quant - names,
            "tensors": len(graph.tensors), "operators": len(graph.operators),
            "signature_defs": len(model.signatureDefs or []),
            "duplicated_buffers": duplicates}


def measure(name: str, side: int, filters: tuple[int, ...], latent: int) -> dict[str, Any]:
    from trainer.model import ModelConfig, build_model
    from trainer.quantize import convert_float, convert_int8

    config = ModelConfig(height=side, width=side, channels=1, filters=filters, latent=latent)
    model = build_model(config)
    crops = np.random.default_rng(0).integers(0, 256, (CALIBRATION_CROPS, side, side, 1),
                                              dtype=np.uint8)
    int8, float32 = breakdown(convert_int8(model, config, 1, crops)), breakdown(
        convert_float(model, config))
    return {"model": name, "parameters": int(model.count_params()), "int8": int8,
            "float": float32,
            "ratio_file": round(int8["total_bytes"] / float32["total_bytes"], 4),
            "ratio_buffers_only": round(int8["buffer_bytes"] / float32["buffer_bytes"], 4)}


def main() -> int:
    rows = [measure(*spec) for spec in MODELS]
    for r in rows:
        i, f = r["int8"], r["float"]
        log(f"{r['model']}: {r['parameters']} parameters; int8 {i['total_bytes']} B / float "
            f"{f['total_bytes']} B = {r['ratio_file']:.3f}; buffers alone {i['buffer_bytes']} / "
            f"{f['buffer_bytes']} = {r['ratio_buffers_only']:.4f}; int8 file: int32 biases "
            f"{i['int32_bytes']} B, quantization params ~{i['quantization_param_bytes_approx']} B,"
            f" names {i['tensor_name_bytes']} B, other {i['other_bytes']} B; duplicated buffers "
            f"{len(i['duplicated_buffers'])}")
    write_json("quality_size.json", {"description": __doc__.split("\n\n")[1], "rows": rows,
                                     "environment": environment()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
