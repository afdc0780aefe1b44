"""A local MQTT broker for the demo and the benchmarks: Mosquitto on a free port, the plant's
broker in miniature.

Only Mosquitto: the edge speaks MQTT 5 (a v5 PUBACK is how a broker's ACL says "no", see
docs/mqtt.md), which the pure-Python brokers on PyPI (amqtt) do not, so a fallback to one would
accept the connection attempt and deliver nothing."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

READY_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0
MOSQUITTO_PATHS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_mosquitto() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    return next((p for p in MOSQUITTO_PATHS if Path(p).exists()), None)


class LocalBroker:
    """Starts a broker bound to 127.0.0.1 on a free port; use as a context manager."""

    def __init__(self) -> None:
        self.port = free_port()
        self.kind = ""
        self._dir = Path(tempfile.mkdtemp(prefix="broker-"))
        self._process: subprocess.Popen[bytes] | None = None
        self._log: BinaryIO | None = None

    def start(self) -> LocalBroker:
        mosquitto = find_mosquitto()
        if mosquitto is None:
            raise RuntimeError(
                "no MQTT broker: Mosquitto is not installed. Install it (Debian/Raspberry Pi OS: "
                "sudo apt install mosquitto mosquitto-clients) and run again."
            )
        config = self._dir / "mosquitto.conf"
        config.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n")
        command = [mosquitto, "-c", str(config)]
        self.kind = "mosquitto"
        self._log = (self._dir / "broker.log").open("wb")
        self._process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"{self.kind} exited at start; see {self._dir}/broker.log")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.kind} did not listen on port {self.port} within "
                           f"{READY_TIMEOUT_S:.0f} s; see {self._dir}/broker.log")

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs (for CPU accounting in benchmarks)."""
        return self._process.pid if self._process is not None else None

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None
        shutil.rmtree(self._dir, ignore_errors=True)  # its config and log

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()
