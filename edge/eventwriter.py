"""The event writer: decided frames → the durable spool → retained crop states, off the scorer.

The processing loop hands each decided frame to :meth:`EventWriter.put` and goes on to score the
next one. The writer's thread takes every frame waiting, commits all their events in ONE spool
transaction (one fsync for the group: a slow SD card is paid once per group, not once per frame),
and only then publishes those frames' crop states, frame by frame in order. So a state never names
an event that a power cut could still take, and events reach the spool in decision order.

Durability, exactly: an event is kept from the moment its transaction commits. Between its decision
and that commit it waits in a bounded hand-over of at most ``MAX_PENDING_FRAMES`` frames (the group
being committed included; a few milliseconds at line rate), during which nothing about it — state,
event id — has left the device. The hand-over never drops: when the spool is slower than the line,
:meth:`put` waits, the frame queue fills, and a live camera's *oldest frames* are dropped and
counted — frames, never decided events. Every stop that Python sees (end of a replay, SIGTERM, an
error elsewhere) drains the hand-over through :meth:`close` before the publisher closes.

A refused event (disk full, oversized) is logged and counted and makes :attr:`problem` say why;
the writer goes on with later frames. Anything else that goes wrong on its thread is a defect:
it is kept, logged with the number of frames whose events it strands, and re-raised on the
processing thread by the next :meth:`put` (or by :meth:`raise_error`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from edge.decision import ANOMALY, OK
from edge.errors import PublishError
from edge.metrics import LatencyWindows
from edge.types import Decision, Event, Frame

log = logging.getLogger(__name__)

# Decided frames that may wait for their spool commit; beyond this put() blocks (backpressure).
MAX_PENDING_FRAMES = 16


class EventSink(Protocol):
    """The part of the publisher the writer uses (see edge.runtime.Publisher)."""

    def submit_events(self, batch: list[dict[str, Any]]) -> list[Event | PublishError]: ...
    def publish_state(self, crop: str, payload: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class DecidedFrame:
    """A frame's decisions, in layout order; ``announce``: publish every crop's state (the first
    frame of a run), not only the changed ones."""

    frame: Frame
    decided: list[Decision]
    announce: bool = False


EventFields = Callable[[Frame, Decision], dict[str, Any]]


def is_event(decision: Decision) -> bool:
    """An event is an anomalous crop on a frame, or a crop's transition back to ``ok``."""
    return decision.state == ANOMALY or (decision.changed and decision.state == OK)


class EventWriter:
    """One thread that commits decided frames' events and then publishes their crop states."""

    def __init__(self, sink: EventSink, event_fields: EventFields, *,
                 on_frame_written: Callable[[], None], latency: LatencyWindows,
                 capacity: int = MAX_PENDING_FRAMES) -> None:
        self.sink = sink
        self.event_fields = event_fields
        self.on_frame_written = on_frame_written  # the runtime refreshes its status
        self.latency = latency
        self.capacity = capacity
        self.problem: str | None = None  # why the last eventful frame lost events, else None
        self.events_failed = 0
        self.frames_written = 0
        self.groups_written = 0
        self.error: BaseException | None = None
        self._pending: deque[DecidedFrame] = deque()
        self._writing = 0  # frames of the group being committed: they count against capacity
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._main, name="event-writer", daemon=True)
        self._group_committed = False  # the group being written is in the spool already

    def start(self) -> None:
        self._thread.start()

    def put(self, item: DecidedFrame) -> None:
        """Queue a decided frame; waits while ``capacity`` frames await their commit (never
        drops)."""
        with self._cond:
            while len(self._pending) + self._writing >= self.capacity and self.error is None:
                self._cond.wait()
            self.raise_error()
            self._pending.append(item)
            self._cond.notify_all()

    def depth(self) -> int:
        """Decided frames not yet committed (waiting, or in the group being written)."""
        with self._cond:
            return len(self._pending) + self._writing

    def close(self) -> None:
        """Write everything pending, then stop the thread (waits for it)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join()

    def raise_error(self) -> None:
        """Re-raise on the caller's thread what stopped the writer, if anything did."""
        if self.error is not None:
            raise self.error

    # ----------------------------------------------------------------- writer thread

    def _main(self) -> None:
        group: list[DecidedFrame] = []
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: bool(self._pending) or self._closing)
                    if not self._pending:
                        return  # closing, and everything was written
                    group = list(self._pending)
                    self._pending.clear()
                    self._writing = len(group)
                self._write(group)
                group = []
                with self._cond:
                    self._writing = 0
                    self._cond.notify_all()
        except BaseException as exc:  # a defect: keep it for the processing thread
            with self._cond:
                # A group whose commit went through is stored (and will be sent), whatever
                # failed after it (its states, the status refresh).
                stranded = (0 if self._group_committed else len(group)) + len(self._pending)
                self.error = exc
                self._cond.notify_all()
            log.critical("the event writer stopped: %r; the events of %d decided frame(s) were "
                         "not stored", exc, stranded)

    def _write(self, group: list[DecidedFrame]) -> None:
        started = time.monotonic()
        self._group_committed = False
        wanted = [[i for i, d in enumerate(item.decided) if is_event(d)] for item in group]
        fields = [self.event_fields(item.frame, item.decided[i])
                  for item, indices in zip(group, wanted, strict=True) for i in indices]
        results: list[Event | PublishError] = []
        if fields:
            try:
                results = self.sink.submit_events(fields)
            except PublishError as exc:  # the spool took none of them (disk full, read-only)
                results = [exc] * len(fields)
        self._group_committed = True
        at = 0
        for item, indices in zip(group, wanted, strict=True):
            ids = self._take_results(item, indices, results[at:at + len(indices)])
            at += len(indices)
            self._publish_states(item, ids)
            self.frames_written += 1
            if indices:
                self.on_frame_written()
        self.groups_written += 1
        self.latency.add("publish", time.monotonic() - started)

    def _take_results(self, item: DecidedFrame, indices: list[int],
                      results: list[Event | PublishError]) -> dict[int, str | None]:
        """Event id per decision index (None where refused); updates ``problem``."""
        ids: dict[int, str | None] = {}
        for index, result in zip(indices, results, strict=True):
            if isinstance(result, PublishError):
                # The spool could not take it (disk full, oversized). Stopping would not save
                # this event and would lose every later one; say so loudly and keep going.
                self.events_failed += 1
                self.problem = f"event spool refused an event: {result}"
                log.error("event for crop %s of frame %s NOT stored: %s",
                          item.decided[index].crop, item.frame.id, result)
                ids[index] = None
            else:
                ids[index] = result.event_id
        if indices and all(ids[i] is not None for i in indices):
            self.problem = None
        return ids

    def _publish_states(self, item: DecidedFrame, ids: dict[int, str | None]) -> None:
        for index, decision in enumerate(item.decided):
            if item.announce or decision.changed:
                self.sink.publish_state(decision.crop, {
                    "state": decision.state, "previous_state": decision.previous_state,
                    "score": decision.score, "score_z": decision.score_z,
                    "frame_id": item.frame.id, "box": decision.box.as_list(),
                    "event_id": ids.get(index),
                })
