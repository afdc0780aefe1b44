"""Per-crop anomaly score: reconstruction MSE of the int8 model, in the [0, 1] pixel domain.

``reconstruction_mse`` is the single definition of the score. The trainer calibrates thresholds
by calling :class:`Scorer` on the exported int8 model, so the numbers in bundle.json are the
numbers the device computes.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.backends import DEFAULT_BACKEND, create_interpreter
from edge.bundle import Bundle
from edge.errors import BackendError, BundleError

PIXEL_MAX = 255.0
# A remainder at least this fraction of a batch may be padded into one invoke of that batch;
# a smaller one runs on smaller models (cheaper than computing mostly padding).
PAD_FRACTION = 0.5
# The fixed cost of one invoke (Python call, tensor copies), in crops' worth of compute: it makes
# one padded batch of 24 beat 23 invokes of batch 1 in the batch plan.
INVOKE_COST_CROPS = 1.0


def reconstruction_mse(original: np.ndarray, reconstruction: np.ndarray,
                       members: int = 1) -> np.ndarray:
    """Mean squared error per sample over all remaining axes; both inputs in [0, 1].

    ``original`` has shape (N, ..., C); the result has shape (N,), float64. ``reconstruction``
    has the same shape, or for a model of ``members`` K > 1 the K reconstructions side by side on
    the last axis (N, ..., K·C): each is compared with the original, and the result is the mean
    of their K MSEs.
    """
    expected = (*original.shape[:-1], original.shape[-1] * members) if original.ndim else ()
    if not original.ndim or reconstruction.shape != expected:
        raise ValueError(
            f"original {original.shape} and reconstruction {reconstruction.shape} differ in shape"
            + (f" (expected {expected} for {members} members)" if members > 1 else ""))
    if members > 1:  # (N, ..., K, C) against (N, ..., 1, C): broadcast, no copy of the original
        original = original.reshape(*original.shape[:-1], 1, original.shape[-1])
        reconstruction = reconstruction.reshape(*original.shape[:-2], members,
                                                original.shape[-1])
    # One float64 temporary, squared in place: the same numbers as casting both inputs first,
    # without two more arrays of the batch's size per call.
    diff = np.subtract(original, reconstruction, dtype=np.float64)
    np.square(diff, out=diff)
    rows = diff.reshape(len(diff), math.prod(diff.shape[1:]))  # no -1: N may be 0
    # np.mean's own arithmetic (pairwise sum, then one division) without its Python overhead,
    # which is a fifth of a batch-1 score.
    return np.add.reduce(rows, axis=1) / float(max(rows.shape[1], 1))


def declared_members(input_shape: Sequence[Any], output_shape: Sequence[Any]) -> int:
    """Members of a model, from the shapes it declares: K·C output channels for C input
    channels (``reconstruction_mse`` then checks the whole shape)."""
    return int(output_shape[-1]) // int(input_shape[-1])


def member_mean(reconstruction: np.ndarray, members: int) -> np.ndarray:
    """The mean of a K-member reconstruction's members, (N, ..., K·C) → (N, ..., C), for showing
    one picture per crop; unchanged when K is 1."""
    if members == 1:
        return reconstruction
    channels = reconstruction.shape[-1] // members
    split = reconstruction.reshape(*reconstruction.shape[:-1], members, channels)
    return split.mean(axis=-2, dtype=np.float32)


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
                 origin: str, members: int = 1) -> None:
        self.interpreter = interpreter
        self.batch_size = batch_size
        inp = interpreter.get_input_details()[0]
        out = interpreter.get_output_details()[0]
        height, width, channels = shape
        for kind, details, expected in (
                ("input", inp, (batch_size, *shape)),
                ("output", out, (batch_size, height, width, channels * members))):
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
        """(batch_size, H, W, C) uint8 → dequantized output in [0, 1], float32, (…, K·C) for a
        model of K members."""
        # np.take: the same lookup as input_lut[batch_u8] in ~60 % of the time.
        self.interpreter.set_tensor(self.input_index, np.take(self.input_lut, batch_u8))
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


# uint8 pixel → its [0, 1] value, exactly ``np.float32(p) / np.float32(255)``, as one lookup.
_UNIT_LUT = np.arange(256, dtype=np.float32) / np.float32(PIXEL_MAX)


@functools.lru_cache(maxsize=32)
def _batch_plan(count: int, sizes: tuple[int, ...]) -> tuple[tuple[int, int, int], ...]:
    """Cheapest sequence of invokes for ``count`` crops (see :meth:`Scorer.plan`)."""
    # best[r]: (cost, chunks) for the last r crops; chunks are (model size, real crops).
    best: list[tuple[float, tuple[tuple[int, int], ...]]] = [(0.0, ())]
    for remaining in range(1, count + 1):
        options = []
        for size in sizes:
            if size <= remaining:
                cost, chunks = best[remaining - size]
                options.append((cost + size + INVOKE_COST_CROPS, ((size, size), *chunks)))
            elif remaining >= PAD_FRACTION * size:
                options.append((size + INVOKE_COST_CROPS, ((size, remaining),)))
        best.append(min(options, key=lambda option: (option[0], len(option[1]))))
    plan, start = [], 0
    for size, real in best[count][1]:
        plan.append((start, size, real))
        start += real
    return tuple(plan)


BATCH_ONE_BACKENDS = ("edgetpu",)  # backends that get the bundle's batch-1 model only


class Scorer:
    """Scores batches of prepared crops with a bundle's int8 models.

    Interpreters are built once, one per batch size the bundle serves, with their tensors
    allocated once. A call with N crops runs the cheapest mix of those batch sizes (:meth:`plan`):
    24 crops on a bundle with models for 1, 8, 24 and 32 run as one batch of 24, not as a batch
    of 32 carrying 8 crops of padding.
    """

    def __init__(self, bundle: Bundle, *, backend: str = DEFAULT_BACKEND, num_threads: int = 2,
                 batch_sizes: tuple[int, ...] | None = None) -> None:
        self.bundle = bundle
        self.backend = backend
        if batch_sizes is None:
            # The Edge TPU runs a model compiled for one fixed shape, and a batch of 4-D crops
            # does not map onto it: the compiled batch-1 model only.
            batch_sizes = (1,) if backend in BATCH_ONE_BACKENDS else bundle.batch_sizes
        wanted = tuple(sorted(set(batch_sizes)))
        if 1 not in wanted:
            wanted = (1, *wanted)
        self._runners: dict[int, _Runner] = {}
        for size in wanted:
            path = bundle.model_path(size)
            try:
                interpreter = create_interpreter(path, backend, num_threads)
            except (RuntimeError, ValueError, SystemError) as exc:
                raise BackendError(f"{backend} failed to prepare {path}: {exc}") from exc
            self._runners[size] = _Runner(interpreter, size, bundle.input.shape, str(path),
                                          bundle.members)

    @property
    def input_quantization(self) -> Quantization:
        return self._runners[1].input_q

    @property
    def output_quantization(self) -> Quantization:
        return self._runners[1].output_q

    def plan(self, count: int) -> tuple[tuple[int, int, int], ...]:
        """How ``count`` crops are run: (start, model batch size, real crops) per invoke.

        The plan minimises crops computed (padding included) plus ``INVOKE_COST_CROPS`` per
        invoke, over every batch size the bundle serves; a batch may be padded only when the
        crops left fill at least ``PAD_FRACTION`` of it. Cached: a layout asks for one count.
        """
        return _batch_plan(count, tuple(sorted(self._runners)))

    def reconstruct(self, crops_u8: np.ndarray) -> np.ndarray:
        """(N, H, W, C) uint8 prepared crops → (N, H, W, C) float32 reconstructions in [0, 1]
        (for a model of several members, their mean: one picture per crop)."""
        return member_mean(self.outputs(crops_u8), self.bundle.members)

    def outputs(self, crops_u8: np.ndarray) -> np.ndarray:
        """(N, H, W, C) uint8 prepared crops → the model's output in [0, 1], float32: (N, H, W,
        K·C) for a bundle of K members, what :meth:`score` compares with the crops."""
        expected = self.bundle.input.shape
        if crops_u8.ndim != 4 or crops_u8.shape[1:] != expected or crops_u8.dtype != np.uint8:
            raise ValueError(
                f"crops must be uint8 of shape (N, {', '.join(map(str, expected))}); "
                f"got {crops_u8.dtype} {crops_u8.shape}. Use edge.preprocess.prepare_batch."
            )
        channels = expected[2] * self.bundle.members
        if not len(crops_u8):
            return np.empty((0, *expected[:2], channels), dtype=np.float32)
        plan = self.plan(len(crops_u8))
        if len(plan) == 1 and plan[0][1] == plan[0][2]:  # one full batch: nothing to assemble
            return self._runners[plan[0][1]].reconstruct(crops_u8)
        result = np.empty((*crops_u8.shape[:3], channels), dtype=np.float32)
        for start, size, real in plan:
            chunk = crops_u8[start:start + real]
            if real < size:  # the last batch, padded with black crops
                chunk = np.concatenate(
                    [chunk, np.zeros((size - real, *expected), dtype=np.uint8)])
            result[start:start + real] = self._runners[size].reconstruct(chunk)[:real]
        return result

    def score(self, crops_u8: np.ndarray) -> np.ndarray:
        """(N, H, W, C) uint8 prepared crops → (N,) float64 reconstruction MSE."""
        return reconstruction_mse(np.take(_UNIT_LUT, crops_u8), self.outputs(crops_u8),
                                  self.bundle.members)
