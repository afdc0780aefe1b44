"""A real Mosquitto broker and an independent subscriber for tests (importable by any test module).

The broker runs as a child process on a free port with a config written to a temp dir; it can be
SIGKILLed and restarted on the same port (and the same persistence file) to simulate a crash.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto"
                                          if Path("/usr/sbin/mosquitto").exists() else None)
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
SKIP_REASON = "mosquitto is not installed (apt-get install mosquitto); CI installs it"

BROKER_START_TIMEOUT_S = 10.0
POLL_S = 0.02


def free_port() -> int:
    """A TCP port nobody listens on right now (the kernel picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_accepts(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


@dataclass
class BrokerOptions:
    persistence: bool = False
    password_file: Path | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    acl_file: Path | None = None  # re-read by the broker on reload() (SIGHUP)


RELOAD_LOG_LINE = "Reloading config"  # what mosquitto logs when it handles SIGHUP


class Broker:
    """One mosquitto process; ``kill()`` is SIGKILL (a crash), ``restart()`` reuses port + state."""

    def __init__(self, workdir: Path, options: BrokerOptions | None = None,
                 port: int | None = None) -> None:
        if MOSQUITTO is None:
            raise RuntimeError(SKIP_REASON)
        self.workdir = workdir
        self.options = options or BrokerOptions()
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.proc: subprocess.Popen[bytes] | None = None
        self.config_path = workdir / "mosquitto.conf"
        self.log_path = workdir / "mosquitto.log"
        self._write_config()

    def _write_config(self) -> None:
        opts = self.options
        lines = [f"listener {self.port} {self.host}",
                 f"allow_anonymous {'false' if opts.password_file else 'true'}",
                 f"log_dest file {self.log_path}", "log_type all", "max_queued_messages 100000"]
        if os.geteuid() == 0:
            # As root mosquitto switches to user "mosquitto", who cannot read pytest's 0700
            # temp dirs (password file, log, persistence).
            lines.append("user root")
        if opts.password_file:
            lines.append(f"password_file {opts.password_file}")
        if opts.acl_file:
            lines.append(f"acl_file {opts.acl_file}")
        if opts.tls_cert:
            lines += [f"cafile {opts.tls_ca}", f"certfile {opts.tls_cert}",
                      f"keyfile {opts.tls_key}"]
        if opts.persistence:
            # Save on every change: a SIGKILLed broker must still know the subscriber's session.
            lines += ["persistence true", f"persistence_location {self.workdir}/",
                      "autosave_on_changes true", "autosave_interval 1"]
        self.config_path.write_text("\n".join(lines) + "\n")

    def start(self) -> Broker:
        self.proc = subprocess.Popen([str(MOSQUITTO), "-c", str(self.config_path)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + BROKER_START_TIMEOUT_S
        while not port_accepts(self.port, self.host):
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                log = self.log_path.read_text() if self.log_path.exists() else ""
                raise RuntimeError(f"mosquitto exited ({self.proc.returncode}): {err}\n{log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto did not listen on {self.port} within "
                                   f"{BROKER_START_TIMEOUT_S} s")
            time.sleep(POLL_S)
        return self

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, no final persistence save."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=5)
        if self.proc and self.proc.stderr:
            self.proc.stderr.close()

    def freeze(self) -> None:
        """SIGSTOP: the broker stops reading, so the publisher's PUBLISHes pile up unacked."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGSTOP)

    def reload(self) -> None:
        """SIGHUP: mosquitto re-reads its password and ACL files, clients stay connected.

        Returns once the broker logged the reload: it re-reads the files in the same turn of
        its (single-threaded) loop, so every packet it handles after that sees the new rules.
        """
        if self.proc and self.proc.poll() is None:
            before = self._log_text().count(RELOAD_LOG_LINE)
            self.proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + BROKER_START_TIMEOUT_S
            while self._log_text().count(RELOAD_LOG_LINE) <= before:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"mosquitto did not log {RELOAD_LOG_LINE!r} within "
                                       f"{BROKER_START_TIMEOUT_S} s of SIGHUP")
                time.sleep(POLL_S)

    def _log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def restart(self) -> Broker:
        self.kill()
        return self.start()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.proc and self.proc.stderr:
            self.proc.stderr.close()


def write_password_file(path: Path, username: str, password: str) -> Path:
    subprocess.run([MOSQUITTO_PASSWD, "-b", "-c", str(path), username, password], check=True,
                   capture_output=True)
    os.chmod(path, 0o600)
    return path


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    qos: int = 1  # as delivered: the lower of the publisher's and the subscription's QoS
    received_at: float = field(default_factory=time.monotonic)  # for "within N s" checks

    def json(self) -> Any:
        return json.loads(self.payload)


class Subscriber:
    """An independent paho client with a persistent session (clean_session=False), QoS 1."""

    def __init__(self, broker: Broker, topics: list[str], client_id: str | None = None,
                 username: str | None = None, password: str | None = None,
                 **tls: Any) -> None:
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._topics = topics
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=client_id or f"test-sub-{uuid.uuid4().hex[:8]}",
                                  clean_session=False)
        if tls:
            self.client.tls_set(**tls)
        if username:
            self.client.username_pw_set(username, password)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 1)
        self.client.connect_async(broker.host, broker.port, keepalive=10)
        self.client.loop_start()
        if not self._connected.wait(BROKER_START_TIMEOUT_S):
            raise RuntimeError("test subscriber could not connect")

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if not reason.is_failure:
            # Also after a reconnect: if the broker lost our session we must subscribe again.
            client.subscribe([(topic, 1) for topic in self._topics])
            self._connected.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain),
                                          qos=msg.qos))

    def on_topic(self, suffix: str) -> list[Received]:
        with self._lock:
            return [m for m in self.messages if m.topic.endswith(suffix)]

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if predicate(list(self.messages)):
                    return True
            time.sleep(POLL_S * 5)
        with self._lock:
            return predicate(list(self.messages))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class DeliveryFigures:
    sent: int
    received: int
    unique: int
    duplicates: int
    lost: int
    out_of_order: int

    def line(self, name: str) -> str:
        return (f"[{name}] sent={self.sent} received={self.received} unique={self.unique} "
                f"duplicates={self.duplicates} lost={self.lost} out_of_order={self.out_of_order}")


def delivery_figures(sent_seqs: list[int], events: list[dict[str, Any]]) -> DeliveryFigures:
    """Compare what the publisher stored with what a subscriber got, deduplicated by event_id."""
    seen: set[str] = set()
    first_seqs: list[int] = []
    for event in events:
        if event["event_id"] not in seen:
            seen.add(event["event_id"])
            first_seqs.append(event["seq"])
    out_of_order = sum(1 for a, b in itertools.pairwise(first_seqs) if b <= a)
    lost = len(set(sent_seqs) - set(first_seqs))
    return DeliveryFigures(sent=len(sent_seqs), received=len(events), unique=len(first_seqs),
                           duplicates=len(events) - len(first_seqs), lost=lost,
                           out_of_order=out_of_order)


def event_fields(index: int, device_id: str = "dev1", extra: dict[str, Any] | None = None,
                 ) -> dict[str, Any]:
    """Fields of one plausible anomaly event (edge.types.Event minus event_id and seq)."""
    return {
        "device_id": device_id, "frame_id": f"frame-{index:06d}", "timestamp": time.time(),
        "crop": "cap", "box": [10, 20, 28, 28], "score": 0.05 + index * 1e-4,
        "state": "anomaly" if index % 2 == 0 else "ok",
        "previous_state": "ok" if index % 2 == 0 else "anomaly",
        "threshold": {"high": 0.04, "low": None, "source": "bundle", "rule": "quantile:0.999"},
        "score_z": 3.2,
        "bundle": {"name": "caps-v1", "sha256": "ab" * 32}, "extra": dict(extra or {}),
    }
