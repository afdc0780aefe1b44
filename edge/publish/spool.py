"""Durable store-and-forward of decided events: an SQLite spool in front of the MQTT client.

paho-mqtt keeps unacknowledged QoS 1 messages only in memory, so an event decided on the device is
first committed here and leaves only when the broker has acknowledged it (PUBACK). The spool also
owns the per-device sequence number: it continues across restarts, even after every event has been
acknowledged and deleted (SQLite's AUTOINCREMENT never reuses a rowid, it remembers the highest
one ever handed out in ``sqlite_sequence``).

One connection is shared by the threads of one publisher and guarded by a lock. The file itself
(format, migrations, durable opening, one process per spool) is :mod:`edge.publish.spoolfile`.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from edge.errors import PublishError
from edge.publish.settings import SpoolConfig
from edge.publish.spoolfile import (
    DROP_LIMITS,
    DROP_UNREADABLE,
    SpoolFile,
    spool_error,
)
from edge.types import UNENCODABLE, Event

log = logging.getLogger(__name__)

# Event fields the spool assigns itself; the caller passes every other field of edge.types.Event.
ASSIGNED_FIELDS = frozenset({"event_id", "seq"})
EVENT_FIELDS = frozenset(f.name for f in fields(Event))

@dataclass(frozen=True)
class Pending:
    """One read of unacknowledged events (:meth:`Spool.pending_rows`)."""

    events: list[Event]  # readable, encodable ones, in seq order
    bodies: list[bytes]  # each event's payload as published
    rows: int  # rows read, set-aside ones included: rows < limit means the spool ran out
    last_seq: int  # the last seq read (after_seq when none): the next read starts after it


@dataclass(frozen=True)
class DropReport:
    """Events the spool discarded to stay inside its limits (oldest first, never silently)."""

    count: int
    first_seq: int
    last_seq: int
    # From enforce_limits: "max_events" | "max_age_s". From unreported_drops: DROP_LIMITS (a sum
    # of limit drops) or DROP_UNREADABLE (rows set aside because they could not be read).
    reason: str


class Spool:
    """SQLite spool of events awaiting a PUBACK. Thread-safe; each write commits before return."""

    def __init__(self, path: Path, config: SpoolConfig) -> None:
        self.config = config
        self._file = SpoolFile(path)  # PublishError when it cannot be opened or is in use
        self.path, self.lock_path = self._file.path, self._file.lock_path
        self._conn = self._file.conn
        self._lock = threading.Lock()
        self._unreadable_kept: set[int] = set()  # unreadable rows that could not be set aside

    def _fail(self, action: str, err: Exception) -> PublishError:
        return spool_error(self.path, action, err)

    def close(self) -> None:
        """Close the database and release the process lock; further calls raise PublishError."""
        with self._lock:
            self._file.close()

    def append(self, event_fields: dict[str, Any]) -> Event:
        """Store one event durably (committed, fsynced) and return it with its event_id and seq.

        The limits are not applied here; call :meth:`enforce_limits` after it and report drops.
        """
        return self.append_many([event_fields])[0]

    def append_many(self, batch: Sequence[dict[str, Any]]) -> list[Event]:
        """Store several events in ONE transaction (one fsync); all are stored or none.

        A frame's events go in together: with ``synchronous=FULL`` the commit's fsync is the cost,
        not the rows, so a frame with several events pays it once. Returns the events with their
        event_id and seq, in the order given. Limits are applied by :meth:`enforce_limits`.
        """
        for event_fields in batch:
            _check_fields(event_fields)
        rows = [(str(uuid.uuid4()), json.dumps(f, allow_nan=False)) for f in batch]
        if not rows:
            return []
        now = time.time()
        seqs: list[int] = []
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                for event_id, body in rows:
                    cursor = self._conn.execute(
                        "INSERT INTO events(event_id, created_at, payload) VALUES (?, ?, ?)",
                        (event_id, now, body),
                    )
                    seqs.append(int(cursor.lastrowid or 0))
                self._conn.execute("COMMIT")
            except sqlite3.Error as err:
                self._rollback_locked()
                raise self._fail("write", err) from err
        return [Event(event_id=event_id, seq=seq, **event_fields)
                for (event_id, _), seq, event_fields in zip(rows, seqs, batch, strict=True)]

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

    def _restore_full_sync_locked(self) -> None:
        # Every other write (events, drop counters) must stay fsynced; if that cannot be
        # restored the spool is unusable, and saying so beats silently weaker durability.
        try:
            self._conn.execute("PRAGMA synchronous=FULL")
        except sqlite3.Error as err:
            raise self._fail("write", err) from err

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
        conn.execute("INSERT INTO drops(first_seq, last_seq, count, reason) VALUES (?, ?, ?, ?)",
                     (int(first), int(cutoff_seq), int(count), DROP_LIMITS))
        return DropReport(count=int(count), first_seq=int(first), last_seq=int(cutoff_seq),
                          reason=reason)

    def pending(self, after_seq: int = 0, limit: int = 100) -> list[Event]:
        """Events not yet acknowledged with seq > after_seq, in seq order."""
        return self.pending_rows(after_seq, limit).events

    def pending_rows(self, after_seq: int = 0, limit: int = 100) -> Pending:
        """:meth:`pending` with each event's payload as published, how many rows were read and
        the last seq read. A row that cannot be read or encoded is set aside (see
        :meth:`_set_aside`): fewer events than rows does not mean that the spool ran out."""
        with self._lock:
            try:
                rows = self._conn.execute(
                    "SELECT seq, event_id, payload FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                    (after_seq, limit),
                ).fetchall()
            except sqlite3.Error as err:
                raise self._fail("read", err) from err
        events: list[Event] = []
        bodies: list[bytes] = []
        unreadable = []
        for seq, eid, body in rows:
            try:
                event = Event(event_id=eid, seq=seq, **json.loads(body))
                # Encoded here, not at send time: a row that cannot be (NaN, a timestamp out of
                # range) must be set aside like a damaged one, not fail every send after it.
                encoded = event.encoded()
            except UNENCODABLE as exc:  # damaged, or written by another version
                unreadable.append((seq, body, exc))
            else:
                events.append(event)
                bodies.append(encoded)
        for seq, body, problem in unreadable:
            try:
                self._set_aside(seq, body, problem)
            except PublishError as err:  # a failing disk: still send the readable ones
                if seq not in self._unreadable_kept:
                    self._unreadable_kept.add(seq)
                    log.error("spool row seq %d cannot be read (%s) and could not be set aside "
                              "(%s); it is skipped and the events after it are sent", seq,
                              problem, err)
        last_seq = int(rows[-1][0]) if rows else after_seq
        return Pending(events, bodies, len(rows), last_seq)

    def _set_aside(self, seq: int, body: str, err: Exception) -> None:
        """Move an event row that cannot be read into ``rejected`` so that it does not block
        every later event; logged with its seq (a gap subscribers will see)."""
        reason = f"spool row seq {seq} could not be read as an event: {err}"
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.execute(
                    "INSERT INTO rejected(created_at, reason, payload) VALUES (?, ?, ?)",
                    (time.time(), reason, body))
                self._conn.execute("DELETE FROM events WHERE seq = ?", (seq,))
                # The gap it leaves is announced on …/warnings like a drop by the limits.
                self._conn.execute(
                    "INSERT INTO drops(first_seq, last_seq, count, reason) VALUES (?, ?, 1, ?)",
                    (seq, seq, DROP_UNREADABLE))
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback_locked()
                raise self._fail("write", exc) from exc
        log.error("%s. It was moved to the 'rejected' table of %s and is not sent (the gap is "
                  "announced on …/warnings); the events after it are. Inspect it with: "
                  "sqlite3 %s 'SELECT * FROM rejected'",
                  reason, self.path, self.path)

    def ack(self, seq: int) -> None:
        """Delete an event the broker acknowledged. Unknown seqs (already acked) are ignored."""
        self.ack_many([seq])

    def ack_many(self, seqs: Sequence[int]) -> None:
        """Delete several acknowledged events in one transaction (one fsync, not one each).

        The sender calls this once per batch of PUBACKs it drained. The commit is not fsynced
        (``synchronous=NORMAL`` for this transaction only): a power cut can undo an ack, which
        re-sends an event the broker already has — a duplicate, as at-least-once allows — while
        the next event commit (FULL) flushes it anyway. Events themselves are always fsynced.
        """
        if not seqs:
            return
        with self._lock:
            try:
                self._conn.execute("PRAGMA synchronous=NORMAL")
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.executemany("DELETE FROM events WHERE seq = ?",
                                       [(int(seq),) for seq in seqs])
                self._conn.execute("COMMIT")
            except sqlite3.Error as err:
                self._rollback_locked()
                raise self._fail("delete", err) from err
            finally:
                self._restore_full_sync_locked()

    def _read(self, sql: str) -> Any:
        """First column of the first row of a read-only query; PublishError on SQLite errors."""
        with self._lock:
            try:
                row = self._conn.execute(sql).fetchone()
            except sqlite3.Error as err:
                raise self._fail("read", err) from err
        return None if row is None else row[0]

    def depth(self) -> int:
        """Number of events waiting for a PUBACK."""
        return int(self._read("SELECT COUNT(*) FROM events"))

    def oldest_age_s(self) -> float:
        """Age in seconds of the oldest waiting event; 0.0 when the spool is empty."""
        oldest = self._read("SELECT MIN(created_at) FROM events")
        return 0.0 if oldest is None else max(0.0, time.time() - float(oldest))

    def unreported_drops(self) -> DropReport | None:
        """The oldest drop not yet announced, or None.

        Drops of one reason whose seq ranges touch (one ends where the next begins) are merged
        into one report; a drop after events that were delivered, or of the other reason, is a
        report of its own, so that a warning never claims a delivered event was dropped and
        always gives the right cause.
        """
        with self._lock:
            try:
                rows = self._conn.execute(
                    "SELECT first_seq, last_seq, count, reason FROM drops ORDER BY first_seq"
                ).fetchall()
            except sqlite3.Error as err:
                raise self._fail("read", err) from err
        if not rows:
            return None
        first, last, count, reason = rows[0]
        for next_first, next_last, next_count, next_reason in rows[1:]:
            if next_first != last + 1 or next_reason != reason:
                break
            last, count = next_last, count + next_count
        return DropReport(count=int(count), first_seq=int(first), last_seq=int(last),
                          reason=str(reason))

    def mark_reported(self, report: DropReport) -> None:
        """Forget the drops a published warning covered (later drops stay unreported).

        Only drops of the report's own reason: a limits drop's range can span a seq set aside
        earlier (the limits delete every event up to a seq), and that row's own warning is
        still owed.
        """
        with self._lock:
            try:
                self._conn.execute(
                    "DELETE FROM drops WHERE first_seq >= ? AND last_seq <= ? AND reason = ?",
                    (report.first_seq, report.last_seq, report.reason))
            except sqlite3.Error as err:
                raise self._fail("write", err) from err

    def dropped_total(self) -> int:
        """Events ever dropped by the limits of this spool file (persists across restarts)."""
        value = self._read("SELECT value FROM counters WHERE name = 'dropped_total'")
        return 0 if value is None else int(value)


def _check_fields(event_fields: dict[str, Any]) -> None:
    unknown = set(event_fields) - (EVENT_FIELDS - ASSIGNED_FIELDS)
    missing = EVENT_FIELDS - ASSIGNED_FIELDS - {"extra"} - set(event_fields)
    if unknown or missing:
        raise TypeError(
            f"event fields do not match edge.types.Event: unknown {sorted(unknown)}, "
            f"missing {sorted(missing)} (event_id and seq are assigned by the spool)"
        )


def event_fields_of(event: Event) -> dict[str, Any]:
    """The fields of an event minus those the spool assigns (useful to re-submit or compare)."""
    return {k: v for k, v in asdict(event).items() if k not in ASSIGNED_FIELDS}
