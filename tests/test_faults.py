"""Fault injection with real processes: broker crash, publisher crash, unwritable / full spool.

Each test prints its figures (sent, received, duplicates, lost); run with ``-s`` to see them.
The promise checked: every stored event arrives, in seq order, duplicates only by event_id.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import IO, Any

import pytest
from broker import (
    Broker,
    BrokerOptions,
    DeliveryFigures,
    Subscriber,
    delivery_figures,
    event_fields,
)

from edge.errors import PublishError
from edge.publish.mqtt import MqttPublisher
from edge.publish.settings import MqttConfig, SpoolConfig

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(90)]

DEVICE = "dev1"
BUNDLE = {"name": "caps-v1", "sha256": "ab" * 32}
EVENTS_TOPIC = f"anomaly/{DEVICE}/events"
CHILD = Path(__file__).with_name("publisher_child.py")
DELIVERY_TIMEOUT_S = 30.0
BROKER_DOWN_S = 2.0
FROZEN_S = 0.5
SUBMIT_INTERVAL_S = 0.005


def _config(port: int, tmp_path: Path) -> MqttConfig:
    return MqttConfig(host="127.0.0.1", port=port, reconnect_min_s=0.2, reconnect_max_s=1.0,
                      keepalive_s=5, spool=SpoolConfig(path=tmp_path / "spool.db"))


def _events(sub: Subscriber) -> list[dict[str, Any]]:
    return [m.json() for m in sub.on_topic("/events")]


def _assert_complete(name: str, sent_seqs: list[int], sub: Subscriber) -> DeliveryFigures:
    wanted = set(sent_seqs)
    sub.wait_for(lambda ms: wanted <= {m.json()["seq"] for m in ms
                                       if m.topic.endswith("/events")}, DELIVERY_TIMEOUT_S)
    events = _events(sub)
    figures = delivery_figures(sent_seqs, events)
    print(figures.line(name))
    assert figures.lost == 0, figures
    assert figures.out_of_order == 0, figures
    unique_seqs = sorted({e["seq"] for e in events})
    assert unique_seqs == list(range(1, max(unique_seqs) + 1)), "gap in seq"
    ids_by_seq: dict[int, set[str]] = {}
    for event in events:
        ids_by_seq.setdefault(event["seq"], set()).add(event["event_id"])
    assert all(len(ids) == 1 for ids in ids_by_seq.values()), "a seq re-used with a new id"
    return figures


def test_broker_killed_mid_stream_and_restarted(
    mqtt_broker_factory: Callable[..., Broker], mqtt_subscriber_factory: Callable[..., Subscriber],
    tmp_path: Path,
) -> None:
    total, kill_after = 300, 100
    broker = mqtt_broker_factory(BrokerOptions(persistence=True))
    sub = mqtt_subscriber_factory(broker, [EVENTS_TOPIC], client_id="fault-sub-1")
    publisher = MqttPublisher(_config(broker.port, tmp_path), DEVICE, BUNDLE, tmp_path)
    publisher.start()
    sent: list[int] = []

    def produce() -> None:
        for i in range(total):
            sent.append(publisher.submit_event(**event_fields(i)).seq)
            time.sleep(SUBMIT_INTERVAL_S)

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        while len(sent) < kill_after:
            time.sleep(0.01)
        # Freeze first so that a full window of events is in flight, unacknowledged, when the
        # broker dies: the case where paho's in-memory re-send and the spool could disagree.
        broker.freeze()
        time.sleep(FROZEN_S)
        broker.kill()
        time.sleep(BROKER_DOWN_S)  # the producer keeps storing while the broker is away
        broker.start()
        producer.join()
        assert publisher.flush(DELIVERY_TIMEOUT_S), f"spool depth {publisher.spool_depth()}"
        figures = _assert_complete("broker SIGKILL", sent, sub)
        # paho's own re-send of the frozen window is dropped; only the spool re-sends it. Both
        # together would duplicate the whole window (max_inflight events).
        assert figures.duplicates < publisher.config.max_inflight, figures
    finally:
        producer.join()
        publisher.close()


def _spawn_child(port: int, spool: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CHILD), "--port", str(port), "--spool", str(spool),
         "--interval-s", str(SUBMIT_INTERVAL_S), *args],
        stdout=subprocess.PIPE, text=True)


def _stored_seqs(stream: IO[str], until: int | None = None) -> list[int]:
    """Read ``STORED <seq> <id>`` lines (stop after ``until`` of them, else at EOF)."""
    seqs: list[int] = []
    for line in stream:
        if line.startswith("STORED"):
            seqs.append(int(line.split()[1]))
            if until is not None and len(seqs) >= until:
                break
    return seqs


def test_publisher_killed_mid_stream_and_restarted_on_the_same_spool(
    mqtt_broker: Broker, mqtt_subscriber_factory: Callable[..., Subscriber], tmp_path: Path,
) -> None:
    first_count, kill_after, second_count = 400, 150, 100
    spool = tmp_path / "spool.db"
    sub = mqtt_subscriber_factory(mqtt_broker, [EVENTS_TOPIC], client_id="fault-sub-2")
    first = _spawn_child(mqtt_broker.port, spool, "--count", str(first_count))
    try:
        assert first.stdout is not None
        sent = _stored_seqs(first.stdout, until=kill_after)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        sent += _stored_seqs(first.stdout)  # lines printed just before the kill
    finally:
        first.kill()
        first.wait()
        if first.stdout:
            first.stdout.close()
    second = _spawn_child(mqtt_broker.port, spool, "--count", str(second_count),
                          "--first-index", str(first_count), "--flush-s", "20")
    try:
        out, _ = second.communicate(timeout=60)
    finally:
        second.kill()
    assert "FLUSHED True" in out
    resumed = [int(line.split()[1]) for line in out.splitlines() if line.startswith("STORED")]
    assert resumed[0] > max(sent), "the seq counter went back after the restart"
    _assert_complete("publisher SIGKILL", sent + resumed, sub)


def test_spool_under_a_file_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, so nothing can be created under it (even by root)")
    config = MqttConfig(spool=SpoolConfig(path=Path("blocker/spool.db")))
    with pytest.raises(PublishError) as info:
        MqttPublisher(config, DEVICE, BUNDLE, base_dir=tmp_path)
    message = str(info.value)
    print(f"[unwritable spool] {message}")
    assert str(blocker / "spool.db") in message and "not a directory" in message


def test_disk_full_is_a_clear_error_and_the_publisher_keeps_going(
    mqtt_broker: Broker, mqtt_subscriber_factory: Callable[..., Subscriber], tmp_path: Path,
) -> None:
    sub = mqtt_subscriber_factory(mqtt_broker, [EVENTS_TOPIC], client_id="fault-sub-4")
    publisher = MqttPublisher(_config(mqtt_broker.port, tmp_path), DEVICE, BUNDLE, tmp_path)
    publisher.start()
    try:
        sent = [publisher.submit_event(**event_fields(i)).seq for i in range(5)]
        # SQLite's page cap yields exactly the error of a full disk (SQLITE_FULL), even as root.
        conn = publisher.spool._conn
        conn.execute(f"PRAGMA max_page_count={conn.execute('PRAGMA page_count').fetchone()[0]}")
        failures = 0
        for i in range(5, 60):
            try:
                sent.append(publisher.submit_event(
                    **event_fields(i, extra={"pad": "x" * 4000})).seq)
            except PublishError as err:
                failures += 1
                assert "disk is full" in str(err) and str(publisher.spool.path) in str(err)
        assert failures > 0
        conn.execute("PRAGMA max_page_count=1073741823")  # space freed
        sent.append(publisher.submit_event(**event_fields(99)).seq)
        assert publisher.flush(DELIVERY_TIMEOUT_S)
        assert publisher.connection_state == "connected"
        print(f"[disk full] refused={failures}")
        _assert_complete("disk full", sent, sub)
    finally:
        publisher.close()


def test_the_runtime_on_a_full_spool_keeps_deciding_and_says_why(
    mqtt_broker: Broker, mqtt_subscriber_factory: Callable[..., Subscriber], tmp_path: Path,
    runtime_bundle: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """The whole runtime with the real publisher, spool and broker, on a disk that is full from
    the first event: every event is refused — counted, logged, degraded with the reason — the
    states still go out, and the run ends normally."""
    from runtime_support import config_text, write_frames

    from edge.config import load_config
    from edge.runtime import Runtime, mqtt_publisher

    write_frames(tmp_path / "frames", [((0, 0),), ((0, 1),), ()])  # 4 events: see test_runtime
    path = tmp_path / "device.toml"
    path.write_text(config_text(runtime_bundle, "frames", mqtt=f"port = {mqtt_broker.port}\n"
                                "stats_interval_s = 0.05"), encoding="utf-8")
    sub = mqtt_subscriber_factory(mqtt_broker, ["anomaly/line-1/#"], client_id="fault-sub-full")

    # Pages smaller than one event: every event needs a page of its own, so once no page is
    # left, none fits anywhere (with 4 KiB pages a few would still fit in the table's page).
    with sqlite3.connect(tmp_path / "spool.db") as conn:
        conn.execute("PRAGMA page_size = 512")
        conn.execute("CREATE TABLE filler(b BLOB)")

    def full_disk(*args: Any) -> Any:
        publisher = mqtt_publisher(*args)
        conn = publisher.spool._conn  # SQLITE_FULL from here on, as on a full disk ...
        conn.execute(f"PRAGMA max_page_count={conn.execute('PRAGMA page_count').fetchone()[0]}")
        for size in (512, 64, 8, 1):  # ... with no room left in the pages it has either
            with suppress(sqlite3.OperationalError):
                while True:
                    conn.execute("INSERT INTO filler VALUES (zeroblob(?))", (size,))
        return publisher

    runtime = Runtime(load_config(path), publisher_factory=full_disk)
    assert runtime.run() == 0
    assert sub.wait_for(lambda ms: any(m.topic.endswith("/status") and m.json()["status"]
                                       == "offline" for m in ms), DELIVERY_TIMEOUT_S)
    assert not sub.on_topic("/events")
    assert max(m.json()["events_failed"] for m in sub.on_topic("/stats")) == 4
    assert caplog.text.count("NOT stored") == 4
    statuses = [m.json() for m in sub.on_topic("/status")]
    degraded = [s for s in statuses if s["status"] == "degraded"]
    assert degraded and "event spool refused an event" in degraded[0]["reason"]
    assert "disk is full" in degraded[0]["reason"]
    states = [m.json() for m in sub.messages if m.topic.endswith("/state")]
    assert sum(s["state"] == "anomaly" and s["event_id"] is None for s in states) >= 1


def test_the_runtime_reports_a_broker_that_denies_its_events_and_keeps_them(
    mqtt_broker_factory: Callable[..., Broker], tmp_path: Path, runtime_bundle: Path,
) -> None:
    """The whole runtime against a real broker whose ACL lets this device write another
    device's topics only (a device_id / username mismatch): the status turns degraded with the
    broker's answer while frames go on being decided, and every event stays in the spool."""
    from runtime_support import config_text, write_frames

    from edge.config import load_config
    from edge.runtime import Runtime

    acl = tmp_path / "acl"
    acl.write_text("topic readwrite anomaly/other-device/#\ntopic read anomaly/#\n")
    broker = mqtt_broker_factory(BrokerOptions(acl_file=acl))
    write_frames(tmp_path / "frames", [((0, 0),), ()] * 3)  # 6 events: 3 anomalies, 3 back to ok
    path = tmp_path / "device.toml"
    path.write_text(config_text(runtime_bundle, "frames", source_extra="loop = true\nfps = 20",
                                mqtt=f"port = {broker.port}\nreconnect_max_s = 1.0"),
                    encoding="utf-8")
    runtime = Runtime(load_config(path))
    runner = threading.Thread(target=runtime.run, name="runtime-under-test")
    runner.start()
    try:
        deadline = time.monotonic() + DELIVERY_TIMEOUT_S
        while time.monotonic() < deadline and not (
                runtime.status == "degraded" and runtime.frames_processed >= 12):
            time.sleep(0.05)
        status, reason = runtime.status, runtime._status_reason
        decided = runtime.frames_processed
        kept = runtime.publisher.spool_depth()
    finally:
        runtime.request_stop()
        runner.join(DELIVERY_TIMEOUT_S)
    assert not runner.is_alive()
    print(f"[acl denial, runtime] {decided} frames decided, {kept} events kept, status {status}")
    assert status == "degraded" and reason is not None and "Not authorized" in reason, reason
    assert decided >= 12  # deciding went on while the broker refused
    assert kept >= 6  # nothing was deleted as delivered
