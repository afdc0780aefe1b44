"""Raspberry Pi camera through picamera2 (libcamera); imported only when this source is configured.

The camera runs two streams: ``main`` (full resolution, left to other users such as recording) and
a low-resolution ``lores`` stream in YUV420, whose Y plane *is* a grey image. Inference reads the
Y plane of ``lores`` directly — no colour conversion and no resize of full frames — so layout boxes
are in ``lores_size`` pixels. The camera is a context-managed resource: it is stopped and closed on
every exit path, including a failure, so the retry wrapper can open it again.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

from edge.errors import ConfigError, SourceError
from edge.sources.base import Source
from edge.types import Frame

log = logging.getLogger(__name__)

LORES_STREAM = "lores"
LORES_FORMAT = "YUV420"  # the only lores format a Pi 4 supports; its first plane is luma


class Picamera2Source(Source):
    """``kind = "picamera2"``: grey frames from the camera's lores stream."""

    kind = "picamera2"

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self._stack: contextlib.ExitStack | None = None
        self._camera: Any = None

    @property
    def grey_only(self) -> bool:
        return True  # the luma plane of the lores stream

    def describe(self) -> str:
        width, height = self.config.lores_size
        return f"picamera2 camera {self.config.camera_num} (lores {width}×{height} grey)"

    def open(self) -> None:
        try:
            from picamera2 import Picamera2
        except ImportError as exc:
            raise ConfigError(
                f"source kind 'picamera2' needs the picamera2 package ({exc}); on Raspberry Pi OS "
                "install it with: sudo apt install python3-picamera2 (and create the venv with "
                "--system-site-packages)."
            ) from exc
        stack = contextlib.ExitStack()
        try:
            camera = stack.enter_context(Picamera2(self.config.camera_num))
            configuration = camera.create_video_configuration(
                main={"size": tuple(self.config.main_size)},
                lores={"size": tuple(self.config.lores_size), "format": LORES_FORMAT},
                controls={"FrameRate": float(self.config.fps)},
            )
            camera.configure(configuration)
            camera.start()
            stack.callback(camera.stop)
        except Exception as exc:
            stack.close()
            raise SourceError(f"cannot start {self.describe()}: {exc}") from exc
        self._stack, self._camera = stack, camera

    def close(self) -> None:
        if self._stack is not None:
            stack, self._stack, self._camera = self._stack, None, None
            stack.close()

    def frames(self) -> Iterator[Frame]:
        if self._camera is None:
            raise SourceError(f"{self.describe()} is not open.")
        width, height = self.config.lores_size
        index = 0
        while True:
            try:
                yuv = self._camera.capture_array(LORES_STREAM)
            except Exception as exc:
                raise SourceError(f"{self.describe()} stopped delivering frames: {exc}") from exc
            # YUV420 arrives as (height * 3/2, stride): rows [0, height) are the Y plane; the
            # stride may pad each row beyond the width.
            grey = yuv[:height, :width]
            yield Frame(id=f"{index:08d}", timestamp=time.time(), image=grey,
                        source=self.describe())
            index += 1
