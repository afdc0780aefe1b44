"""Durable store-and-forward of decided events: an SQLite spool in front of the MQTT client.

paho-mqtt keeps unacknowledged QoS 1 messages only in memory, so an event decided on the device is
first committed here and leaves only when the broker has acknowledged it (PUBACK). The spool also
owns the per-device sequence number: it continues across restarts, even after every event has been
acknowledged and deleted (SQLite's AUTOINCREMENT never reuses a rowid, it remembers the highest
one ever handed out in ``sqlite_sequence``).

One connection is shared by the threads of one publisher and guarded by a lock; SQLite's own
locking covers a second process opening the same file.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from edge.errors import PublishError
from edge.publish.settings import SpoolConfig
from edge.types import Event

log = logging.getLogger(__name__)

# How long a writer waits for another process holding the database lock before giving up.
BUSY_TIMEOUT_S = 5.0

# Event fields the spool assigns itself; the caller passes every other field of edge.types.Event.
ASSIGNED_FIELDS = frozenset({"event_id", "seq"})
EVENT_FIELDS = frozenset(f.name for f in fields(Event))

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    created_at REAL NOT NULL,
    payload TEXT NOT NULL
);
-- max_age_s is applied at every append; without an index that is a full scan of the spool.
CREATE INDEX IF NOT EXISTS events_created_at ON events(created_at);
CREATE TABLE IF NOT EXISTS rejected (
    id INTEGER PRIMARY KEY,
    created_at REAL NOT NULL,
    reason TEXT NOT NULL,
    payload TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


# dropped_total: ever dropped by the limits. unreported_*: drops not yet announced on MQTT
# (kept on disk so that a restart before the next connection does not swallow the warning).
_COUNTERS = ("dropped_total", "unreported_count", "unreported_first", "unreported_last")


@dataclass(frozen=True)
class DropReport:
    """Events the spool discarded to stay inside its limits (oldest first, never silently)."""

    count: int
    first_seq: int
    last_seq: int
    reason: str  # "max_events" | "max_age_s" | "limits" (a sum of several drops)


class Spool:
    """SQLite spool of events awaiting a PUBACK. Thread-safe; each write commits before return."""

    def __init__(self, path: Path, config: SpoolConfig) -> None:
        self.path = Path(path)
        self.config = config
        self._lock = threading.Lock()
        self._conn = self._open()

    def _fail(self, action: str, err: Exception) -> PublishError:
        return PublishError(
            f"event spool {action} failed at '{self.path}': {err}. "
            "Check that the directory exists, is writable by this process and that the disk is "
            "not full; set [mqtt.spool] path to a persistent, writable location."
        )

    def _open(self) -> sqlite3.Connection:
        blocker = next((p for p in self.path.parents if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            raise PublishError(
                f"event spool path '{self.path}' cannot be created: '{blocker}' is a file, not a "
                "directory. Set [mqtt.spool] path to a file in a persistent, writable directory."
            )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                str(self.path), timeout=BUSY_TIMEOUT_S, check_same_thread=False,
                isolation_level=None,  # explicit BEGIN/COMMIT: we decide when a write is durable
            )
            conn.execute("PRAGMA journal_mode=WAL")
            # FULL, not NORMAL: in WAL mode NORMAL skips the fsync at each commit, so a power cut
            # (real on a line device) can roll back events we already told the runtime were
            # stored. Events are rare (state changes), so one fsync per event is affordable.
            conn.execute("PRAGMA synchronous=FULL")
            conn.executescript(_SCHEMA)
            # A read-only file opens fine; only a write reveals it. Probe now, not at the first
            # anomaly.
            conn.execute("BEGIN IMMEDIATE")
            for name in _COUNTERS:
                conn.execute("INSERT OR IGNORE INTO counters(name, value) VALUES (?, 0)", (name,))
            conn.execute("COMMIT")
        except (sqlite3.Error, OSError) as err:
            raise self._fail("open", err) from err
        return conn

    def close(self) -> None:
        """Close the database; further calls raise PublishError."""
        with self._lock:
            self._conn.close()

    def append(self, event_fields: dict[str, Any]) -> Event:
        """Store one event durably (committed, fsynced) and return it with its event_id and seq.

        The limits are not applied here; call :meth:`enforce_limits` after it and report drops.
        """
        unknown = set(event_fields) - (EVENT_FIELDS - ASSIGNED_FIELDS)
        missing = EVENT_FIELDS - ASSIGNED_FIELDS - {"extra"} - set(event_fields)
        if unknown or missing:
            raise TypeError(
                f"event fields do not match edge.types.Event: unknown {sorted(unknown)}, "
                f"missing {sorted(missing)} (event_id and seq are assigned by the spool)"
            )
        event_id = str(uuid.uuid4())
        body = json.dumps(event_fields, allow_nan=False)
        now = time.time()
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                cursor = self._conn.execute(
                    "INSERT INTO events(event_id, created_at, payload) VALUES (?, ?, ?)",
                    (event_id, now, body),
                )
                seq = int(cursor.lastrowid or 0)
                self._conn.execute("COMMIT")
            except sqlite3.Error as err:
                self._rollback_locked()
                raise self._fail("write", err) from err
        return Event(event_id=event_id, seq=seq, **event_fields)

    def reject(self, event_fields: dict[str, Any], reason: str) -> None:
        """Keep an event that cannot be published (e.g. too large) for inspection; never sent."""
        body = json.dumps(event_fields, allow_nan=False, default=str)
        with self._lock:
            try:
                self._conn.execute(
                    "INSERT INTO rejected(created_at, reason, payload) VALUES (?, ?, ?)",
                    (time.time(), reason, body),
                )
            except sqlite3.Error as err:
                raise self._fail("write", err) from err

    def enforce_limits(self) -> DropReport | None:
        """Drop the oldest events beyond ``max_events`` or older than ``max_age_s``.

        Returns what was dropped (None if nothing) so that the caller can publish a warning.
        """
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                drop = self._enforce_limits_locked(time.time())
                self._conn.execute("COMMIT")
            except sqlite3.Error as err:
                self._rollback_locked()
                raise self._fail("write", err) from err
        if drop is not None:
            log.warning(
                "event spool full (%s): dropped %d oldest events, seq %d..%d",
                drop.reason, drop.count, drop.first_seq, drop.last_seq,
            )
        return drop

    def _rollback_locked(self) -> None:
        try:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        except sqlite3.Error:
            log.debug("rollback after a failed spool write failed too", exc_info=True)

    def _enforce_limits_locked(self, now: float) -> DropReport | None:
        """Delete the oldest events beyond max_events or older than max_age_s (inside a txn)."""
        conn = self._conn
        reason = "max_age_s"
        row = conn.execute(
            "SELECT COUNT(*), MIN(seq), MAX(seq) FROM events WHERE created_at < ?",
            (now - self.config.max_age_s,),
        ).fetchone()
        cutoff_seq = row[2] if row[0] else None
        depth = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        excess = depth - self.config.max_events
        if excess > 0:
            row_n = conn.execute(
                "SELECT seq FROM events ORDER BY seq LIMIT 1 OFFSET ?", (excess - 1,)
            ).fetchone()
            if cutoff_seq is None or row_n[0] > cutoff_seq:
                cutoff_seq, reason = row_n[0], "max_events"
        if cutoff_seq is None:
            return None
        first, count = conn.execute(
            "SELECT MIN(seq), COUNT(*) FROM events WHERE seq <= ?", (cutoff_seq,)
        ).fetchone()
        conn.execute("DELETE FROM events WHERE seq <= ?", (cutoff_seq,))
        conn.execute(
            "UPDATE counters SET value = value + ? WHERE name = 'dropped_total'", (count,)
        )
        unreported = self._counters_locked()
        if unreported["unreported_count"] == 0:
            self._set_counter_locked("unreported_first", int(first))
        self._set_counter_locked("unreported_count", unreported["unreported_count"] + int(count))
        self._set_counter_locked("unreported_last", int(cutoff_seq))
        return DropReport(count=int(count), first_seq=int(first), last_seq=int(cutoff_seq),
                          reason=reason)

    def pending(self, after_seq: int = 0, limit: int = 100) -> list[Event]:
        """Events not yet acknowledged with seq > after_seq, in seq order."""
        with self._lock:
            try:
                rows = self._conn.execute(
                    "SELECT seq, event_id, payload FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                    (after_seq, limit),
                ).fetchall()
            except sqlite3.Error as err:
                raise self._fail("read", err) from err
        return [Event(event_id=eid, seq=seq, **json.loads(body)) for seq, eid, body in rows]

    def ack(self, seq: int) -> None:
        """Delete an event the broker acknowledged. Unknown seqs (already acked) are ignored."""
        with self._lock:
            try:
                self._conn.execute("DELETE FROM events WHERE seq = ?", (seq,))
            except sqlite3.Error as err:
                raise self._fail("delete", err) from err

    def depth(self) -> int:
        """Number of events waiting for a PUBACK."""
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def oldest_age_s(self) -> float:
        """Age in seconds of the oldest waiting event; 0.0 when the spool is empty."""
        with self._lock:
            oldest = self._conn.execute("SELECT MIN(created_at) FROM events").fetchone()[0]
        return 0.0 if oldest is None else max(0.0, time.time() - float(oldest))

    def _counters_locked(self) -> dict[str, int]:
        return {name: int(value) for name, value in
                self._conn.execute("SELECT name, value FROM counters").fetchall()}

    def _set_counter_locked(self, name: str, value: int) -> None:
        self._conn.execute("UPDATE counters SET value = ? WHERE name = ?", (value, name))

    def unreported_drops(self) -> DropReport | None:
        """Drops not yet announced (summed since the last :meth:`mark_reported`), or None."""
        with self._lock:
            counters = self._counters_locked()
        if counters["unreported_count"] == 0:
            return None
        return DropReport(count=counters["unreported_count"],
                          first_seq=counters["unreported_first"],
                          last_seq=counters["unreported_last"], reason="limits")

    def mark_reported(self, report: DropReport) -> None:
        """Forget drops that were announced (later drops stay unreported)."""
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                left = self._counters_locked()["unreported_count"] - report.count
                self._set_counter_locked("unreported_count", max(0, left))
                if left > 0:
                    self._set_counter_locked("unreported_first", report.last_seq + 1)
                self._conn.execute("COMMIT")
            except sqlite3.Error as err:
                self._rollback_locked()
                raise self._fail("write", err) from err

    def dropped_total(self) -> int:
        """Events ever dropped by the limits of this spool file (persists across restarts)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT value FROM counters WHERE name = 'dropped_total'"
            ).fetchone()
        return int(row[0]) if row else 0


def event_fields_of(event: Event) -> dict[str, Any]:
    """The fields of an event minus those the spool assigns (useful to re-submit or compare)."""
    return {k: v for k, v in asdict(event).items() if k not in ASSIGNED_FIELDS}
