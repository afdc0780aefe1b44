"""Runtime plumbing with numbers attached: the bounded frame queue and per-stage latency windows.

The frame queue sits between the capture thread and the processing loop. Frames may be dropped
(a live camera does not wait for a slow model), decided events may not: events are produced after
the queue and handed to the event writer (edge.eventwriter), whose hand-over blocks instead of
dropping.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import Generic, TypeVar

import numpy as np

T = TypeVar("T")

LATENCY_WINDOW = 1000  # samples kept per stage for p50/p99 (the last ~1000 frames)
STAGES = ("capture", "preprocess", "score", "decide", "publish")
MS_PER_S = 1000.0


class EndOfStream:
    """Marker put in the queue when the source has ended (or the capture thread gave up)."""


END = EndOfStream()


class FrameQueue(Generic[T]):
    """Bounded FIFO of frames (or of frames with their prepared crops); a live source drops the
    oldest when full, a replay waits."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: deque[T | EndOfStream] = deque()
        self._cond = threading.Condition()
        self.dropped = 0

    def depth(self) -> int:
        with self._cond:
            return sum(1 for item in self._items if not isinstance(item, EndOfStream))

    def put(self, frame: T, *, drop_oldest: bool, stop: threading.Event) -> None:
        """Enqueue ``frame``. When full: drop the oldest frame (count it) or wait for room."""
        with self._cond:
            while len(self._items) >= self.capacity and not drop_oldest:
                if stop.is_set():
                    return
                self._cond.wait(timeout=0.1)
            if len(self._items) >= self.capacity:
                self._items.popleft()
                self.dropped += 1
            self._items.append(frame)
            self._cond.notify_all()

    def close(self) -> None:
        """No more frames will come; the reader sees END after the frames already queued."""
        with self._cond:
            self._items.append(END)
            self._cond.notify_all()

    def get(self, timeout_s: float) -> T | EndOfStream | None:
        """The next frame, END, or None when nothing arrived within ``timeout_s``."""
        with self._cond:
            if not self._items and not self._cond.wait_for(lambda: bool(self._items),
                                                           timeout=timeout_s):
                return None
            item = self._items.popleft()
            self._cond.notify_all()
            return item


class LatencyWindows:
    """The last LATENCY_WINDOW durations of each pipeline stage, in seconds."""

    def __init__(self, stages: Iterable[str] = STAGES) -> None:
        self._lock = threading.Lock()
        self._samples = {stage: deque[float](maxlen=LATENCY_WINDOW) for stage in stages}

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self._samples[stage].append(seconds)

    def summary_ms(self) -> dict[str, dict[str, float | None]]:
        """{stage: {"p50": ms, "p99": ms}}; None for a stage with no samples yet."""
        with self._lock:
            copies = {stage: list(values) for stage, values in self._samples.items()}
        result: dict[str, dict[str, float | None]] = {}
        for stage, values in copies.items():
            if not values:
                result[stage] = {"p50": None, "p99": None}
                continue
            p50, p99 = np.percentile(np.asarray(values) * MS_PER_S, [50, 99])
            result[stage] = {"p50": round(float(p50), 3), "p99": round(float(p99), 3)}
        return result


class RateMeter:
    """Frames per second over the interval between two :meth:`rate` calls."""

    def __init__(self) -> None:
        self._count = 0
        self._since = time.monotonic()

    def tick(self) -> None:
        self._count += 1

    def rate(self) -> float:
        now = time.monotonic()
        elapsed = max(now - self._since, 1e-9)
        value = self._count / elapsed
        self._count, self._since = 0, now
        return round(value, 3)
