"""The edge pipeline: capture → crops → score → decide → spool → publish, as three stages.

Threads and what may block:

- The **capture thread** reads the source (through :class:`~edge.sources.base.RetryingSource`),
  cuts each frame into its crops and prepares them into one batch (once the layout has been
  checked against the first frame), and puts both into the :class:`~edge.metrics.FrameQueue`.
  A live source never waits: when the queue is full the oldest frame is dropped and counted.
  Nothing downstream can stall capture.
- The **processing loop** (the caller's thread) makes ONE ``Scorer.score`` call per frame,
  updates the per-crop decisions and hands the decided frame to the
  :class:`~edge.eventwriter.EventWriter`; it does no I/O, so the model is never idle waiting for
  a disk or a socket.
- The **event writer** commits the events of every decided frame waiting in ONE spool
  transaction (one fsync), then publishes those frames' crop states, so a state never names an
  event a power cut could still take. Sending to the broker happens on the publisher's threads.

Events: one per crop whose decided state is ``anomaly`` on a frame, and one per transition back to
``ok``. Retained per-crop state: published on the first frame and on every change. Status:
``degraded`` (with the reason) when the source fails or delivers nothing for ``stall_timeout_s``,
``online`` again when frames return; also ``degraded`` while the spool refuses events (disk full)
or the broker's ACL denies them (``delivery_problem``); refused events are logged and counted —
the pipeline keeps deciding. A replay that ends, or ``--max-frames``, flushes the publisher
(bounded) and returns 0; SIGTERM/SIGINT stop cleanly (``offline`` comes from close()).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

import numpy as np

from edge.bundle import Bundle, load_bundle
from edge.config import DeviceConfig
from edge.decision import DecisionEngine
from edge.errors import ConfigError, PublishError
from edge.eventwriter import DecidedFrame, EventWriter
from edge.layout import Layout
from edge.metrics import END, FrameQueue, LatencyWindows, RateMeter
from edge.publish.settings import MqttConfig
from edge.scoring import Scorer
from edge.sources import RetryingSource, create_source
from edge.types import Decision, Event, Frame

log = logging.getLogger(__name__)

QUEUE_POLL_S = 0.2  # how often the processing loop wakes without frames (stall checks, stats)
FLUSH_TIMEOUT_S = 30.0  # at the end of a replay, wait this long for the spool to drain
FLUSH_POLL_S = 0.5  # the flush wait is cut into slices so that SIGTERM can end it early
CAPTURE_JOIN_S = 5.0
STATUS_ONLINE = "online"
STATUS_DEGRADED = "degraded"


@dataclass(frozen=True)
class Taken:
    """A frame from the capture thread, with its crops prepared there when the layout already
    knew the frame size (``crops`` None: the processing loop checks and prepares it)."""

    frame: Frame
    crops: np.ndarray | None = None


class Publisher(Protocol):
    """What the runtime needs from edge.publish.mqtt.MqttPublisher."""

    def start(self) -> None: ...
    def submit_events(self, batch: list[dict[str, Any]]) -> list[Event | PublishError]: ...
    def publish_state(self, crop: str, payload: dict[str, Any]) -> None: ...
    def publish_stats(self, stats: dict[str, Any]) -> None: ...
    def set_status(self, status: str, reason: str | None = None) -> None: ...
    def spool_depth(self) -> int: ...
    def delivery_problem(self) -> str | None: ...
    def flush(self, timeout_s: float) -> bool: ...
    def close(self) -> None: ...


PublisherFactory = Callable[[MqttConfig, str, dict[str, str], Path], Publisher]


def mqtt_publisher(config: MqttConfig, device_id: str, bundle_info: dict[str, str],
                   base_dir: Path) -> Publisher:
    """The real publisher (imported here so that config validation does not load paho)."""
    from edge.publish.mqtt import MqttPublisher

    return MqttPublisher(config, device_id, bundle_info, base_dir)


class Runtime:
    """One run of the pipeline for a validated config."""

    def __init__(self, config: DeviceConfig, *, max_frames: int | None = None,
                 publisher_factory: PublisherFactory = mqtt_publisher,
                 bundle: Bundle | None = None) -> None:
        self.config = config
        self.max_frames = max_frames
        self.bundle = bundle if bundle is not None else load_bundle(
            config.bundle, public_key=config.bundle_public_key)
        self.bundle_info = {"name": self.bundle.name, "sha256": self.bundle.sha256}
        self.source = create_source(config.source)
        problem = self.source.colour_problem(self.bundle.input.color_mode)
        if problem is not None:  # before any interpreter is built: nothing to clean up
            raise ConfigError(problem)
        self.scorer = Scorer(self.bundle, backend=config.scorer.backend,
                             num_threads=config.scorer.threads())
        self.layout = Layout.from_config(config.layout)
        boxes = dict(self.layout.boxes)
        self.decisions = DecisionEngine(self.layout.names, boxes, self.bundle, config.decision)
        self.stop_event = threading.Event()  # ends capture and processing
        self._stop_requested = threading.Event()  # a signal: also cuts the final flush short
        self.retrying = RetryingSource(self.source, initial_s=config.source.retry_initial_s,
                                       max_s=config.source.retry_max_s, stop=self.stop_event,
                                       on_error=self._on_source_error)
        self.queue: FrameQueue[Taken] = FrameQueue(config.source.queue_frames)
        self.latency = LatencyWindows()
        self.publisher = publisher_factory(config.mqtt, config.device_id, self.bundle_info,
                                           config.base_dir)
        self.writer = EventWriter(self.publisher, self._event_fields,
                                  on_frame_written=self._refresh_status, latency=self.latency)
        self.frames_processed = 0
        self.frame_size_errors = 0
        self.status = STATUS_ONLINE
        self._status_lock = threading.RLock()  # the processing loop and the writer both update it
        self._status_reason: str | None = None
        self._source_problem: str | None = None  # set by the capture thread
        self._idle_problem: str | None = None  # no frames: why (source error or stall)
        self._frame_problem: str | None = None
        self._capture_error: BaseException | None = None
        self._states_announced = False
        self._started_at = time.monotonic()
        self._rate = RateMeter()

    # ----------------------------------------------------------------- capture thread

    def _on_source_error(self, exc: BaseException) -> None:
        # Called on the capture thread; the processing loop turns it into a status change.
        self._source_problem = f"source error: {exc}"

    def _capture_main(self) -> None:
        frames = self.retrying.frames()
        try:
            while not self.stop_event.is_set():
                started = time.monotonic()
                frame = next(frames, None)
                if frame is None:
                    log.info("source %s ended", self.source.describe())
                    break
                # Time the source took to hand over a frame (for a camera: waiting for exposure).
                self.latency.add("capture", time.monotonic() - started)
                self.queue.put(self._prepare(frame), drop_oldest=self.source.live,
                               stop=self.stop_event)
        except BaseException as exc:  # ConfigError from a source; re-raised on the main thread
            self._capture_error = exc
        finally:
            frames.close()
            self.queue.close()

    # ----------------------------------------------------------------- processing

    def _prepare(self, frame: Frame) -> Taken:
        """Capture thread: cut and prepare the crops of a frame of the checked size (the first
        frame, and frames of another size, are left to the processing loop)."""
        height, width = frame.image.shape[:2]
        if self.layout.frame_size != (width, height):
            return Taken(frame)
        started = time.monotonic()
        crops = self.layout.batch(frame.image, self.bundle.input)
        self.latency.add("preprocess", time.monotonic() - started)
        return Taken(frame, crops)

    def _process(self, taken: Taken) -> bool:
        """Score and decide one frame; False when it had to be skipped (wrong size)."""
        frame, crops = taken.frame, taken.crops
        if crops is None:
            height, width = frame.image.shape[:2]
            if self.layout.frame_size is None:
                self.layout.check_frame_size(width, height)
                log.info("first frame %d×%d px; layout: %s", width, height,
                         self.layout.describe())
            elif (width, height) != self.layout.frame_size:
                self.frame_size_errors += 1
                # Degraded, not online: a camera that came back at another resolution must not
                # look healthy while nothing is scored.
                self._frame_problem = (f"frames are {width}×{height} px but the layout was "
                                       f"checked against {self.layout.frame_size[0]}×"
                                       f"{self.layout.frame_size[1]}; nothing is scored")
                log.warning("frame %s skipped: %s", frame.id, self._frame_problem)
                return False
            crops = self._prepare(frame).crops  # the size is checked now: it prepares
        assert crops is not None
        self._frame_problem = None
        t1 = time.monotonic()
        scores = self.scorer.score(crops)
        t2 = time.monotonic()
        decided = self.decisions.decide(scores.tolist())
        t3 = time.monotonic()
        # The writer commits the frame's events, then publishes its states (edge.eventwriter).
        self.writer.put(DecidedFrame(frame, decided, announce=not self._states_announced))
        self._states_announced = True
        self.latency.add("score", t2 - t1)
        self.latency.add("decide", t3 - t2)
        return True

    def _event_fields(self, frame: Frame, decision: Decision) -> dict[str, Any]:
        """The spool fields of one event (called on the writer's thread)."""
        return {
            "device_id": self.config.device_id, "frame_id": frame.id,
            "timestamp": frame.timestamp, "crop": decision.crop, "box": decision.box.as_list(),
            "score": decision.score, "state": decision.state,
            "previous_state": decision.previous_state,
            "threshold": self.decisions.threshold_payload(decision.crop),
            "score_z": decision.score_z, "bundle": dict(self.bundle_info), "extra": {},
        }

    def _refresh_status(self) -> None:
        """Publish ``degraded`` with the first problem there is, else ``online`` (called by the
        processing loop and, after each eventful frame it wrote, by the event writer)."""
        # The problem is read under the lock too: otherwise one thread's stale "online" could
        # overwrite the other's newer "degraded".
        with self._status_lock:
            problem = (self._idle_problem or self._frame_problem or self.writer.problem
                       or self.publisher.delivery_problem())
            self._set_status(STATUS_ONLINE if problem is None else STATUS_DEGRADED, problem)

    def _set_status(self, status: str, reason: str | None) -> None:
        with self._status_lock:
            if (status, reason) == (self.status, self._status_reason):
                return
            self.status, self._status_reason = status, reason
            (log.warning if status == STATUS_DEGRADED else log.info)(
                "status %s%s", status, f": {reason}" if reason else "")
            self.publisher.set_status(status, reason)

    def stats(self) -> dict[str, Any]:
        """The ``…/stats`` payload fields this side knows (the publisher adds spool figures)."""
        return {
            "fps": self._rate.rate(),
            "frames": self.frames_processed,
            "latency_ms": self.latency.summary_ms(),
            "dropped_frames": self.queue.dropped,
            "corrupt_frames": self.source.corrupt_frames,
            "source_errors": self.retrying.errors,
            "frame_size_errors": self.frame_size_errors,
            "events_failed": self.writer.events_failed,
            "queue_depth": self.queue.depth(),
            "unwritten_frames": self.writer.depth(),
            "spool_depth": self._spool_depth(),
            "uptime_s": round(time.monotonic() - self._started_at, 3),
            "status": self.status,
        }

    def _spool_depth(self) -> int | None:
        # A failing spool read (SD card error) must not end the pipeline; None says "unknown".
        try:
            return self.publisher.spool_depth()
        except PublishError as exc:
            log.error("cannot read the event spool depth: %s", exc)
            return None

    # ----------------------------------------------------------------- main loop

    def request_stop(self) -> None:
        """Ask the pipeline to stop (signal handlers, tests); returns at once."""
        self._stop_requested.set()
        self.stop_event.set()

    def run(self) -> int:
        """Run until the source ends, --max-frames is reached or a stop is requested."""
        self.decisions.log_overrides()
        log.info("device %s: bundle %s (sha256 %s…), source %s, %d crops",
                 self.config.device_id, self.bundle.name, self.bundle.sha256[:12],
                 self.source.describe(), len(self.layout.boxes))
        try:
            self.publisher.start()
        except BaseException:
            self.publisher.close()
            raise
        self.writer.start()
        capture = threading.Thread(target=self._capture_main, name="capture", daemon=True)
        capture.start()
        ended = False
        try:
            ended = self._loop()
            if self._capture_error is not None:
                raise self._capture_error
        finally:
            self.stop_event.set()
            capture.join(CAPTURE_JOIN_S)
            # Every decided frame reaches the spool before the publisher flushes and closes.
            self.writer.close()
            self._finish(flush=ended)
        self.writer.raise_error()
        return 0

    def _loop(self) -> bool:
        """Process frames; True when the run ended by itself (end of replay / max frames)."""
        source_cfg = self.config.source
        stats_every = self.config.mqtt.stats_interval_s
        next_stats = time.monotonic() + stats_every
        last_frame_at = time.monotonic()
        while not self.stop_event.is_set():
            item = self.queue.get(QUEUE_POLL_S)
            now = time.monotonic()
            if item is END:
                return self._capture_error is None
            if isinstance(item, Taken):
                last_frame_at = now
                self._source_problem = self._idle_problem = None
                if self._process(item):
                    self.frames_processed += 1
                    self._rate.tick()
                self._refresh_status()
                if self.max_frames is not None and self.frames_processed >= self.max_frames:
                    return True
            else:
                if self._source_problem is not None:
                    self._idle_problem = self._source_problem
                elif now - last_frame_at > source_cfg.stall_timeout_s:
                    self._idle_problem = (f"no frames from {self.source.describe()} for more "
                                          f"than {source_cfg.stall_timeout_s:g} s")
                if self._idle_problem is not None:
                    self._refresh_status()
            if now >= next_stats:
                next_stats = now + stats_every
                self.publisher.publish_stats(self.stats())
        return False

    def _flush(self) -> bool:
        """Wait (bounded) until the spool is empty; a signal during the wait cuts it short."""
        deadline = time.monotonic() + FLUSH_TIMEOUT_S
        while time.monotonic() < deadline and not self._stop_requested.is_set():
            if self.publisher.flush(min(FLUSH_POLL_S, max(deadline - time.monotonic(), 0.0))):
                return True
        return False

    def _finish(self, *, flush: bool) -> None:
        try:
            if flush:
                started = time.monotonic()
                if self._flush():
                    log.info("all events delivered; %d frames processed", self.frames_processed)
                else:
                    why = ("the wait was cut short by a stop signal"
                           if self._stop_requested.is_set() else "the wait timed out")
                    log.warning("%s events still in the spool after %.1f s (%s); they are kept "
                                "on disk and sent on the next start", self._spool_depth(),
                                time.monotonic() - started, why)
            self.publisher.publish_stats(self.stats())  # the final figures, after the flush
        finally:
            self.publisher.close()


def run_with_signals(runtime: Runtime) -> int:
    """Run with SIGTERM/SIGINT mapped to a clean stop (handlers restored afterwards)."""
    if threading.current_thread() is not threading.main_thread():
        return runtime.run()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %s received; stopping", signal.Signals(signum).name)
        runtime.request_stop()

    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return runtime.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_from_args(args: Any) -> int:
    """``edge run --config F [--validate-config] [--max-frames N]`` (see edge/cli.py)."""
    from edge.config import load_config
    from edge.validate import setup_logging, validate_config

    if args.validate_config:
        return validate_config(Path(args.config))
    if args.max_frames is not None and args.max_frames < 1:
        raise ConfigError(f"--max-frames is {args.max_frames}; give a count of at least 1 "
                          "or leave it out to run until the source ends.")
    config = load_config(args.config)
    setup_logging(config.logging)
    return run_with_signals(Runtime(config, max_frames=args.max_frames))
