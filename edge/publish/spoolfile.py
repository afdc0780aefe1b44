"""The spool's file: its SQLite format and migrations, how it is opened for durable writes, and
the lock that keeps it to one process. :mod:`edge.publish.spool` works on the connection this
opens.

One process owns a spool: an exclusive ``flock`` on ``<spool>.lock`` refuses a second publisher on
the same file (the same config started twice would share the client id and knock each other off
the broker). The lock dies with its process, so a crash leaves nothing to clean up.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import sqlite3
from pathlib import Path

from edge.errors import PublishError

log = logging.getLogger(__name__)

# How long a writer waits for another process holding the database lock before giving up.
BUSY_TIMEOUT_S = 5.0

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
-- Seq gaps not yet announced on MQTT, one row per drop (kept on disk so that a restart before
-- the next connection does not swallow the warning). Ranges, not one first..last pair: events
-- delivered between two drops must never be reported as dropped. reason: 'limits' (max_events /
-- max_age_s) or 'unreadable' (a row set aside into rejected). Spools made before the reason
-- column get it from _add_drop_reason.
CREATE TABLE IF NOT EXISTS drops (
    id INTEGER PRIMARY KEY,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    count INTEGER NOT NULL,
    reason TEXT NOT NULL DEFAULT 'limits'
);
"""


# dropped_total: ever dropped by the limits (persists across restarts).
COUNTERS = ("dropped_total",)
DROP_LIMITS = "limits"  # dropped by max_events / max_age_s
DROP_UNREADABLE = "unreadable"  # a stored row that could not be read, set aside into rejected
# SQLITE_CORRUPT, SQLITE_NOTADB: the file itself is damaged; no free space or permission helps.
DAMAGED_CODES = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
# Spools written before the drops table kept the unannounced drops in these counters.
_LEGACY_UNREPORTED = ("unreported_count", "unreported_first", "unreported_last")


def spool_error(path: Path, action: str, err: Exception) -> PublishError:
    """The PublishError for a failed spool ``action``, with the fix that fits the cause."""
    if getattr(err, "sqlite_errorcode", None) in DAMAGED_CODES:
        return PublishError(
            f"event spool {action} failed at '{path}': {err}. The file is damaged (not "
            "a disk-space or permission problem). Stop the edge service, move the file aside "
            f"(recover what it holds with: sqlite3 '{path}' .recover | sqlite3 "
            "recovered.db) and start again: a new spool is created. Its seq starts again at "
            "1, so subscribers that drop events by seq must reset (docs/mqtt.md)."
        )
    return PublishError(
        f"event spool {action} failed at '{path}': {err}. "
        "Check that the directory exists, is writable by this process and that the disk is "
        "not full; set [mqtt.spool] path to a persistent, writable location."
    )


class SpoolFile:
    """The open spool file of this process: ``conn`` (shared by the publisher's threads, who
    guard it with their own lock) and the process lock; :meth:`close` releases both."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._lock_fd: int | None = None
        self.conn = self._open()

    def close(self) -> None:
        try:
            self.conn.close()
        finally:
            self._release_process_lock()

    def _open(self) -> sqlite3.Connection:
        blocker = next((p for p in self.path.parents if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            raise PublishError(
                f"event spool path '{self.path}' cannot be created: '{blocker}' is a file, not a "
                "directory. Set [mqtt.spool] path to a file in a persistent, writable directory."
            )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise spool_error(self.path, "open", err) from err
        self._lock_fd = self._take_process_lock()
        try:
            conn = sqlite3.connect(
                str(self.path), timeout=BUSY_TIMEOUT_S, check_same_thread=False,
                isolation_level=None,  # explicit BEGIN/COMMIT: we decide when a write is durable
            )
            conn.execute("PRAGMA journal_mode=WAL")
            # FULL, not NORMAL: in WAL mode NORMAL skips the fsync at each commit, so a power cut
            # (real on a line device) can roll back events we already told the runtime were
            # stored. A frame's events share one commit (append_many), acks one per batch.
            conn.execute("PRAGMA synchronous=FULL")
            conn.executescript(_SCHEMA)
            # A read-only file opens fine; only a write reveals it. Probe now, not at the first
            # anomaly.
            conn.execute("BEGIN IMMEDIATE")
            for name in COUNTERS:
                conn.execute("INSERT OR IGNORE INTO counters(name, value) VALUES (?, 0)", (name,))
            _add_drop_reason(conn)
            _migrate_unreported_counters(conn)
            conn.execute("COMMIT")
        except (sqlite3.Error, OSError) as err:
            self._release_process_lock()
            raise spool_error(self.path, "open", err) from err
        return conn

    def _take_process_lock(self) -> int:
        """Exclusive flock on ``<spool>.lock``; released by close() or by the process dying."""
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise spool_error(self.path, "lock", err) from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise spool_error(self.path, "lock", err) from err
            raise PublishError(
                f"event spool '{self.path}' is already in use by another process (PID {holder}, "
                f"holding '{self.lock_path}'). Two publishers on one spool would share its events "
                "and the MQTT client id and knock each other off the broker. Stop the other "
                "process, or give this device its own config ([mqtt.spool] path, device_id)."
            ) from err
        try:  # the PID only helps the message above; a full disk must not stop the spool here
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        except OSError:
            log.debug("could not write the PID into %s", self.lock_path, exc_info=True)
        return fd

    def _release_process_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None


def _add_drop_reason(conn: sqlite3.Connection) -> None:
    """Give a spool made before unreadable rows were announced its drops.reason column."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(drops)")}
    if "reason" not in columns:
        conn.execute(f"ALTER TABLE drops ADD COLUMN reason TEXT NOT NULL DEFAULT '{DROP_LIMITS}'")


def _migrate_unreported_counters(conn: sqlite3.Connection) -> None:
    """Move an unannounced drop kept by an older spool (counters) into the drops table."""
    placeholders = ",".join("?" * len(_LEGACY_UNREPORTED))
    legacy = dict(conn.execute(f"SELECT name, value FROM counters WHERE name IN ({placeholders})",
                               _LEGACY_UNREPORTED).fetchall())
    if legacy.get("unreported_count", 0) > 0:
        conn.execute("INSERT INTO drops(first_seq, last_seq, count) VALUES (?, ?, ?)",
                     (legacy["unreported_first"], legacy["unreported_last"],
                      legacy["unreported_count"]))
    if legacy:
        conn.execute(f"DELETE FROM counters WHERE name IN ({placeholders})", _LEGACY_UNREPORTED)
