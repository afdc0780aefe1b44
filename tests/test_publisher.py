"""MqttPublisher against a real Mosquitto: topics, schemas, Last Will, auth refusal, ACL denial,
limits, spool faults, one process per spool."""

from __future__ import annotations

import gc
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from broker import (
    MOSQUITTO,
    SKIP_REASON,
    Broker,
    BrokerOptions,
    Subscriber,
    event_fields,
    free_port,
    write_password_file,
)
from tls_certs import make_server_certs

from edge.errors import PublishError
from edge.publish.mqtt import MqttPublisher
from edge.publish.payloads import load_schema
from edge.publish.settings import AuthConfig, MqttConfig, SpoolConfig, TlsConfig

pytestmark = [pytest.mark.broker, pytest.mark.timeout(60)]

DEVICE = "dev1"
BUNDLE = {"name": "caps-v1", "sha256": "ab" * 32}
WAIT_S = 10.0
SECRET = "s3cr3t-Pa55word-never-logged"
CHILD = Path(__file__).with_name("publisher_child.py")


def make_config(broker_port: int, tmp_path: Path, **overrides: Any) -> MqttConfig:
    values: dict[str, Any] = {"host": "127.0.0.1", "port": broker_port, "reconnect_min_s": 0.2,
                              "reconnect_max_s": 1.0, "spool": SpoolConfig(path=Path("spool.db"))}
    values.update(overrides)
    return MqttConfig(**values)


@pytest.fixture
def publishers() -> Iterator[list[MqttPublisher]]:
    made: list[MqttPublisher] = []
    yield made
    for publisher in made:
        publisher.close()


def start_publisher(config: MqttConfig, tmp_path: Path, made: list[MqttPublisher]) -> MqttPublisher:
    publisher = MqttPublisher(config, DEVICE, BUNDLE, base_dir=tmp_path)
    made.append(publisher)
    publisher.start()
    return publisher


def wait_until(predicate: Callable[[], bool], timeout_s: float = WAIT_S) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_events_in_order_schema_valid_with_state_status_and_stats(
    mqtt_broker: Broker, mqtt_subscriber_factory: Callable[..., Subscriber], tmp_path: Path,
    publishers: list[MqttPublisher],
) -> None:
    count = 50
    sub = mqtt_subscriber_factory(mqtt_broker, [f"anomaly/{DEVICE}/#"])
    pub = start_publisher(make_config(mqtt_broker.port, tmp_path), tmp_path, publishers)
    assert wait_until(lambda: pub.connection_state == "connected")
    pub.set_status("degraded", "camera reconnecting")
    pub.publish_state("cap", {"state": "anomaly", "score": 0.07})
    stored = [pub.submit_event(**event_fields(i)) for i in range(count)]
    assert pub.flush(WAIT_S)
    assert pub.spool_depth() == 0
    pub.publish_stats({"fps": 9.5, "uptime_s": 12.0, "latency_ms": {"score": float("nan")}})
    assert sub.wait_for(lambda ms: any(m.topic.endswith("/stats") for m in ms), WAIT_S)
    assert sub.wait_for(lambda ms: len([m for m in ms if m.topic.endswith("/events")]) >= count,
                        WAIT_S)

    events = [m.json() for m in sub.on_topic("/events")]
    assert [e["seq"] for e in events] == [e.seq for e in stored]
    assert [e["event_id"] for e in events] == [e.event_id for e in stored]
    for name, suffix in [("event", "/events"), ("status", "/status"),
                         ("state", "/crops/cap/state"), ("stats", "/stats")]:
        schema = load_schema(name)
        messages = sub.on_topic(suffix)
        assert messages, f"nothing on {suffix}"
        for message in messages:
            jsonschema.validate(message.json(), schema)
    stats = sub.on_topic("/stats")[-1].json()
    assert stats["fps"] == 9.5 and stats["spool_depth"] == 0 and stats["mqtt_state"] == "connected"
    assert stats["latency_ms"] == {"score": None}  # NaN is not JSON; it must not stop the stats

    # A late subscriber gets the retained status and crop state (and no old events).
    late = mqtt_subscriber_factory(mqtt_broker, [f"anomaly/{DEVICE}/#"])
    assert late.wait_for(lambda ms: len(ms) >= 2, WAIT_S)
    retained = {m.topic: m for m in late.messages}
    assert retained[f"anomaly/{DEVICE}/status"].retain
    assert retained[f"anomaly/{DEVICE}/status"].json()["status"] == "degraded"
    assert retained[f"anomaly/{DEVICE}/crops/cap/state"].json()["state"] == "anomaly"
    assert not late.on_topic("/events")


@pytest.mark.parametrize("state_qos", [0, 1])
def test_crop_states_go_out_at_the_configured_qos_and_events_at_qos_1(
    mqtt_broker: Broker, mqtt_subscriber_factory: Callable[..., Subscriber], tmp_path: Path,
    publishers: list[MqttPublisher], state_qos: int,
) -> None:
    # The witness subscribes at QoS 1, so what it receives carries the device's own QoS.
    sub = mqtt_subscriber_factory(mqtt_broker, [f"anomaly/{DEVICE}/#"])
    pub = start_publisher(make_config(mqtt_broker.port, tmp_path, state_qos=state_qos), tmp_path,
                          publishers)
    assert wait_until(lambda: pub.connection_state == "connected")
    pub.publish_state("cap", {"state": "anomaly", "score": 0.07})
    pub.submit_event(**event_fields(0))
    assert pub.flush(WAIT_S)
    assert sub.wait_for(lambda ms: any(m.topic.endswith("/events") for m in ms)
                        and any(m.topic.endswith("/state") for m in ms), WAIT_S)
    assert [m.qos for m in sub.on_topic("/crops/cap/state")] == [state_qos]
    assert [m.qos for m in sub.on_topic("/events")] == [1]
    assert {m.qos for m in sub.on_topic("/status")} == {1}

    # The broker dies and comes back empty (no persistence): the device publishes every crop's
    # state again on reconnect, so what a broken connection took is replaced.
    mqtt_broker.restart()  # SIGKILL, then a fresh start on the same port
    assert sub.wait_for(lambda ms: len([m for m in ms if m.topic.endswith("/state")]) >= 2,
                        WAIT_S)
    assert [m.json()["state"] for m in sub.on_topic("/crops/cap/state")] == ["anomaly"] * 2


def test_last_will_marks_a_killed_process_offline(
    mqtt_broker: Broker, mqtt_subscriber_factory: Callable[..., Subscriber], tmp_path: Path,
) -> None:
    child = subprocess.Popen(
        [sys.executable, str(CHILD), "--port", str(mqtt_broker.port),
         "--spool", str(tmp_path / "spool.db"), "--hold-s", "60"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "READY"
        sub = mqtt_subscriber_factory(mqtt_broker, [f"anomaly/{DEVICE}/status"])
        assert sub.wait_for(lambda ms: any(m.json()["status"] == "online" for m in ms), WAIT_S)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=WAIT_S)
        assert sub.wait_for(lambda ms: ms[-1].json()["status"] == "offline", WAIT_S)
    finally:
        child.kill()
        child.wait()
        if child.stdout:
            child.stdout.close()
    late = mqtt_subscriber_factory(mqtt_broker, [f"anomaly/{DEVICE}/status"])
    assert late.wait_for(lambda ms: bool(ms), WAIT_S)
    will = late.messages[0]
    assert will.retain
    jsonschema.validate(will.json(), load_schema("status"))
    assert will.json()["status"] == "offline"
    assert will.json()["reason"] == "connection lost (last will)"


def _auth_broker(factory: Callable[..., Broker], tmp_path: Path) -> Broker:
    password_file = write_password_file(tmp_path / "passwd", "edge", SECRET)
    return factory(BrokerOptions(password_file=password_file))


def test_wrong_password_is_a_clear_error_without_a_retry_storm(
    mqtt_broker_factory: Callable[..., Broker], tmp_path: Path, publishers: list[MqttPublisher],
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    broker = _auth_broker(mqtt_broker_factory, tmp_path)
    monkeypatch.setenv("EDGE_MQTT_USER", "edge")
    monkeypatch.setenv("EDGE_MQTT_PASSWORD", "wrong-" + SECRET)
    auth = AuthConfig(username_env="EDGE_MQTT_USER", password_env="EDGE_MQTT_PASSWORD")
    caplog.set_level(logging.DEBUG)
    pub = start_publisher(make_config(broker.port, tmp_path, auth=auth, reconnect_max_s=1.0),
                          tmp_path, publishers)
    assert wait_until(lambda: pub.connection_state == "refused")
    event = pub.submit_event(**event_fields(0))  # still stored: nothing is lost while refused
    observe_s = 3.0
    time.sleep(observe_s)
    assert pub.connection_state == "refused"
    assert pub.last_error is not None and "refused" in pub.last_error
    assert "password" in pub.last_error  # it says what to check
    assert pub.delivery_problem() == pub.last_error  # so the runtime reports "degraded"
    attempts = broker.log_path.read_text().count("New connection from")
    print(f"[wrong password] {attempts} connection attempts in ~{observe_s:g} s")
    # Slow retry at reconnect_max_s: a handful of attempts, not a storm (hundreds).
    assert 1 <= attempts <= observe_s / pub.config.reconnect_max_s + 3, attempts
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "refused" in errors[0].getMessage()
    assert SECRET not in caplog.text
    assert pub.spool_depth() == 1 and event.seq == 1


def test_secrets_are_never_in_logs_or_stats(
    mqtt_broker_factory: Callable[..., Broker], mqtt_subscriber_factory: Callable[..., Subscriber],
    tmp_path: Path, publishers: list[MqttPublisher], caplog: pytest.LogCaptureFixture,
) -> None:
    broker = _auth_broker(mqtt_broker_factory, tmp_path)
    (tmp_path / "user").write_text("edge\n")
    (tmp_path / "password").write_text(SECRET + "\n")
    auth = AuthConfig(username_file=Path("user"), password_file=Path("password"))
    caplog.set_level(logging.DEBUG)
    sub = mqtt_subscriber_factory(broker, [f"anomaly/{DEVICE}/#"], username="edge",
                                  password=SECRET)
    pub = start_publisher(make_config(broker.port, tmp_path, auth=auth), tmp_path, publishers)
    assert wait_until(lambda: pub.connection_state == "connected")
    pub.submit_event(**event_fields(0))
    assert pub.flush(WAIT_S)
    pub.publish_stats({"fps": 1.0})
    assert sub.wait_for(lambda ms: any(m.topic.endswith("/stats") for m in ms), WAIT_S)
    assert all(SECRET.encode() not in m.payload for m in sub.messages)
    assert SECRET not in caplog.text


def test_oversized_payload_is_refused_clearly_and_kept(
    mqtt_broker: Broker, mqtt_subscriber_factory: Callable[..., Subscriber], tmp_path: Path,
    publishers: list[MqttPublisher],
) -> None:
    limit = 1024
    sub = mqtt_subscriber_factory(mqtt_broker, [f"anomaly/{DEVICE}/events"])
    pub = start_publisher(make_config(mqtt_broker.port, tmp_path, max_payload_bytes=limit),
                          tmp_path, publishers)
    with pytest.raises(PublishError, match="max_payload_bytes") as info:
        pub.submit_event(**event_fields(0, extra={"blob": "x" * 2 * limit}))
    assert str(limit) in str(info.value)
    assert pub.spool_depth() == 0
    rejected = pub.spool._conn.execute("SELECT COUNT(*) FROM rejected").fetchone()[0]
    assert rejected == 1
    bad = event_fields(2)
    bad["score"] = float("nan")
    with pytest.raises(PublishError, match="NaN"):
        pub.submit_event(**bad)
    ok = pub.submit_event(**event_fields(1))
    assert ok.seq == 1  # no gap in seq for the refused event
    assert pub.flush(WAIT_S)
    assert sub.wait_for(lambda ms: len(ms) == 1, WAIT_S)


@pytest.mark.skipif(MOSQUITTO is None, reason=SKIP_REASON)
def first_warning(sub: Subscriber) -> dict[str, Any]:
    """The first ``…/warnings`` message the subscriber receives, checked against its schema."""
    assert sub.wait_for(lambda ms: any(m.topic.endswith("/warnings") for m in ms), WAIT_S)
    warning: dict[str, Any] = sub.on_topic("/warnings")[0].json()
    jsonschema.validate(warning, load_schema("warning"))
    return warning


def test_spool_overflow_while_offline_publishes_a_warning_after_restart(
    mqtt_subscriber_factory: Callable[..., Subscriber], tmp_path: Path,
    publishers: list[MqttPublisher],
) -> None:
    max_events = 100
    port = free_port()
    config = make_config(port, tmp_path,
                         spool=SpoolConfig(path=Path("spool.db"), max_events=max_events))
    offline = MqttPublisher(config, DEVICE, BUNDLE, base_dir=tmp_path)
    offline.start()  # no broker on this port: everything waits in the spool
    for i in range(max_events + 7):
        offline.submit_event(**event_fields(i))
    assert offline.spool_depth() == max_events
    offline.close()  # the process restarts before it ever reaches the broker

    (tmp_path / "b").mkdir()
    broker = Broker(tmp_path / "b", port=port).start()
    try:
        sub = mqtt_subscriber_factory(broker, [f"anomaly/{DEVICE}/#"])
        pub = start_publisher(config, tmp_path, publishers)
        assert pub.flush(WAIT_S)
        warning = first_warning(sub)
        assert (warning["dropped"], warning["first_seq"], warning["last_seq"]) == (7, 1, 7)
        assert sub.wait_for(lambda ms: len([m for m in ms if m.topic.endswith("/events")])
                            >= max_events, WAIT_S)
        assert [m.json()["seq"] for m in sub.on_topic("/events")] == list(range(8, 108))
        # Announced once the broker acknowledged the warning, so a restart will not repeat it.
        assert wait_until(lambda: pub.spool.unreported_drops() is None)
        pub.close()
    finally:
        broker.stop()


def test_a_stored_event_that_cannot_be_read_is_announced_as_a_gap(
    mqtt_broker: Broker, mqtt_subscriber_factory: Callable[..., Subscriber], tmp_path: Path,
    publishers: list[MqttPublisher],
) -> None:
    config = make_config(mqtt_broker.port, tmp_path, spool=SpoolConfig(path=Path("spool.db")))
    offline = MqttPublisher(config, DEVICE, BUNDLE, base_dir=tmp_path)
    offline.submit_event(**event_fields(0))  # seq 1; never started, so it stays in the spool
    offline.spool._conn.execute(  # seq 2: a row damaged on disk
        "INSERT INTO events(event_id, created_at, payload) VALUES ('bad', ?, '{')",
        (time.time(),))
    offline.submit_event(**event_fields(2))  # seq 3
    offline.close()
    sub = mqtt_subscriber_factory(mqtt_broker, [f"anomaly/{DEVICE}/#"])
    pub = start_publisher(config, tmp_path, publishers)
    assert pub.flush(WAIT_S)
    warning = first_warning(sub)
    assert warning["code"] == "spool_unreadable"
    assert (warning["dropped"], warning["first_seq"], warning["last_seq"]) == (1, 2, 2)
    assert "rejected" in warning["message"] and str(pub.spool.path) in warning["message"]
    assert sub.wait_for(lambda ms: len([m for m in ms if m.topic.endswith("/events")]) >= 2,
                        WAIT_S)
    assert [m.json()["seq"] for m in sub.on_topic("/events")] == [1, 3]
    assert wait_until(lambda: pub.spool.unreported_drops() is None)


def test_a_row_that_cannot_even_be_set_aside_does_not_hold_back_a_window_of_one(
    mqtt_broker: Broker, mqtt_subscriber_factory: Callable[..., Subscriber], tmp_path: Path,
    publishers: list[MqttPublisher], monkeypatch: pytest.MonkeyPatch,
) -> None:
    from edge.publish.spool import Spool

    config = make_config(mqtt_broker.port, tmp_path, max_inflight=1)
    offline = MqttPublisher(config, DEVICE, BUNDLE, base_dir=tmp_path)
    offline.submit_event(**event_fields(0))  # seq 1
    offline.spool._conn.execute(  # seq 2: damaged on disk
        "INSERT INTO events(event_id, created_at, payload) VALUES ('bad', ?, '{')",
        (time.time(),))
    offline.submit_event(**event_fields(2))  # seq 3
    offline.close()
    attempts: list[int] = []

    def failing_disk(self: Spool, seq: int, body: str, err: Exception) -> None:
        attempts.append(seq)
        raise PublishError("disk I/O error (a failing SD card, simulated)")

    monkeypatch.setattr(Spool, "_set_aside", failing_disk)
    sub = mqtt_subscriber_factory(mqtt_broker, [f"anomaly/{DEVICE}/events"])
    start_publisher(config, tmp_path, publishers)
    # Each pass reads one row: the bad one must be stepped over, not read again and again.
    assert sub.wait_for(lambda ms: len(ms) >= 2, WAIT_S)
    assert [m.json()["seq"] for m in sub.on_topic("/events")] == [1, 3]
    assert 1 <= len(attempts) <= 3, len(attempts)  # once per pass over the spool, not a spin


def test_the_cause_of_an_outage_after_a_working_connection_is_a_warning(
    mqtt_broker_factory: Callable[..., Broker], tmp_path: Path,
    publishers: list[MqttPublisher], caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="edge")
    broker = mqtt_broker_factory()
    pub = start_publisher(make_config(broker.port, tmp_path), tmp_path, publishers)
    assert wait_until(lambda: pub.connection_state == "connected")
    broker.stop()
    assert wait_until(lambda: "cannot reach MQTT broker" in (pub.last_error or ""))
    time.sleep(1.5)  # more failed attempts: those stay at DEBUG
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("lost the connection" in w for w in warnings), warnings
    causes = [w for w in warnings if "cannot reach MQTT broker" in w]
    assert len(causes) == 1 and "ConnectionRefusedError" in causes[0], warnings


def test_tls_with_password_against_a_real_broker(
    mqtt_broker_factory: Callable[..., Broker], mqtt_subscriber_factory: Callable[..., Subscriber],
    tmp_path: Path, publishers: list[MqttPublisher], monkeypatch: pytest.MonkeyPatch,
) -> None:
    certs = make_server_certs(tmp_path)
    broker = mqtt_broker_factory(BrokerOptions(
        password_file=write_password_file(tmp_path / "passwd", "edge", SECRET),
        tls_ca=certs.ca, tls_cert=certs.cert, tls_key=certs.key))
    monkeypatch.setenv("EDGE_MQTT_USER", "edge")
    monkeypatch.setenv("EDGE_MQTT_PASSWORD", SECRET)
    sub = mqtt_subscriber_factory(broker, [f"anomaly/{DEVICE}/events"], username="edge",
                                  password=SECRET, ca_certs=str(certs.ca))
    config = make_config(
        broker.port, tmp_path, tls=TlsConfig(ca_file=Path("ca.pem")),
        auth=AuthConfig(username_env="EDGE_MQTT_USER", password_env="EDGE_MQTT_PASSWORD"))
    pub = start_publisher(config, tmp_path, publishers)
    assert wait_until(lambda: pub.connection_state == "connected"), pub.last_error
    stored = [pub.submit_event(**event_fields(i)).seq for i in range(5)]
    assert pub.flush(WAIT_S)
    assert sub.wait_for(lambda ms: len(ms) == len(stored), WAIT_S)
    assert [m.json()["seq"] for m in sub.messages] == stored


# paho-mqtt 2.2 does not close the SSL socket of a failed handshake (garbage-collected later);
# that third-party ResourceWarning is not ours to fix.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_tls_with_an_unknown_ca_never_connects(
    mqtt_broker_factory: Callable[..., Broker], tmp_path: Path, publishers: list[MqttPublisher],
) -> None:
    certs = make_server_certs(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    stranger = make_server_certs(other)  # a CA the broker's certificate is not signed by
    broker = mqtt_broker_factory(BrokerOptions(tls_ca=certs.ca, tls_cert=certs.cert,
                                               tls_key=certs.key))
    pub = start_publisher(make_config(broker.port, tmp_path, tls=TlsConfig(ca_file=stranger.ca)),
                          tmp_path, publishers)
    assert wait_until(lambda: pub.last_error is not None)
    time.sleep(0.5)
    assert pub.connection_state != "connected"
    assert "TLS" in (pub.last_error or "")
    pub.close()
    gc.collect()  # let paho's leaked sockets warn here, under this test's filters


def _hide_table(publisher: MqttPublisher, table: str) -> None:
    """A real SQLite error on the next read of ``table`` ("no such table"), as a failing SD
    card gives one; _restore_table undoes it."""
    publisher.spool._conn.execute(f"ALTER TABLE {table} RENAME TO {table}_hidden")


def _restore_table(publisher: MqttPublisher, table: str) -> None:
    publisher.spool._conn.execute(f"ALTER TABLE {table}_hidden RENAME TO {table}")


def test_a_spool_error_in_on_connect_neither_kills_delivery_nor_lies(
    mqtt_broker: Broker, mqtt_subscriber_factory: Callable[..., Subscriber], tmp_path: Path,
    publishers: list[MqttPublisher], caplog: pytest.LogCaptureFixture,
) -> None:
    count = 20
    pub = start_publisher(make_config(mqtt_broker.port, tmp_path), tmp_path, publishers)
    assert wait_until(lambda: pub.connection_state == "connected")
    first = pub.submit_event(**event_fields(0))
    assert pub.flush(WAIT_S)
    # The CONNACK after the broker's restart reads the unannounced drops: that read now fails.
    # Before the fix the sqlite3 error escaped on_connect and killed paho's network thread:
    # "connected" forever, nothing delivered.
    _hide_table(pub, "drops")
    mqtt_broker.restart()
    assert wait_until(lambda: "unannounced drops" in (pub.last_error or "")), pub.last_error
    _restore_table(pub, "drops")
    assert pub._client._thread is not None and pub._client._thread.is_alive()
    sub = mqtt_subscriber_factory(mqtt_broker, [f"anomaly/{DEVICE}/events"])  # after the restart
    stored = [pub.submit_event(**event_fields(i)).seq for i in range(1, count)]
    assert pub.flush(WAIT_S), f"spool depth {pub.spool_depth()}, {pub.connection_state}"
    assert sub.wait_for(lambda ms: {m.json()["seq"] for m in ms} >= set(stored), WAIT_S)
    assert first.seq not in stored
    assert any("unannounced drops" in r.getMessage() for r in caplog.records
               if r.levelno >= logging.ERROR)


def test_spool_read_errors_leave_stats_flowing_with_unknown_figures(
    mqtt_broker: Broker, mqtt_subscriber_factory: Callable[..., Subscriber], tmp_path: Path,
    publishers: list[MqttPublisher],
) -> None:
    sub = mqtt_subscriber_factory(mqtt_broker, [f"anomaly/{DEVICE}/stats"])
    pub = start_publisher(make_config(mqtt_broker.port, tmp_path), tmp_path, publishers)
    assert wait_until(lambda: pub.connection_state == "connected")
    _hide_table(pub, "events")
    try:
        with pytest.raises(PublishError, match="spool read failed"):
            pub.spool_depth()
        pub.publish_stats({"fps": 1.0})  # raised sqlite3.OperationalError before the fix
    finally:
        _restore_table(pub, "events")
    assert sub.wait_for(lambda ms: bool(ms), WAIT_S)
    stats = sub.messages[0].json()
    jsonschema.validate(stats, load_schema("stats"))
    assert stats["spool_depth"] is None and stats["spool_dropped_total"] is None
    assert "no such table" in stats["mqtt_last_error"]


def test_a_limits_error_after_the_commit_still_returns_the_stored_event(
    tmp_path: Path, publishers: list[MqttPublisher], caplog: pytest.LogCaptureFixture,
) -> None:
    max_events = 100
    config = make_config(free_port(), tmp_path,
                         spool=SpoolConfig(path=Path("spool.db"), max_events=max_events))
    pub = MqttPublisher(config, DEVICE, BUNDLE, base_dir=tmp_path)  # never started: offline
    publishers.append(pub)
    pub.spool.append_many([event_fields(i) for i in range(max_events)])
    _hide_table(pub, "drops")  # the drop the next event causes cannot be recorded
    try:
        # Before the fix this raised, and the runtime logged "NOT stored" for a stored event.
        event = pub.submit_event(**event_fields(max_events))
    finally:
        _restore_table(pub, "drops")
    assert event.seq == max_events + 1
    assert [e.seq for e in pub.spool.pending(after_seq=max_events)] == [event.seq]
    assert pub.last_error is not None and "spool limits" in pub.last_error
    assert "events are stored" in caplog.text
    pub.submit_event(**event_fields(max_events + 1))  # limits applied at the next one
    assert pub.spool_depth() == max_events and pub.spool.dropped_total() == 2


def _acl_broker(factory: Callable[..., Broker], acl: Path, writable: str) -> Broker:
    acl.write_text(f"topic readwrite {writable}\ntopic read anomaly/#\n")
    return factory(BrokerOptions(acl_file=acl))


def test_acl_denied_events_stay_in_the_spool_and_are_sent_once_allowed(
    mqtt_broker_factory: Callable[..., Broker], mqtt_subscriber_factory: Callable[..., Subscriber],
    tmp_path: Path, publishers: list[MqttPublisher], caplog: pytest.LogCaptureFixture,
) -> None:
    count, observe_s = 5, 3.0
    acl = tmp_path / "acl"
    # The ACL lets this client write another device's topics only (a device_id / username
    # mismatch). Mosquitto 2 answers a v5 client with PUBACK 0x87 Not authorized and drops the
    # message; under MQTT 3.1.1 it sent a plain PUBACK and the events were deleted as delivered.
    broker = _acl_broker(mqtt_broker_factory, acl, "anomaly/other-device/#")
    sub = mqtt_subscriber_factory(broker, [f"anomaly/{DEVICE}/events"])
    pub = start_publisher(make_config(broker.port, tmp_path, reconnect_max_s=1.0), tmp_path,
                          publishers)
    stored = [pub.submit_event(**event_fields(i)).seq for i in range(count)]
    assert wait_until(lambda: pub.connection_state == "denied"), pub.connection_state
    assert not pub.flush(observe_s)
    assert pub.spool_depth() == count
    message = pub.last_error or ""
    assert "Not authorized" in message and f"anomaly/{DEVICE}/" in message
    assert "ACL" in message and "device_id" in message
    assert pub.delivery_problem() == pub.last_error  # the runtime reports it as degraded
    denied = len([line for line in broker.log_path.read_text().splitlines()
                  if "Denied PUBLISH" in line and f"'anomaly/{DEVICE}/events'" in line])
    print(f"[acl denied] {denied} denied event publishes in ~{observe_s:g} s")
    # Retried every reconnect_max_s (about 3 passes in observe_s), not in a tight loop.
    assert count <= denied <= count * (observe_s / pub.config.reconnect_max_s + 2), denied
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1
    assert not sub.messages

    acl.write_text(f"topic readwrite anomaly/{DEVICE}/#\ntopic read anomaly/#\n")
    broker.reload()
    assert pub.flush(WAIT_S), f"spool depth {pub.spool_depth()}, {pub.last_error}"
    assert wait_until(lambda: pub.connection_state == "connected")
    assert pub.last_error is None and pub.delivery_problem() is None
    assert sub.wait_for(lambda ms: len(ms) >= count, WAIT_S)
    assert [m.json()["seq"] for m in sub.messages] == stored


def test_a_second_process_on_the_same_spool_is_refused_clearly(
    mqtt_broker: Broker, tmp_path: Path,
) -> None:
    spool = tmp_path / "spool.db"
    child = subprocess.Popen(
        [sys.executable, str(CHILD), "--port", str(mqtt_broker.port), "--spool", str(spool),
         "--hold-s", "60"], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "READY"
        # The same config started twice: before the fix both ran, shared the spool and the
        # client id, and knocked each other off the broker in a loop.
        with pytest.raises(PublishError) as info:
            MqttPublisher(make_config(mqtt_broker.port, tmp_path), DEVICE, BUNDLE,
                          base_dir=tmp_path)
        message = str(info.value)
        assert str(spool) in message and f"PID {child.pid}" in message
        assert "already in use" in message and "Stop the other process" in message
    finally:
        child.kill()
        child.wait()
        if child.stdout:
            child.stdout.close()
    # The lock dies with its process: no stale lock file to clean up after a crash.
    MqttPublisher(make_config(mqtt_broker.port, tmp_path), DEVICE, BUNDLE,
                  base_dir=tmp_path).close()


def test_a_second_acl_outage_after_a_broker_restart_is_logged_again(
    mqtt_broker_factory: Callable[..., Broker], tmp_path: Path,
    publishers: list[MqttPublisher], caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="edge")
    acl = tmp_path / "acl"
    broker = _acl_broker(mqtt_broker_factory, acl, "anomaly/other-device/#")
    pub = start_publisher(make_config(broker.port, tmp_path, reconnect_max_s=1.0), tmp_path,
                          publishers)
    pub.submit_event(**event_fields(0))
    assert wait_until(lambda: pub.connection_state == "denied")
    time.sleep(0.5)  # the event's denial too: one outage, one ERROR
    # The operator fixes the ACL and restarts mosquitto (not a reload): the device reconnects
    # and delivers, so the next denial is a new outage and must reach the log as an ERROR.
    acl.write_text(f"topic readwrite anomaly/{DEVICE}/#\ntopic read anomaly/#\n")
    broker.restart()
    assert pub.flush(WAIT_S), pub.last_error
    assert "accepts events again" in caplog.text
    acl.write_text("topic readwrite anomaly/other-device/#\ntopic read anomaly/#\n")
    broker.reload()  # returns once mosquitto has re-read the ACL
    pub.submit_event(**event_fields(1))
    assert wait_until(lambda: pub.connection_state == "denied")
    time.sleep(0.5)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 2 and all("Not authorized" in e for e in errors), errors


def test_a_clean_close_keeps_late_acknowledgements_so_a_restart_sends_no_duplicates(
    mqtt_broker: Broker, mqtt_subscriber_factory: Callable[..., Subscriber], tmp_path: Path,
) -> None:
    count = 400
    sub = mqtt_subscriber_factory(mqtt_broker, [f"anomaly/{DEVICE}/events"])
    config = make_config(mqtt_broker.port, tmp_path)
    first = MqttPublisher(config, DEVICE, BUNDLE, base_dir=tmp_path)
    first.start()
    assert wait_until(lambda: first.connection_state == "connected")
    first.submit_events([event_fields(i) for i in range(count)])
    time.sleep(0.02)  # a window of events is in flight when the stop comes (SIGTERM)
    first.close()  # the PUBACKs of that window arrive while it closes
    second = MqttPublisher(config, DEVICE, BUNDLE, base_dir=tmp_path)
    second.start()
    try:
        assert second.flush(WAIT_S)
    finally:
        second.close()
    assert sub.wait_for(lambda ms: len(ms) >= count, WAIT_S)
    time.sleep(0.5)  # a duplicate would arrive now
    ids = [m.json()["event_id"] for m in sub.messages]
    assert len(set(ids)) == count and len(ids) == count, f"{len(ids) - len(set(ids))} duplicates"


def test_qos0_states_do_not_make_the_sender_query_the_spool(
    mqtt_broker: Broker, tmp_path: Path, publishers: list[MqttPublisher],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pub = start_publisher(make_config(mqtt_broker.port, tmp_path), tmp_path, publishers)
    assert wait_until(lambda: pub.connection_state == "connected")
    time.sleep(0.2)  # the connect's own pass over the spool is done
    queries: list[int] = []
    original = pub.spool.pending
    monkeypatch.setattr(pub.spool, "pending",
                        lambda *a, **k: queries.append(1) or original(*a, **k))
    for i in range(300):  # paho reports each QoS 0 send through on_publish, waking the sender
        pub.publish_state(f"c{i % 24}", {"state": "ok", "score": 0.01})
    time.sleep(0.5)
    assert len(queries) <= 2, f"{len(queries)} spool queries for 300 states and no events"
    pub.submit_event(**event_fields(0))  # an event still wakes it and goes out
    assert pub.flush(WAIT_S)


def test_a_broker_that_cannot_be_reached_is_named_with_the_cause(
    tmp_path: Path, publishers: list[MqttPublisher],
) -> None:
    pub = start_publisher(make_config(free_port(), tmp_path), tmp_path, publishers)
    assert wait_until(lambda: pub.last_error is not None)
    assert "cannot reach MQTT broker 127.0.0.1:" in (pub.last_error or "")
    assert "ConnectionRefusedError" in (pub.last_error or "")
    assert pub.delivery_problem() is None  # a broker that is down is not a setup problem


def test_a_sender_that_keeps_failing_is_a_delivery_problem_until_it_works_again(
    mqtt_broker: Broker, tmp_path: Path, publishers: list[MqttPublisher],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("edge.publish.mqtt.SENDER_ERROR_BACKOFF_S", 0.2)
    pub = start_publisher(make_config(mqtt_broker.port, tmp_path), tmp_path, publishers)
    assert wait_until(lambda: pub.connection_state == "connected")
    _hide_table(pub, "events")  # every read of the spool fails, as on a dying SD card
    try:
        pub._inbox.put(("wake", 0))
        assert wait_until(lambda: pub.delivery_problem() is not None)
        problem = pub.delivery_problem() or ""
        assert "event sender failed" in problem and "no such table" in problem
        assert str(pub.spool.path) in problem  # the runtime's degraded reason names the spool
        assert pub.connection_state == "connected"  # the broker is fine; the device is not
    finally:
        _restore_table(pub, "events")
    pub._inbox.put(("wake", 0))
    assert wait_until(lambda: pub.delivery_problem() is None)
