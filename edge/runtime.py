"""The edge pipeline: capture thread → bounded frame queue → layout → score → decide → publish.

Threads and what may block:

- The **capture thread** reads the source (through :class:`~edge.sources.base.RetryingSource`) and
  puts frames into the :class:`~edge.metrics.FrameQueue`. A live source never waits: when the
  queue is full the oldest frame is dropped and counted. Nothing downstream can stall capture.
- The **processing loop** (the caller's thread) cuts each frame into crops, prepares them into one
  batch, makes ONE ``Scorer.score`` call per frame, updates the per-crop decisions, and hands
  the frame's events to the publisher in ONE ``submit_events`` call (one spool transaction, one
  fsync) before publishing its crop states. That only writes the durable spool; sending to the
  broker happens on the publisher's own threads.

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
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from edge.bundle import Bundle, load_bundle
from edge.config import DeviceConfig
from edge.decision import ANOMALY, OK, DecisionEngine
from edge.errors import ConfigError, PublishError
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
        self.scorer = Scorer(self.bundle, backend=config.scorer.backend,
                             num_threads=config.scorer.num_threads)
        self.layout = Layout.from_config(config.layout)
        boxes = dict(self.layout.boxes)
        self.decisions = DecisionEngine(self.layout.names, boxes, self.bundle, config.decision)
        self.source = create_source(config.source)
        self.stop_event = threading.Event()  # ends capture and processing
        self._stop_requested = threading.Event()  # a signal: also cuts the final flush short
        self.retrying = RetryingSource(self.source, initial_s=config.source.retry_initial_s,
                                       max_s=config.source.retry_max_s, stop=self.stop_event,
                                       on_error=self._on_source_error)
        self.queue = FrameQueue(config.source.queue_frames)
        self.latency = LatencyWindows()
        self.publisher = publisher_factory(config.mqtt, config.device_id, self.bundle_info,
                                           config.base_dir)
        self.frames_processed = 0
        self.frame_size_errors = 0
        self.status = STATUS_ONLINE
        self.events_failed = 0
        self._status_reason: str | None = None
        self._source_problem: str | None = None
        self._publish_problem: str | None = None
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
                self.queue.put(frame, drop_oldest=self.source.live, stop=self.stop_event)
        except BaseException as exc:  # ConfigError from a source; re-raised on the main thread
            self._capture_error = exc
        finally:
            frames.close()
            self.queue.close()

    # ----------------------------------------------------------------- processing

    def _process(self, frame: Frame) -> bool:
        """Score and decide one frame; False when it had to be skipped (wrong size)."""
        height, width = frame.image.shape[:2]
        if self.layout.frame_size is None:
            self.layout.check_frame_size(width, height)
            log.info("first frame %d×%d px; layout: %s", width, height, self.layout.describe())
        elif (width, height) != self.layout.frame_size:
            self.frame_size_errors += 1
            # Degraded, not online: a camera that came back at another resolution must not
            # look healthy while nothing is scored.
            self._frame_problem = (f"frames are {width}×{height} px but the layout was checked "
                                   f"against {self.layout.frame_size[0]}×"
                                   f"{self.layout.frame_size[1]}; nothing is scored")
            log.warning("frame %s skipped: %s", frame.id, self._frame_problem)
            return False
        self._frame_problem = None
        t0 = time.monotonic()
        batch = self.layout.batch(frame.image, self.bundle.input)
        t1 = time.monotonic()
        scores = self.scorer.score(batch)
        t2 = time.monotonic()
        decided = self.decisions.decide(scores.tolist())
        t3 = time.monotonic()
        self._publish(frame, decided)
        t4 = time.monotonic()
        for stage, seconds in (("preprocess", t1 - t0), ("score", t2 - t1),
                               ("decide", t3 - t2), ("publish", t4 - t3)):
            self.latency.add(stage, seconds)
        return True

    def _publish(self, frame: Frame, decided: list[Decision]) -> None:
        announce = not self._states_announced
        eventful = [i for i, d in enumerate(decided)
                    if d.state == ANOMALY or (d.changed and d.state == OK)]
        # All of the frame's events are committed (one spool transaction) before any of its
        # states goes out: a state never names an event that a power cut could still take.
        event_ids = dict(zip(eventful, self._submit(frame, [decided[i] for i in eventful]),
                             strict=True))
        for index, decision in enumerate(decided):
            if announce or decision.changed:
                self.publisher.publish_state(decision.crop, {
                    "state": decision.state, "previous_state": decision.previous_state,
                    "score": decision.score, "score_z": decision.score_z, "frame_id": frame.id,
                    "box": decision.box.as_list(), "event_id": event_ids.get(index),
                })
        self._states_announced = True

    def _submit(self, frame: Frame, decisions: list[Decision]) -> list[str | None]:
        """Hand a frame's events to the spool in one transaction; their ids, None if refused."""
        if not decisions:
            return []
        batch = [{
            "device_id": self.config.device_id, "frame_id": frame.id,
            "timestamp": frame.timestamp, "crop": d.crop, "box": d.box.as_list(),
            "score": d.score, "state": d.state, "previous_state": d.previous_state,
            "threshold": self.decisions.threshold_payload(d.crop), "score_z": d.score_z,
            "bundle": dict(self.bundle_info), "extra": {},
        } for d in decisions]
        try:
            results = self.publisher.submit_events(batch)
        except PublishError as exc:  # the spool took none of them (disk full, read-only)
            results = [exc] * len(batch)
        ids: list[str | None] = []
        for decision, result in zip(decisions, results, strict=True):
            if isinstance(result, PublishError):
                # The spool could not take it (disk full, oversized). Stopping would not save
                # this event and would lose every later one; say so loudly and keep deciding.
                self.events_failed += 1
                self._publish_problem = f"event spool refused an event: {result}"
                log.error("event for crop %s of frame %s NOT stored: %s", decision.crop,
                          frame.id, result)
                ids.append(None)
            else:
                self._publish_problem = None
                ids.append(result.event_id)
        return ids

    def _set_status(self, status: str, reason: str | None) -> None:
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
            "events_failed": self.events_failed,
            "queue_depth": self.queue.depth(),
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
            self._finish(flush=ended)
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
            if isinstance(item, Frame):
                last_frame_at = now
                self._source_problem = None
                if self._process(item):
                    self.frames_processed += 1
                    self._rate.tick()
                problem = (self._frame_problem or self._publish_problem
                           or self.publisher.delivery_problem())
                if problem is not None:
                    self._set_status(STATUS_DEGRADED, problem)
                else:
                    self._set_status(STATUS_ONLINE, None)
                if self.max_frames is not None and self.frames_processed >= self.max_frames:
                    return True
            elif self._source_problem is not None:
                self._set_status(STATUS_DEGRADED, self._source_problem)
            elif now - last_frame_at > source_cfg.stall_timeout_s:
                self._set_status(STATUS_DEGRADED,
                                 f"no frames from {self.source.describe()} for more than "
                                 f"{source_cfg.stall_timeout_s:g} s")
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
                if self._flush():
                    log.info("all events delivered; %d frames processed", self.frames_processed)
                else:
                    log.warning("%s events still in the spool after %g s; they are kept on disk "
                                "and sent on the next start", self._spool_depth(),
                                FLUSH_TIMEOUT_S)
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
