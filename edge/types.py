"""Values that cross the edge runtime's seams: Source → Layout → Scorer → Decision → Publisher."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

EVENT_SCHEMA = "anomaly-event/1"


# What encoding an event can raise: NaN or a value JSON cannot hold (ValueError, TypeError), a
# timestamp out of datetime's range (OverflowError, OSError).
UNENCODABLE = (ValueError, TypeError, OverflowError, OSError)


def encode_json(payload: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON, NaN refused (JSON has no NaN; a subscriber's parser would choke)."""
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).encode("utf-8")


def utc_iso(timestamp: float) -> str:
    """POSIX seconds → ISO-8601 UTC with milliseconds and a 'Z' suffix."""
    moment = datetime.fromtimestamp(timestamp, tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Frame:
    """One captured image. ``image`` is uint8, (H, W) grey or (H, W, 3) RGB."""

    id: str
    timestamp: float
    image: np.ndarray
    source: str = ""


@dataclass(frozen=True)
class Box:
    """Axis-aligned rectangle in frame pixels: left, top, width, height."""

    x: int
    y: int
    w: int
    h: int

    def as_list(self) -> list[int]:
        return [self.x, self.y, self.w, self.h]

    def cut(self, image: np.ndarray) -> np.ndarray:
        """A view (no copy) of this box inside ``image``."""
        return image[self.y:self.y + self.h, self.x:self.x + self.w]


@dataclass(frozen=True)
class Crop:
    """A named region of a frame, as cut by the layout."""

    name: str
    box: Box
    pixels: np.ndarray


@dataclass(frozen=True)
class Decision:
    """The decided state of one crop of one frame."""

    crop: str
    box: Box
    score: float
    state: str  # "ok" | "anomaly"
    previous_state: str
    threshold_high: float | None
    threshold_low: float | None
    threshold_source: str  # "bundle" | "config"
    score_z: float | None

    @property
    def changed(self) -> bool:
        return self.state != self.previous_state


@dataclass
class Event:
    """An anomaly message, decided on the device and owed to every subscriber.

    ``event_id`` is assigned once when the event is decided and never changes, so a subscriber can
    drop duplicates of an at-least-once delivery. ``seq`` increases by one per device across
    restarts (the spool keeps the counter).
    """

    event_id: str
    seq: int
    device_id: str
    frame_id: str
    timestamp: float
    crop: str
    box: list[int]
    score: float
    state: str
    previous_state: str
    threshold: dict[str, Any]
    score_z: float | None
    bundle: dict[str, str]
    extra: dict[str, Any] = field(default_factory=dict)

    def to_payload(self) -> dict[str, Any]:
        """The JSON object published on ``<prefix>/<device>/events`` (docs/mqtt.md)."""
        payload: dict[str, Any] = {
            "schema": EVENT_SCHEMA,
            "event_id": self.event_id,
            "seq": self.seq,
            "device_id": self.device_id,
            "frame_id": self.frame_id,
            "timestamp": utc_iso(self.timestamp),
            "crop": self.crop,
            "box": list(self.box),
            "score": self.score,
            "threshold": dict(self.threshold),
            "score_z": self.score_z,
            "state": self.state,
            "previous_state": self.previous_state,
            "bundle": dict(self.bundle),
        }
        payload.update(self.extra)
        return payload

    def encoded(self) -> bytes:
        """:meth:`to_payload` as published; raises one of :data:`UNENCODABLE` for an event that
        cannot be (NaN, a timestamp out of range, a value JSON cannot hold)."""
        return encode_json(self.to_payload())
