"""Helpers for the edge-runtime tests (config, sources, layout, decision, runtime).

The tiny bundle is a real int8 TFLite model built with TensorFlow: average-pool 4× then upsample,
i.e. it "reconstructs" a crop as its 4×4 block means. A flat grey well reconstructs almost
perfectly (score ~6e-5); a well with a bright square does not (score > 0.01). That is enough to
drive the real interpreter, real scores and real decisions without waiting for the trainer.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from edge.bundle import InputSpec, Threshold, write_bundle
from edge.errors import PublishError
from edge.types import Event

CROP_PX = 16
TINY_THRESHOLD_HIGH = 0.002
TINY_BATCH_SIZES = (1, 4)
# The demo tray of the tests: 2 × 3 wells of 20 px pitch in an 80 × 60 frame; inset 2 px → 16 px.
FRAME_W, FRAME_H = 80, 60
GRID_REGION = (10, 10, 60, 40)
GRID_ROWS, GRID_COLS = 2, 3
GRID_INSET = 2
BACKGROUND = 120
DEFECT_SIDE = 6


def _convert_tiny_model(batch_size: int) -> bytes:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    inputs = tf.keras.Input(shape=(CROP_PX, CROP_PX, 1), batch_size=batch_size)
    pooled = tf.keras.layers.AveragePooling2D(4)(inputs)
    upsampled = tf.keras.layers.UpSampling2D(4)(pooled)
    outputs = tf.keras.layers.Conv2D(1, 1, kernel_initializer="ones",
                                     bias_initializer="zeros")(upsampled)
    model = tf.keras.Model(inputs, outputs)
    rng = np.random.default_rng(0)

    def representative() -> Any:
        for _ in range(16):
            yield [rng.uniform(0, 1, (batch_size, CROP_PX, CROP_PX, 1)).astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return bytes(converter.convert())


def build_tiny_bundle(bundle_dir: Path) -> Path:
    """Write the tiny bundle (batch 1 and 4) into ``bundle_dir``; returns the directory."""
    models = {size: _convert_tiny_model(size) for size in TINY_BATCH_SIZES}
    write_bundle(
        bundle_dir, name="tiny-wells", input_spec=InputSpec(CROP_PX, CROP_PX, 1),
        threshold=Threshold(rule="max", high=TINY_THRESHOLD_HIGH),
        models=models, normal_scores={"count": 10, "mean": 6e-5, "std": 1e-5},
        extra={"provenance": {"built_by": "tests/runtime_support.py"}},
    )
    return bundle_dir


def tray_image(defects: tuple[tuple[int, int], ...] = (), seed: int = 0) -> np.ndarray:
    """A grey 80 × 60 tray frame; a bright square in each (row, col) of ``defects``."""
    rng = np.random.default_rng(seed)
    image = (BACKGROUND + rng.integers(-3, 4, (FRAME_H, FRAME_W))).astype(np.uint8)
    x0, y0 = GRID_REGION[0], GRID_REGION[1]
    pitch = GRID_REGION[2] // GRID_COLS
    for row, col in defects:
        top = y0 + row * pitch + (pitch - DEFECT_SIDE) // 2
        left = x0 + col * pitch + (pitch - DEFECT_SIDE) // 2
        image[top:top + DEFECT_SIDE, left:left + DEFECT_SIDE] = 255
    return image


def write_frames(folder: Path, defects_per_frame: list[tuple[tuple[int, int], ...]]) -> Path:
    """frame_000.png, frame_001.png, … with the given defects each."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, defects in enumerate(defects_per_frame):
        image = Image.fromarray(tray_image(defects, seed=index), "L")
        image.save(folder / f"frame_{index:03d}.png")
    return folder


def config_text(bundle: Path | str, frames: Path | str, *, device_id: str = "line-1",
                source_extra: str = "", layout_extra: str = "", decision: str = "",
                mqtt: str = "", top: str = "") -> str:
    """A complete device config for the test tray (extra TOML lines go into the sections)."""
    region = ", ".join(map(str, GRID_REGION))
    return f"""{top}
device_id = "{device_id}"
bundle = "{bundle}"

[scorer]
backend = "litert"
num_threads = 1

[source]
kind = "folder"
path = "{frames}"
{source_extra}

[layout.grid]
region = [{region}]
rows = {GRID_ROWS}
cols = {GRID_COLS}
inset = {GRID_INSET}
{layout_extra}

[decision]
{decision}

[mqtt]
host = "127.0.0.1"
{mqtt}
"""


class RecorderPublisher:
    """Stand-in with MqttPublisher's methods that records calls (for pipeline-only tests)."""

    def __init__(self, config: Any = None, device_id: str = "", bundle_info: Any = None,
                 base_dir: Any = None) -> None:
        self.device_id = device_id
        self.bundle_info = bundle_info
        self.events: list[Event] = []
        self.states: list[tuple[str, dict[str, Any]]] = []
        self.stats: list[dict[str, Any]] = []
        self.statuses: list[tuple[str, str | None]] = []
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        self.calls.append("start")

    def submit_event(self, **fields: Any) -> Event:
        with self._lock:
            event = Event(event_id=f"id-{len(self.events)}", seq=len(self.events) + 1, **fields)
            self.events.append(event)
        return event

    def submit_events(self, batch: list[dict[str, Any]]) -> list[Event | PublishError]:
        """Like MqttPublisher.submit_events, one event at a time (tests patch submit_event)."""
        results: list[Event | PublishError] = []
        for fields in batch:
            try:
                results.append(self.submit_event(**fields))
            except PublishError as exc:
                results.append(exc)
        return results

    def publish_state(self, crop: str, payload: dict[str, Any]) -> None:
        self.states.append((crop, payload))

    def publish_stats(self, stats: dict[str, Any]) -> None:
        self.stats.append(stats)

    def set_status(self, status: str, reason: str | None = None) -> None:
        self.statuses.append((status, reason))

    def spool_depth(self) -> int:
        return 0

    def delivery_problem(self) -> str | None:
        return None

    def flush(self, timeout_s: float) -> bool:
        self.calls.append("flush")
        return True

    def close(self) -> None:
        self.calls.append("close")
