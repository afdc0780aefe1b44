"""Per-crop anomaly score: reconstruction MSE of the int8 model, in the [0, 1] pixel domain.

``reconstruction_mse`` is the single definition of the score. The trainer calibrates thresholds
by calling :class:`Scorer` on the exported int8 model, so the numbers in bundle.json are the
numbers the device computes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.backends import DEFAULT_BACKEND, create_interpreter
from edge.bundle import Bundle
from edge.errors import BackendError, BundleError

PIXEL_MAX = 255.0
# A remainder at least this fraction of the big batch is padded into one more big invoke;
# a smaller one runs as batch-1 invokes (cheaper than computing mostly padding).
PAD_FRACTION = 0.5


def reconstruction_mse(original: np.ndarray, reconstruction: np.ndarray) -> np.ndarray:
    """Mean squared error per sample over all remaining axes; both inputs in [0, 1].

    ``original`` and ``reconstruction`` have shape (N, ...); the result has shape (N,), float64.
    """
    if original.shape != reconstruction.shape:
        raise ValueError(
            f"original {original.shape} and reconstruction {reconstruction.shape} differ in shape"
        )
    diff = original.astype(np.float64) - reconstruction.astype(np.float64)
    return np.mean(np.square(diff).reshape(len(diff), -1), axis=1)


@dataclass(frozen=True)
class Quantization:
    scale: float
    zero_point: int

    def quantize(self, unit: np.ndarray) -> np.ndarray:
        """[0, 1] floats → int8 with this tensor's parameters."""
        q = np.round(unit / self.scale) + self.zero_point
        return np.clip(q, -128, 127).astype(np.int8)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        return (q.astype(np.float32) - self.zero_point) * self.scale


class _Runner:
    """One allocated interpreter of a fixed batch size."""

    def __init__(self, interpreter: Any, batch_size: int, shape: tuple[int, int, int],
                 origin: str) -> None:
        self.interpreter = interpreter
        self.batch_size = batch_size
        inp = interpreter.get_input_details()[0]
        out = interpreter.get_output_details()[0]
        expected = (batch_size, *shape)
        for kind, details in (("input", inp), ("output", out)):
            if tuple(details["shape"]) != expected:
                raise BundleError(
                    f"{origin}: model {kind} shape is {tuple(details['shape'])} but bundle.json "
                    f"declares {expected}; the bundle was edited or mixed. Re-export it."
                )
            if details["dtype"] != np.int8:
                raise BundleError(
                    f"{origin}: model {kind} type is {np.dtype(details['dtype']).name}, expected "
                    "int8; export the bundle with the trainer's full-integer quantization."
                )
        self.input_index = inp["index"]
        self.output_index = out["index"]
        self.input_q = Quantization(*_scale_zero_point(inp, origin))
        self.output_q = Quantization(*_scale_zero_point(out, origin))
        # uint8 pixel p maps to the int8 input code round(p / 255 / scale) + zp; a lookup table
        # makes that one indexing operation with no float work per pixel.
        self.input_lut = self.input_q.quantize(np.arange(256, dtype=np.float64) / PIXEL_MAX)

    def reconstruct(self, batch_u8: np.ndarray) -> np.ndarray:
        """(batch_size, H, W, C) uint8 → dequantized reconstruction in [0, 1], float32."""
        self.interpreter.set_tensor(self.input_index, self.input_lut[batch_u8])
        self.interpreter.invoke()
        return self.output_q.dequantize(self.interpreter.get_tensor(self.output_index))


def _scale_zero_point(details: dict[str, Any], origin: str) -> tuple[float, int]:
    scale, zero_point = details["quantization"]
    if not scale:
        raise BundleError(
            f"{origin}: tensor {details['name']!r} carries no quantization parameters; "
            "the model is not fully int8."
        )
    return float(scale), int(zero_point)


class Scorer:
    """Scores batches of prepared crops with a bundle's int8 models.

    Interpreters are built once, one per batch size the bundle serves. A call with N crops runs
    full batches on the largest model and the remainder either padded into one more large batch or
    as batch-1 invokes, whichever computes fewer crops.
    """

    def __init__(self, bundle: Bundle, *, backend: str = DEFAULT_BACKEND, num_threads: int = 2,
                 batch_sizes: tuple[int, ...] | None = None) -> None:
        self.bundle = bundle
        self.backend = backend
        wanted = bundle.batch_sizes if batch_sizes is None else tuple(sorted(set(batch_sizes)))
        if 1 not in wanted:
            wanted = (1, *wanted)
        self._runners: dict[int, _Runner] = {}
        for size in wanted:
            path = bundle.model_path(size)
            try:
                interpreter = create_interpreter(path, backend, num_threads)
            except (RuntimeError, ValueError) as exc:
                raise BackendError(f"{backend} failed to prepare {path}: {exc}") from exc
            self._runners[size] = _Runner(interpreter, size, bundle.input.shape, str(path))
        self._largest = max(self._runners)

    @property
    def input_quantization(self) -> Quantization:
        return self._runners[1].input_q

    @property
    def output_quantization(self) -> Quantization:
        return self._runners[1].output_q

    def reconstruct(self, crops_u8: np.ndarray) -> np.ndarray:
        """(N, H, W, C) uint8 prepared crops → (N, H, W, C) float32 reconstructions in [0, 1]."""
        expected = self.bundle.input.shape
        if crops_u8.ndim != 4 or crops_u8.shape[1:] != expected or crops_u8.dtype != np.uint8:
            raise ValueError(
                f"crops must be uint8 of shape (N, {', '.join(map(str, expected))}); "
                f"got {crops_u8.dtype} {crops_u8.shape}. Use edge.preprocess.prepare_batch."
            )
        count = len(crops_u8)
        result = np.empty(crops_u8.shape, dtype=np.float32)
        start = 0
        big = self._runners[self._largest]
        while start < count:
            remaining = count - start
            if remaining >= big.batch_size:
                result[start:start + big.batch_size] = big.reconstruct(
                    crops_u8[start:start + big.batch_size])
                start += big.batch_size
            elif big.batch_size > 1 and remaining >= PAD_FRACTION * big.batch_size:
                padded = np.zeros((big.batch_size, *expected), dtype=np.uint8)
                padded[:remaining] = crops_u8[start:]
                result[start:] = big.reconstruct(padded)[:remaining]
                start = count
            else:
                size = max(s for s in self._runners if s <= remaining)
                runner = self._runners[size]
                result[start:start + size] = runner.reconstruct(crops_u8[start:start + size])
                start += size
        return result

    def score(self, crops_u8: np.ndarray) -> np.ndarray:
        """(N, H, W, C) uint8 prepared crops → (N,) float64 reconstruction MSE."""
        reconstruction = self.reconstruct(crops_u8)
        original = crops_u8.astype(np.float32) / np.float32(PIXEL_MAX)
        return reconstruction_mse(original, reconstruction)
