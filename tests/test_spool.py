"""The SQLite event spool on its own: durability of seq, order, limits, clear errors."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import pytest
from broker import event_fields
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.errors import PublishError
from edge.publish.settings import SpoolConfig
from edge.publish.spool import DROP_LIMITS, DROP_UNREADABLE, Spool

pytestmark = pytest.mark.timeout(30)

MIN_MAX_EVENTS = 100  # the smallest max_events SpoolConfig accepts


def test_seq_continues_across_restarts_even_when_empty(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    spool = Spool(path, SpoolConfig(path=path))
    first = [spool.append(event_fields(i)) for i in range(3)]
    assert [e.seq for e in first] == [1, 2, 3]
    assert len({e.event_id for e in first}) == 3
    for event in first:
        spool.ack(event.seq)
    assert spool.depth() == 0
    spool.close()

    reopened = Spool(path, SpoolConfig(path=path))
    assert reopened.append(event_fields(3)).seq == 4
    reopened.close()


def test_pending_is_in_seq_order_and_round_trips_fields(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", SpoolConfig())
    stored = [spool.append(event_fields(i, extra={"note": f"n{i}"})) for i in range(10)]
    spool.ack(3)
    pending = spool.pending(after_seq=0, limit=100)
    assert [e.seq for e in pending] == [1, 2, 4, 5, 6, 7, 8, 9, 10]
    assert pending[0] == stored[0]
    assert [e.seq for e in spool.pending(after_seq=5, limit=2)] == [6, 7]
    assert spool.depth() == 9
    assert spool.oldest_age_s() >= 0.0
    spool.close()


def test_max_events_drops_oldest_and_reports_it(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", SpoolConfig(max_events=MIN_MAX_EVENTS))
    for i in range(MIN_MAX_EVENTS + 5):
        spool.append(event_fields(i))
    drop = spool.enforce_limits()
    assert drop is not None
    assert (drop.count, drop.first_seq, drop.last_seq, drop.reason) == (5, 1, 5, "max_events")
    assert spool.depth() == MIN_MAX_EVENTS
    assert spool.pending(0, 1)[0].seq == 6
    assert spool.dropped_total() == 5
    assert spool.enforce_limits() is None
    spool.close()


def test_max_age_drops_old_events(tmp_path: Path) -> None:
    max_age_s = 0.3
    spool = Spool(tmp_path / "s.db", SpoolConfig(max_age_s=max_age_s))
    spool.append(event_fields(0))
    time.sleep(max_age_s + 0.1)
    spool.append(event_fields(1))
    drop = spool.enforce_limits()
    assert drop is not None and drop.count == 1 and drop.reason == "max_age_s"
    assert [e.seq for e in spool.pending()] == [2]
    spool.close()


def test_a_drop_warning_never_claims_delivered_events_were_dropped(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", SpoolConfig(max_events=MIN_MAX_EVENTS))
    spool.append_many([event_fields(i) for i in range(MIN_MAX_EVENTS + 5)])
    assert spool.enforce_limits() is not None  # seq 1..5 dropped
    in_flight = spool.unreported_drops()  # the warning for 1..5 goes out
    spool.ack_many(list(range(6, 51)))  # meanwhile 6..50 are delivered
    spool.append_many([event_fields(i) for i in range(55)])
    assert spool.enforce_limits() is not None  # 51..60 dropped
    assert in_flight is not None
    spool.mark_reported(in_flight)  # PUBACK of the first warning
    later = spool.unreported_drops()
    assert later is not None
    # Before the fix: seq 6..60, count 10 — 45 delivered events claimed as dropped.
    assert (later.first_seq, later.last_seq, later.count) == (51, 60, 10)
    spool.mark_reported(later)
    assert spool.unreported_drops() is None
    spool.append_many([event_fields(i) for i in range(3)])
    spool.enforce_limits()  # 61..63, then (contiguous) 64..65: announced as one range
    spool.append_many([event_fields(i) for i in range(2)])
    spool.enforce_limits()
    merged = spool.unreported_drops()
    assert merged is not None and (merged.first_seq, merged.last_seq, merged.count) == (61, 65, 5)
    spool.close()


def test_an_old_spool_keeps_its_unannounced_drop(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    Spool(path, SpoolConfig()).close()
    conn = sqlite3.connect(path)  # the counters an older release kept the drop in
    conn.executemany("INSERT INTO counters(name, value) VALUES (?, ?)",
                     [("unreported_count", 7), ("unreported_first", 1), ("unreported_last", 7)])
    conn.commit()
    conn.close()
    spool = Spool(path, SpoolConfig())
    drop = spool.unreported_drops()
    assert drop is not None and (drop.count, drop.first_seq, drop.last_seq) == (7, 1, 7)
    spool.close()


def test_a_spool_from_before_unreadable_rows_were_announced_gets_the_reason_column(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    Spool(path, SpoolConfig()).close()
    conn = sqlite3.connect(path)  # the drops table of the release before this one
    conn.executescript("""
        DROP TABLE drops;
        CREATE TABLE drops (id INTEGER PRIMARY KEY, first_seq INTEGER NOT NULL,
                            last_seq INTEGER NOT NULL, count INTEGER NOT NULL);
        INSERT INTO drops(first_seq, last_seq, count) VALUES (1, 4, 4);
    """)
    conn.close()
    spool = Spool(path, SpoolConfig())
    drop = spool.unreported_drops()
    assert drop is not None and (drop.count, drop.first_seq, drop.last_seq) == (4, 1, 4)
    assert drop.reason == DROP_LIMITS
    spool.close()


def test_a_second_opener_of_the_same_spool_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    spool = Spool(path, SpoolConfig())
    with pytest.raises(PublishError) as info:
        Spool(path, SpoolConfig())
    message = str(info.value)
    assert str(path) in message and f"PID {os.getpid()}" in message
    assert str(path) + ".lock" in message and "Stop the other process" in message
    spool.close()
    Spool(path, SpoolConfig()).close()  # free again once closed


def test_unwritable_path_is_a_clear_publish_error(tmp_path: Path) -> None:
    # Tests run as root, so a chmod-ed directory would still be writable. A path *under a
    # regular file* fails for root too.
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(PublishError) as info:
        Spool(blocker / "spool.db", SpoolConfig())
    message = str(info.value)
    assert str(blocker / "spool.db") in message
    assert "not a directory" in message


def test_disk_full_is_a_clear_publish_error_and_the_spool_keeps_working(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", SpoolConfig())
    spool.append(event_fields(0))
    # SQLite's page cap gives the very error a full disk gives (SQLITE_FULL), as root too.
    pages = spool._conn.execute("PRAGMA page_count").fetchone()[0]
    spool._conn.execute(f"PRAGMA max_page_count={pages}")
    with pytest.raises(PublishError, match="disk is full"):
        for i in range(1, 200):
            spool.append(event_fields(i, extra={"pad": "x" * 2000}))
    spool._conn.execute("PRAGMA max_page_count=1073741823")
    assert spool.append(event_fields(999)).seq > 1
    assert spool.pending()[0].seq == 1
    spool.close()


def test_wrong_fields_are_rejected(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", SpoolConfig())
    with pytest.raises(TypeError, match="seq"):
        spool.append({**event_fields(0), "seq": 5})
    spool.close()


def test_wal_and_full_sync(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", SpoolConfig())
    spool.close()
    conn = sqlite3.connect(tmp_path / "s.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


SPOOL_OPS = st.lists(
    st.one_of(st.just(("append", 0)), st.tuples(st.just("ack"), st.integers(1, 40)),
              st.just(("reopen", 0))),
    max_size=40,
)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=SPOOL_OPS)
def test_any_mix_of_appends_acks_and_restarts_keeps_order(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, int]],
) -> None:
    path = tmp_path_factory.mktemp("spool") / "s.db"
    spool = Spool(path, SpoolConfig())
    model: list[int] = []  # seqs we expect to be pending
    last_seq = 0
    for op, arg in ops:
        if op == "append":
            seq = spool.append(event_fields(last_seq)).seq
            assert seq > last_seq  # never reused, even after acks and restarts
            last_seq = seq
            model.append(seq)
        elif op == "ack":
            spool.ack(arg)
            model = [s for s in model if s != arg]
        else:
            spool.close()
            spool = Spool(path, SpoolConfig())
        assert [e.seq for e in spool.pending(0, 1000)] == model
        assert spool.depth() == len(model)
    spool.close()


def test_an_unreadable_row_is_set_aside_and_the_events_after_it_still_go_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    spool = Spool(tmp_path / "spool.db", SpoolConfig())
    first = spool.append(event_fields(0))
    # A row another build wrote (no score_z), and a damaged one: neither can become an Event.
    legacy = {k: v for k, v in event_fields(1).items() if k != "score_z"}
    with sqlite3.connect(spool.path) as conn:
        for body in (json.dumps(legacy), "{not json"):
            conn.execute("INSERT INTO events(event_id, created_at, payload) VALUES (?, ?, ?)",
                         (f"bad-{len(body)}", time.time(), body))
    last = spool.append(event_fields(2))
    pending = spool.pending_rows(limit=3)
    # Three rows read, one event: the sender must not take this for "nothing more to send".
    assert [e.seq for e in pending.events] == [first.seq] and pending.rows == 3
    assert pending.last_seq == 3 and pending.bodies == [pending.events[0].encoded()]
    assert [e.seq for e in spool.pending()] == [first.seq, last.seq]
    assert spool.depth() == 2  # the two rows left the events table ...
    with sqlite3.connect(spool.path) as conn:  # ... for the rejected one, with the reason
        reasons = [r for (r,) in conn.execute("SELECT reason FROM rejected ORDER BY id")]
    assert len(reasons) == 2 and "seq 2 could not be read" in reasons[0]
    assert "score_z" in reasons[0] and "seq 3" in reasons[1]
    assert "moved to the 'rejected' table" in caplog.text and str(spool.path) in caplog.text
    # The gap they leave (seq 2..3) waits to be announced, apart from a drop by the limits
    # that touches it (seq 1), so that each warning names its own cause.
    gap = spool.unreported_drops()
    assert gap is not None and (gap.first_seq, gap.last_seq, gap.count) == (2, 3, 2)
    assert gap.reason == DROP_UNREADABLE
    with sqlite3.connect(spool.path) as conn:  # seq 1 gets older than max_age_s
        conn.execute("UPDATE events SET created_at = ? WHERE seq = ?",
                     (time.time() - 2 * spool.config.max_age_s, first.seq))
    assert spool.enforce_limits() is not None  # drops seq 1, keeps seq 4
    aged = spool.unreported_drops()
    assert aged is not None and (aged.first_seq, aged.last_seq, aged.reason) == (
        1, 1, DROP_LIMITS)
    spool.mark_reported(aged)
    assert spool.unreported_drops() == gap
    spool.close()


@pytest.mark.parametrize(("field", "value"), [
    ("score", "NaN"), ("timestamp", '"2026-01-01T00:00:00Z"'), ("timestamp", "1e300")])
def test_a_row_that_reads_but_cannot_be_encoded_is_set_aside_too(
        tmp_path: Path, field: str, value: str) -> None:
    # Python's JSON reader takes NaN and the Event takes any timestamp: such a row used to fail
    # at send time, on every pass, holding back every event after it.
    spool = Spool(tmp_path / "spool.db", SpoolConfig())
    bad = spool.append(event_fields(0))
    later = spool.append(event_fields(1))
    body = json.loads(spool._conn.execute("SELECT payload FROM events WHERE seq = ?",
                                          (bad.seq,)).fetchone()[0])
    body[field] = "@"
    spool._conn.execute("UPDATE events SET payload = ? WHERE seq = ?",
                        (json.dumps(body).replace('"@"', value), bad.seq))
    pending = spool.pending_rows()
    assert [e.seq for e in pending.events] == [later.seq] and pending.rows == 2
    assert json.loads(pending.bodies[0])["seq"] == later.seq
    reasons = [r for (r,) in spool._conn.execute("SELECT reason FROM rejected")]
    assert len(reasons) == 1 and f"seq {bad.seq} could not be read" in reasons[0]
    spool.close()


def test_a_damaged_spool_file_says_so_and_how_to_recover(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    path.write_bytes(b"this is not a database, it was overwritten " * 200)
    with pytest.raises(PublishError, match=r"The file is damaged .*\.recover") as caught:
        Spool(path, SpoolConfig())
    assert "disk is not full" not in str(caught.value)


def test_a_limits_drop_over_a_set_aside_seq_does_not_swallow_its_warning(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", SpoolConfig())
    spool.append(event_fields(0))  # seq 1
    spool._conn.execute("INSERT INTO events(event_id, created_at, payload) VALUES ('bad', ?, '{')",
                        (time.time(),))  # seq 2, unreadable
    spool.append_many([event_fields(2), event_fields(3)])  # seq 3, 4
    assert [e.seq for e in spool.pending()] == [1, 3, 4]  # seq 2 is set aside
    spool._conn.execute("UPDATE events SET created_at = ?",
                        (time.time() - 2 * spool.config.max_age_s,))
    assert spool.enforce_limits() is not None  # deletes every event up to seq 4: 1, 3 and 4
    limits = spool.unreported_drops()
    assert limits is not None and (limits.first_seq, limits.last_seq, limits.count) == (1, 4, 3)
    assert limits.reason == DROP_LIMITS
    spool.mark_reported(limits)
    unreadable = spool.unreported_drops()  # still owed, though inside the range just announced
    assert unreadable is not None and (unreadable.first_seq, unreadable.last_seq) == (2, 2)
    assert unreadable.reason == DROP_UNREADABLE
    spool.mark_reported(unreadable)
    assert spool.unreported_drops() is None
    spool.close()


def test_an_unreadable_row_that_cannot_be_set_aside_does_not_hold_back_the_others(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    spool = Spool(tmp_path / "spool.db", SpoolConfig())
    with sqlite3.connect(spool.path) as conn:
        conn.execute("INSERT INTO events(event_id, created_at, payload) VALUES ('bad', ?, '{')",
                     (time.time(),))
    later = spool.append(event_fields(1))
    spool._conn.execute("ALTER TABLE rejected RENAME TO rejected_gone")  # a failing disk
    for _ in range(2):
        assert [e.seq for e in spool.pending()] == [later.seq]
    assert caplog.text.count("could not be set aside") == 1  # said once, not at every pass
    spool.close()
