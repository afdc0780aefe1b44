"""Full-integer TFLite conversion, one flatbuffer per fixed batch size.

Each batch size gets its own fixed-batch copy of the trained model (same weights) and its own
conversion: int8 input and output, int8 weights and activations, int32 biases, calibrated on a
representative set drawn from the training normals. A float TFLite (batch 1) is made as well so
float and int8 scores can be compared at export.

The converter's own output (Python prints, C++ log lines, warnings) is captured and shown only when
a conversion fails.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from edge.errors import BundleError
from trainer.backend import keras
from trainer.defaults import DEFAULT_BATCH_SIZES as DEFAULT_BATCH_SIZES
from trainer.model import ModelConfig, clone_with_batch
from trainer.quiet import quiet_tensorflow_loggers, silenced

# Crops the converter runs to calibrate activation ranges; a few hundred cover a line's normals
# and keep conversion to seconds.
REPRESENTATIVE_SAMPLES = 256
PIXEL_MAX = 255.0
MAX_EXPORT_BATCH = 1024


@dataclass
class Conversion:
    """The converted models and how long conversion took (seconds)."""

    int8: dict[int, bytes]
    float_batch1: bytes
    seconds: dict[str, float] = field(default_factory=dict)


def parse_batch_sizes(text: str | Sequence[int]) -> tuple[int, ...]:
    """``"1,16"`` → (1, 16); batch 1 is always included (the bundle's ``model.tflite``)."""
    try:
        sizes = {int(s) for s in text.split(",")} if isinstance(text, str) else set(map(int, text))
    except ValueError as exc:
        raise BundleError(f"--batch-sizes {text!r} is not a comma-separated list of integers "
                          "(e.g. 1,16).") from exc
    if not sizes or min(sizes) < 1 or max(sizes) > MAX_EXPORT_BATCH:
        raise BundleError(f"--batch-sizes {text!r}: each size must be 1..{MAX_EXPORT_BATCH}.")
    return tuple(sorted(sizes | {1}))


def representative_batches(images_u8: np.ndarray, batch_size: int,
                           seed: int) -> Iterator[list[np.ndarray]]:
    """Calibration batches of exactly ``batch_size`` crops as float32 in [0, 1]."""
    rng = np.random.default_rng(seed)
    count = min(len(images_u8), REPRESENTATIVE_SAMPLES)
    chosen = images_u8[rng.permutation(len(images_u8))[:count]]
    # Every crop chosen is seen, whatever the batch size: the last batch is filled up by
    # repeating crops (which moves no min/max), so the models for batch 1, 8, 24… calibrate on
    # the same crops, get the same scales, and score a crop the same whatever its frame's size.
    batches = -(-count // batch_size)
    needed = batches * batch_size
    if len(chosen) < needed:
        chosen = np.resize(chosen, (needed, *chosen.shape[1:]))
    # The device feeds any uint8 pixel. Calibration sets the input tensor's range from what it
    # sees, so one black and one white pixel make it span exactly [0, 1] (scale 1/255): a bright
    # defect is then represented as it is, not clipped to the brightest normal pixel.
    chosen = chosen.copy()
    chosen[0, 0, 0, :] = 0
    chosen[0, -1, -1, :] = PIXEL_MAX
    for start in range(0, needed, batch_size):
        batch = chosen[start:start + batch_size].astype(np.float32) / np.float32(PIXEL_MAX)
        yield [batch]


def _convert(model: keras.Model, representative: np.ndarray | None, batch_size: int,
             seed: int) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if representative is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: representative_batches(
            representative, batch_size, seed)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return bytes(converter.convert())


def convert_int8(model: keras.Model, config: ModelConfig, batch_size: int,
                 representative_u8: np.ndarray, *, seed: int = 0) -> bytes:
    """Full-integer flatbuffer of ``model`` with a fixed batch of ``batch_size``."""
    fixed = clone_with_batch(model, config, batch_size)
    return _quietly(lambda: _convert(fixed, representative_u8, batch_size, seed),
                    f"int8 batch {batch_size}")


def convert_float(model: keras.Model, config: ModelConfig) -> bytes:
    """Float32 batch-1 flatbuffer, used to measure float-vs-int8 agreement."""
    fixed = clone_with_batch(model, config, 1)
    return _quietly(lambda: _convert(fixed, None, 1, 0), "float batch 1")


def _quietly(job: Callable[[], bytes], what: str) -> bytes:
    quiet_tensorflow_loggers()
    with silenced() as captured:
        result: bytes = b""
        error: Exception | None = None
        try:
            result = job()
        except Exception as exc:  # reported with the converter's log below
            error = exc
    if error is not None:
        raise BundleError(
            f"TFLite conversion ({what}) failed: {error}. Converter log (last lines):\n"
            f"{captured.tail()}") from error
    return result


def convert_all(model: keras.Model, config: ModelConfig, batch_sizes: Sequence[int],
                representative_u8: np.ndarray, *, seed: int = 0) -> Conversion:
    """int8 flatbuffers for every batch size plus the float batch-1 reference."""
    timings: dict[str, float] = {}
    int8: dict[int, bytes] = {}
    for size in parse_batch_sizes(batch_sizes):
        start = time.perf_counter()
        int8[size] = convert_int8(model, config, size, representative_u8, seed=seed)
        timings[f"int8_b{size}"] = round(time.perf_counter() - start, 3)
    start = time.perf_counter()
    float_blob = convert_float(model, config)
    timings["float_b1"] = round(time.perf_counter() - start, 3)
    return Conversion(int8=int8, float_batch1=float_blob, seconds=timings)
