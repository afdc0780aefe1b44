"""The event writer on its own: group commits, order of commit and state, backpressure, errors.

The sink is a recording stand-in for the publisher (the real publisher and spool are exercised
through the runtime in test_runtime.py and against Mosquitto in test_line_end_to_end.py); a gate
in it holds the writer's thread still, so the tests choose what is pending when it wakes.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest

from edge.errors import PublishError
from edge.eventwriter import DecidedFrame, EventWriter
from edge.metrics import LatencyWindows
from edge.types import Box, Decision, Event, Frame

WAIT_S = 5.0


class GatedSink:
    """Records commits and state publishes in one ordered log; ``gate`` pauses submit_events."""

    def __init__(self) -> None:
        self.log: list[tuple[str, Any]] = []
        self.commits: list[list[str]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail_with: BaseException | None = None

    def submit_events(self, batch: list[dict[str, Any]]) -> list[Event | PublishError]:
        self.entered.set()
        assert self.gate.wait(WAIT_S), "test never opened the gate"
        if self.fail_with is not None:
            raise self.fail_with
        ids = [f"{f['frame_id']}/{f['crop']}" for f in batch]
        self.commits.append(ids)
        self.log.append(("commit", ids))
        return [Event(event_id=i, seq=n, **f)
                for n, (i, f) in enumerate(zip(ids, batch, strict=True))]

    def publish_state(self, crop: str, payload: dict[str, Any]) -> None:
        self.log.append(("state", (payload["frame_id"], crop, payload["event_id"])))


def decided(frame_no: int, anomalous: set[str]) -> DecidedFrame:
    decisions = [Decision(crop=name, box=Box(0, 0, 4, 4), score=0.5 if name in anomalous else 0.0,
                          state="anomaly" if name in anomalous else "ok", previous_state="ok",
                          threshold_high=0.1, threshold_low=None, threshold_source="bundle",
                          score_z=None)
                 for name in ("a", "b")]
    frame = Frame(id=f"f{frame_no}", timestamp=float(frame_no), image=np.zeros((4, 4), np.uint8))
    return DecidedFrame(frame, decisions)


def fields(frame: Frame, decision: Decision) -> dict[str, Any]:
    return {"device_id": "d", "frame_id": frame.id, "timestamp": frame.timestamp,
            "crop": decision.crop, "box": decision.box.as_list(), "score": decision.score,
            "state": decision.state, "previous_state": decision.previous_state,
            "threshold": {}, "score_z": None, "bundle": {}, "extra": {}}


def make_writer(sink: GatedSink, capacity: int = 4) -> tuple[EventWriter, list[int]]:
    refreshed: list[int] = []
    writer = EventWriter(sink, fields, on_frame_written=lambda: refreshed.append(1),
                         latency=LatencyWindows(), capacity=capacity)
    writer.start()
    return writer, refreshed


def test_frames_waiting_are_committed_together_and_states_follow_their_commit() -> None:
    sink = GatedSink()
    writer, refreshed = make_writer(sink)
    sink.gate.clear()
    writer.put(decided(0, {"a"}))
    assert sink.entered.wait(WAIT_S)  # frame 0 is being committed, the writer is held
    for n in (1, 2, 3):
        writer.put(decided(n, {"b"} if n != 2 else set()))
    sink.gate.set()
    writer.close()
    # Frame 0 alone, then frames 1–3 in ONE transaction (frame 2 has no event).
    assert sink.commits == [["f0/a"], ["f1/b", "f3/b"]]
    # Every state comes after the commit that holds its event, frames in order, ids attached.
    assert [entry for entry in sink.log if entry[0] == "state"] == [
        ("state", ("f0", "a", "f0/a")), ("state", ("f1", "b", "f1/b")),
        ("state", ("f3", "b", "f3/b"))]
    assert sink.log.index(("commit", ["f1/b", "f3/b"])) < sink.log.index(
        ("state", ("f1", "b", "f1/b")))
    assert writer.frames_written == 4 and writer.groups_written == 2
    assert len(refreshed) == 3  # status refreshed after each frame that had events


def test_a_full_hand_over_makes_put_wait_and_drops_nothing() -> None:
    sink = GatedSink()
    writer, _ = make_writer(sink, capacity=2)
    sink.gate.clear()
    writer.put(decided(0, {"a"}))
    assert sink.entered.wait(WAIT_S)
    # Frame 0 is being committed and counts against the capacity: one more fills the hand-over,
    # so at most ``capacity`` decided frames are ever uncommitted (what a power cut can take).
    writer.put(decided(1, {"a"}))
    third_done = threading.Event()
    putter = threading.Thread(target=lambda: (writer.put(decided(2, {"a"})), third_done.set()))
    putter.start()
    time.sleep(0.2)
    assert not third_done.is_set(), "put() returned although the hand-over was full"
    assert writer.depth() == 2
    sink.gate.set()
    assert third_done.wait(WAIT_S)
    putter.join()
    writer.close()
    assert [i for commit in sink.commits for i in commit] == ["f0/a", "f1/a", "f2/a"]


def test_close_writes_everything_pending_first() -> None:
    sink = GatedSink()
    writer, _ = make_writer(sink, capacity=64)
    for n in range(50):
        writer.put(decided(n, {"a", "b"}))
    writer.close()
    assert sum(len(c) for c in sink.commits) == 100
    assert writer.depth() == 0


def test_a_refused_group_is_counted_and_the_writer_goes_on(caplog) -> None:
    sink = GatedSink()
    sink.fail_with = PublishError("cannot write spool.db: disk I/O error")
    writer, _ = make_writer(sink)
    writer.put(decided(0, {"a", "b"}))
    deadline = time.monotonic() + WAIT_S
    while writer.events_failed < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert writer.events_failed == 2
    assert writer.problem == "event spool refused an event: cannot write spool.db: disk I/O error"
    sink.fail_with = None
    writer.put(decided(1, {"a"}))
    writer.close()
    assert writer.problem is None  # the next stored event clears it
    assert sink.commits == [["f1/a"]]
    assert "event for crop b of frame f0 NOT stored" in caplog.text
    # The refused frame's states still go out, with no event id.
    assert ("state", ("f0", "a", None)) in sink.log


def test_a_defect_on_the_writer_thread_reaches_the_caller(caplog) -> None:
    sink = GatedSink()
    sink.fail_with = RuntimeError("bug in the spool")
    writer, _ = make_writer(sink)
    writer.put(decided(0, {"a"}))
    deadline = time.monotonic() + WAIT_S
    while writer.error is None and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(RuntimeError, match="bug in the spool"):
        writer.put(decided(1, {"a"}))
    writer.close()
    assert "the event writer stopped" in caplog.text
    assert "the events of 1 decided frame(s) were not stored" in caplog.text


def test_a_defect_after_the_commit_does_not_call_stored_events_lost(caplog) -> None:
    sink = GatedSink()

    def broken_state(crop: str, payload: dict[str, Any]) -> None:
        raise RuntimeError("bug in publish_state")

    sink.publish_state = broken_state  # type: ignore[method-assign]
    writer, _ = make_writer(sink)
    writer.put(decided(0, {"a"}))
    deadline = time.monotonic() + WAIT_S
    while writer.error is None and time.monotonic() < deadline:
        time.sleep(0.01)
    writer.close()
    assert sink.commits == [["f0/a"]]  # stored: the spool has it and will send it
    assert "bug in publish_state" in caplog.text
    assert "the events of 0 decided frame(s) were not stored" in caplog.text
