"""Frame sources: folder replay (real PNGs), OpenCV (a real video file), picamera2 (stand-in),
and the retry-with-backoff wrapper."""

from __future__ import annotations

import logging
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
import pytest
from runtime_support import FRAME_H, FRAME_W, tray_image, write_frames

from edge.config import (
    SOURCE_KINDS,
    FolderSourceConfig,
    OpenCVSourceConfig,
    Picamera2SourceConfig,
)
from edge.errors import ConfigError, SourceError
from edge.sources import SOURCES, RetryingSource, Source, create_source
from edge.types import Frame

VIDEO_FRAMES = 6


def folder_source(path: Path, **kwargs: Any) -> Source:
    return create_source(FolderSourceConfig(kind="folder", path=path, **kwargs))


def read_all(source: Source, limit: int = 100) -> list[Frame]:
    with source:
        frames = []
        for frame in source.frames():
            frames.append(frame)
            if len(frames) >= limit:
                break
        return frames


def test_registry_covers_every_config_kind():
    assert set(SOURCES) == set(SOURCE_KINDS)
    assert all(SOURCES[kind].kind == kind for kind in SOURCES)


def test_folder_replays_sorted_images_and_skips_a_corrupt_one(tmp_path, caplog):
    folder = write_frames(tmp_path / "frames", [(), ((0, 1),), ()])
    (folder / "frame_001b.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (folder / "notes.txt").write_text("not an image")
    source = folder_source(folder)
    with caplog.at_level(logging.WARNING, logger="edge.sources.folder"):
        frames = read_all(source)
    assert [f.id for f in frames] == ["frame_000", "frame_001", "frame_002"]
    assert frames[0].image.shape == (FRAME_H, FRAME_W)
    assert source.corrupt_frames == 1
    assert "skipping corrupt image frame_001b.png" in caplog.text
    assert "cannot decode image" in caplog.text
    assert not source.live


def test_folder_loop_and_pacing(tmp_path):
    folder = write_frames(tmp_path / "frames", [(), ()])
    source = folder_source(folder, loop=True, fps=50.0)
    started = time.monotonic()
    frames = read_all(source, limit=5)
    elapsed = time.monotonic() - started
    assert [f.id for f in frames] == ["frame_000", "frame_001", "frame_000.1", "frame_001.1",
                                      "frame_000.2"]
    assert elapsed >= 4 / 50.0 * 0.9  # 5 frames at 50 fps: the first at once, then 20 ms apart
    assert source.live


def test_folder_errors(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        read_all(folder_source(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="holds no images"):
        read_all(folder_source(tmp_path / "empty"))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_bytes(b"junk")
    with pytest.raises(SourceError, match="could be decoded"):
        read_all(folder_source(bad, loop=True))


@pytest.fixture
def runtime_video(tmp_path: Path) -> Path:
    """A real MJPG video file written with cv2.VideoWriter; frame i has a bright square."""
    path = tmp_path / "line.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0,
                             (FRAME_W, FRAME_H))
    assert writer.isOpened()
    for index in range(VIDEO_FRAMES):
        grey = tray_image(((0, index % 3),))
        bgr = np.dstack([grey, grey, grey])
        bgr[:4, :4] = (255, 0, 0)  # a blue corner, to check the BGR → RGB conversion
        writer.write(bgr)
    writer.release()
    return path


def opencv_source(**kwargs: Any) -> Source:
    return create_source(OpenCVSourceConfig(kind="opencv", **kwargs))


def test_opencv_reads_a_video_file_as_rgb(runtime_video):
    source = opencv_source(path=runtime_video)
    frames = read_all(source)
    assert len(frames) == VIDEO_FRAMES
    first = frames[0].image
    assert first.shape == (FRAME_H, FRAME_W, 3)
    red, _green, blue = first[1, 1]
    assert blue > 200 and red < 60  # BGR blue arrives as RGB blue
    assert not source.live
    assert source._capture is None  # released on exit


def test_opencv_grey_and_loop(runtime_video):
    frames = read_all(opencv_source(path=runtime_video, grey=True, loop=True),
                      limit=VIDEO_FRAMES + 2)
    assert len(frames) == VIDEO_FRAMES + 2
    assert frames[0].image.ndim == 2
    assert np.abs(frames[VIDEO_FRAMES].image.astype(int) - frames[0].image).mean() < 2


def test_opencv_failures(tmp_path, monkeypatch):
    with pytest.raises(SourceError, match="does not exist"):
        read_all(opencv_source(path=tmp_path / "none.avi"))
    (tmp_path / "junk.avi").write_bytes(b"not a video")
    with pytest.raises(SourceError, match="cannot open"):
        read_all(opencv_source(path=tmp_path / "junk.avi"))
    monkeypatch.delenv("EDGE_TEST_STREAM", raising=False)
    source = opencv_source(url_env="EDGE_TEST_STREAM")
    assert source.describe() == "stream URL from $EDGE_TEST_STREAM"
    with pytest.raises(ConfigError, match="EDGE_TEST_STREAM, which is not set"):
        read_all(source)


# --- picamera2 --------------------------------------------------------------------------------
# No Raspberry Pi camera exists on this machine or in CI. The class below is a STAND-IN for the
# parts of the Picamera2 API the source uses, injected as the 'picamera2' module via sys.modules.
# It records calls so the test can check that the camera is configured for a YUV420 lores stream
# and is always stopped and closed.


class FakePicamera2:
    """Stand-in for picamera2.Picamera2 (NOT the real library; no camera here)."""

    instances: ClassVar[list[FakePicamera2]] = []
    fail_after: ClassVar[int | None] = None

    def __init__(self, camera_num: int = 0) -> None:
        self.camera_num = camera_num
        self.calls: list[str] = []
        self.config: dict[str, Any] = {}
        self.captured = 0
        FakePicamera2.instances.append(self)

    def __enter__(self) -> FakePicamera2:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def create_video_configuration(self, main: dict[str, Any], lores: dict[str, Any],
                                   controls: dict[str, Any]) -> dict[str, Any]:
        return {"main": main, "lores": lores, "controls": controls}

    def configure(self, config: dict[str, Any]) -> None:
        self.config = config
        self.calls.append("configure")

    def start(self) -> None:
        self.calls.append("start")

    def capture_array(self, name: str) -> np.ndarray:
        assert name == "lores"
        if self.fail_after is not None and self.captured >= self.fail_after:
            raise RuntimeError("Camera frontend has timed out!")
        width, height = self.config["lores"]["size"]
        stride = width + 32  # real YUV420 buffers pad rows
        yuv = np.full((height * 3 // 2, stride), 128, dtype=np.uint8)
        yuv[:height, :width] = self.captured  # Y plane: frame number as brightness
        self.captured += 1
        return yuv

    def stop(self) -> None:
        self.calls.append("stop")

    def close(self) -> None:
        self.calls.append("close")


@pytest.fixture
def runtime_fake_picamera2(monkeypatch):
    module = types.ModuleType("picamera2")
    module.Picamera2 = FakePicamera2  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "picamera2", module)
    FakePicamera2.instances = []
    FakePicamera2.fail_after = None
    return FakePicamera2


def test_picamera2_reads_the_grey_y_plane_of_lores(runtime_fake_picamera2):
    config = Picamera2SourceConfig(kind="picamera2", lores_size=[64, 48], fps=15)
    source = create_source(config)
    frames = read_all(source, limit=3)
    camera = runtime_fake_picamera2.instances[0]
    assert camera.config["lores"] == {"size": (64, 48), "format": "YUV420"}
    assert camera.config["controls"] == {"FrameRate": 15.0}
    assert [f.image.shape for f in frames] == [(48, 64)] * 3
    assert [int(f.image[0, 0]) for f in frames] == [0, 1, 2]
    assert camera.calls == ["configure", "start", "stop", "close"]


def test_picamera2_failure_closes_the_camera_and_is_retried(runtime_fake_picamera2):
    runtime_fake_picamera2.fail_after = 2
    source = create_source(Picamera2SourceConfig(kind="picamera2", lores_size=[32, 32]))
    stop = threading.Event()
    errors: list[BaseException] = []
    retrying = RetryingSource(source, initial_s=0.01, max_s=0.02, stop=stop,
                              on_error=errors.append)
    frames = []
    for frame in retrying.frames():
        frames.append(frame)
        if len(frames) == 5:
            stop.set()
    assert len(frames) == 5 and retrying.errors == 2
    assert isinstance(errors[0], SourceError) and "timed out" in str(errors[0])
    assert len(runtime_fake_picamera2.instances) == 3  # reopened after each failure
    for camera in runtime_fake_picamera2.instances[:2]:
        assert camera.calls[-2:] == ["stop", "close"]


def test_picamera2_missing_library_is_a_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import fails as on a non-Pi machine
    source = create_source(Picamera2SourceConfig(kind="picamera2"))
    with pytest.raises(ConfigError, match="python3-picamera2"):
        read_all(source)


# --- retry wrapper -----------------------------------------------------------------------------


class FlakySource(Source):
    """Fails to open ``failures`` times, then yields ``count`` frames and ends."""

    kind = "flaky"

    def __init__(self, failures: int, count: int = 2) -> None:
        super().__init__(None)
        self.failures, self.count = failures, count
        self.opened = 0

    def open(self) -> None:
        self.opened += 1
        if self.opened <= self.failures:
            raise SourceError(f"device busy (attempt {self.opened})")

    def frames(self):
        for index in range(self.count):
            yield Frame(str(index), time.time(), np.zeros((8, 8), np.uint8))


def test_retry_backs_off_exponentially_and_recovers(caplog, monkeypatch):
    stop = threading.Event()
    waits: list[float] = []
    real_wait = stop.wait

    def recording_wait(timeout: float | None = None) -> bool:
        waits.append(timeout or 0.0)
        return real_wait(0)

    monkeypatch.setattr(stop, "wait", recording_wait)
    errors: list[BaseException] = []
    retrying = RetryingSource(FlakySource(failures=4), initial_s=0.5, max_s=2.0, stop=stop,
                              on_error=errors.append)
    with caplog.at_level(logging.ERROR, logger="edge.sources.base"):
        frames = list(retrying.frames())
    assert [f.id for f in frames] == ["0", "1"]
    assert waits == [0.5, 1.0, 2.0, 2.0]
    assert retrying.errors == 4 and len(errors) == 4
    assert "device busy (attempt 1)" in caplog.text and "retrying in 0.5 s" in caplog.text


def test_retry_survives_an_unexpected_exception_and_stops_on_request():
    class Broken(FlakySource):
        def open(self) -> None:
            raise ZeroDivisionError("bug in a driver")

    stop = threading.Event()
    retrying = RetryingSource(Broken(0), initial_s=5.0, max_s=5.0, stop=stop)
    timer = threading.Timer(0.2, stop.set)
    timer.start()
    started = time.monotonic()
    assert list(retrying.frames()) == []
    assert time.monotonic() - started < 2.0  # the back-off wait ends on stop
    assert retrying.errors == 1
