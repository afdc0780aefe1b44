"""The frame-source seam: a small abstract :class:`Source` and the retry-with-backoff wrapper.

A source is opened, yields :class:`~edge.types.Frame` values, and is closed; it is used as a
context manager. It raises :class:`~edge.errors.SourceError` when it fails (camera unplugged,
stream gone) and simply stops iterating when it has no more frames (end of a non-looping replay).

:class:`RetryingSource` keeps the runtime alive across failures: each failure is logged, counted,
reported to a callback (the runtime turns it into status ``degraded``), and the source is reopened
after an exponentially growing delay (``retry_initial_s`` doubling up to ``retry_max_s``). Only a
configuration mistake (ConfigError), which no retry can fix, is passed on.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Iterator
from types import TracebackType
from typing import Any, ClassVar

from edge.errors import ConfigError, SourceError
from edge.types import Frame

log = logging.getLogger(__name__)

BACKOFF_FACTOR = 2.0


class Source(ABC):
    """One kind of frame source; subclasses live in one file each (folder.py, opencv.py, …)."""

    kind: ClassVar[str]

    def __init__(self, config: Any) -> None:
        self.config = config
        # Images that could not be decoded and were skipped (replays); read by the stats.
        self.corrupt_frames = 0

    @property
    def live(self) -> bool:
        """True when frames arrive in real time (a camera, a paced replay).

        A live source never waits for the pipeline: when the frame queue is full the oldest frame
        is dropped. A replay read as fast as possible is not live; it waits instead, so a replay
        scores every frame.
        """
        return True

    @property
    def grey_only(self) -> bool:
        """True when every frame is grey whatever the scene (the Pi camera's luma plane, an
        OpenCV source with ``grey = true``): a bundle trained on colour cannot use it."""
        return False

    def colour_problem(self, color_mode: str) -> str | None:
        """Why this source cannot feed a bundle of ``color_mode``, or None."""
        if self.grey_only and color_mode != "grey":
            return (f"source {self.describe()} delivers grey frames but the bundle was trained on "
                    f"{color_mode} crops: its scores and threshold would not hold. Use a bundle "
                    "trained on grey crops (trainer fit --channels 1, the default) or a colour "
                    "source (kind = \"opencv\" with grey = false).")
        return None

    def describe(self) -> str:
        """A short description for logs and --validate-config (never a secret)."""
        return self.kind

    def open(self) -> None:  # noqa: B027 - optional hook, most sources need no setup
        """Acquire the device or file; raise SourceError when it cannot be opened."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what :meth:`open` acquired; must be safe to call after a failed open."""

    @abstractmethod
    def frames(self) -> Iterator[Frame]:
        """Yield frames until the source ends; raise SourceError on failure."""

    def __enter__(self) -> Source:
        self.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


class RetryingSource:
    """Wraps a Source: failures are reported, counted and retried with exponential backoff."""

    def __init__(self, source: Source, *, initial_s: float, max_s: float,
                 stop: threading.Event,
                 on_error: Callable[[BaseException], None] | None = None) -> None:
        self.source = source
        self.initial_s = initial_s
        self.max_s = max_s
        self.stop = stop
        self.on_error = on_error
        self.errors = 0

    def frames(self) -> Generator[Frame, None, None]:
        """Frames of the wrapped source across reopenings; ends when the source ends or on stop."""
        delay = self.initial_s
        while not self.stop.is_set():
            try:
                with self.source:
                    for frame in self.source.frames():
                        delay = self.initial_s  # a frame arrived: the source works again
                        yield frame
                        if self.stop.is_set():
                            return
                return
            except ConfigError:
                raise
            except Exception as exc:  # a broken source must never take the runtime down
                self.errors += 1
                if isinstance(exc, SourceError):
                    log.error("source %s failed: %s; retrying in %.1f s",
                              self.source.describe(), exc, delay)
                else:
                    log.exception("source %s failed unexpectedly; retrying in %.1f s",
                                  self.source.describe(), delay)
                if self.on_error is not None:
                    self.on_error(exc)
                if self.stop.wait(delay):
                    return
                delay = min(delay * BACKOFF_FACTOR, self.max_s)
