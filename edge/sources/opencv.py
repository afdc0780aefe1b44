"""Frames through OpenCV: a video file, a USB camera (index) or a network stream (RTSP/HTTP URL).

cv2 is an optional extra (``pip install 'edge-anomaly[opencv]'``) and is imported only when the
source opens. OpenCV delivers BGR; frames are converted to RGB (or grey with ``grey = true``, which
saves the conversion later when the bundle is grey). A stream URL that carries a password must come
from an environment variable (``url_env``) and is never logged.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from typing import Any

from edge.errors import ConfigError, SourceError
from edge.sources.base import Source
from edge.types import Frame

log = logging.getLogger(__name__)


class OpenCVSource(Source):
    """``kind = "opencv"``: one of ``path``, ``index``, ``url`` or ``url_env``."""

    kind = "opencv"

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self._capture: Any = None
        self._cv2: Any = None

    @property
    def is_file(self) -> bool:
        return self.config.path is not None

    @property
    def grey_only(self) -> bool:
        return bool(self.config.grey)

    @property
    def live(self) -> bool:
        # A file read with fps = 0 is a replay that waits for the pipeline; everything else runs
        # in real time.
        return not (self.is_file and self.config.fps == 0)

    def describe(self) -> str:
        if self.config.path is not None:
            return f"video file {self.config.path}"
        if self.config.index is not None:
            return f"camera index {self.config.index}"
        if self.config.url_env is not None:
            return f"stream URL from ${self.config.url_env}"
        return f"stream {self.config.url}"

    def _target(self) -> str | int:
        if self.config.path is not None:
            return str(self.config.path)
        if self.config.index is not None:
            return int(self.config.index)
        if self.config.url_env is not None:
            value = os.environ.get(self.config.url_env)
            if not value:
                raise ConfigError(
                    f"source.url_env names ${self.config.url_env}, which is not set; export it "
                    "with the stream URL before starting the runtime."
                )
            return value
        return str(self.config.url)

    def open(self) -> None:
        try:
            import cv2
        except ImportError as exc:
            raise ConfigError(
                f"source kind 'opencv' needs OpenCV ({exc}); install it with "
                "pip install 'edge-anomaly[opencv]'."
            ) from exc
        self._cv2 = cv2
        if self.is_file and not self.config.path.is_file():
            raise SourceError(f"video file {self.config.path} does not exist.")
        capture = cv2.VideoCapture(self._target())
        if not capture.isOpened():
            capture.release()
            raise SourceError(f"OpenCV cannot open {self.describe()}.")
        if self.config.width is not None:
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, self.config.width)
        if self.config.height is not None:
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, self.config.height)
        if not self.is_file and self.config.fps > 0:
            capture.set(cv2.CAP_PROP_FPS, self.config.fps)
        self._capture = capture

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None

    def _convert(self, bgr: Any) -> Any:
        cv2 = self._cv2
        if bgr.ndim == 2:
            return bgr
        code = cv2.COLOR_BGR2GRAY if self.config.grey else cv2.COLOR_BGR2RGB
        return cv2.cvtColor(bgr, code)

    def frames(self) -> Iterator[Frame]:
        if self._capture is None:
            raise SourceError(f"{self.describe()} is not open.")
        # Only a file is paced here; a camera delivers at its own rate.
        interval = 1.0 / self.config.fps if self.is_file and self.config.fps > 0 else 0.0
        next_due = time.monotonic() - interval  # the first frame is due at once
        index = 0
        in_pass = 0
        while True:
            if interval:
                next_due = max(next_due + interval, time.monotonic() - interval)
                time.sleep(max(0.0, next_due - time.monotonic()))
            ok, image = self._capture.read()
            if not ok or image is None:
                if not self.is_file:
                    raise SourceError(f"{self.describe()} stopped delivering frames.")
                if not self.config.loop:
                    return
                if in_pass == 0:
                    raise SourceError(f"video file {self.config.path} holds no readable frame.")
                self._capture.set(self._cv2.CAP_PROP_POS_FRAMES, 0)
                in_pass = 0
                continue
            in_pass += 1
            yield Frame(id=f"{index:08d}", timestamp=time.time(), image=self._convert(image),
                        source=self.describe())
            index += 1
