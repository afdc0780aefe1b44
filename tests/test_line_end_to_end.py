"""The product end to end on the committed example bundle and a synthetic casting line.

``edge run`` runs as its own process against a real Mosquitto; the witness is ``mosquitto_sub``,
a separate program. What it receives must be exactly what the laptop path (``edge score`` on the
same crops, with the same bundle) predicts — the same bundle gives the same messages everywhere.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from linesim import LineScene, SceneConfig
from linesim.device import replay_config_toml
from linesim.writer import frame_file_name, well_crops

pytestmark = pytest.mark.broker

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "models" / "demo-wells"
DEVICE = "e2e-line"
# Obvious defects the example bundle catches every time (see docs/results.md for the rates).
FORCED: list[dict[str, str]] = [
    {"r0c0": "spill"}, {}, {"r1c2": "underfill", "r3c5": "crack"}, {}, {"r2c3": "spill"},
]
WITNESS_READY_S = 10.0
RUN_TIMEOUT_S = 120


def _write_line(directory: Path, scene: LineScene) -> list[str]:
    directory.mkdir()
    ids = []
    for index, force in enumerate(FORCED):
        image, truth = scene.frame(index, force=force, normal_only=True)
        assert truth.anomalies == force
        Image.fromarray(image).save(directory / frame_file_name(index))
        ids.append(Path(frame_file_name(index)).stem)
    return ids


def _write_config(path: Path, frames: Path, port: int, scene: SceneConfig, *,
                  loop: bool = False) -> Path:
    path.write_text(replay_config_toml(device_id=DEVICE, bundle=BUNDLE, frames=frames, port=port,
                                       spool=path.parent / "spool.db", scene=scene,
                                       fps=20 if loop else 0, loop=loop, stats_interval_s=0.5),
                    encoding="utf-8")
    return path


class Witness:
    """``mosquitto_sub`` in its own process, printing ``topic payload`` lines to a file."""

    def __init__(self, port: int, workdir: Path) -> None:
        self.port = port
        self.out = workdir / "witness.txt"
        marker = f"anomaly/{DEVICE}/witness-ready"
        self._handle = self.out.open("w")
        self.process = subprocess.Popen(
            ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-v",
             "-t", f"anomaly/{DEVICE}/#"], stdout=self._handle, stderr=subprocess.STDOUT)
        # The witness is ready once it receives a message published after it subscribed.
        deadline = time.monotonic() + WITNESS_READY_S
        while time.monotonic() < deadline:
            subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-t", marker,
                            "-m", "ready"], check=True, timeout=10)
            if any(line.startswith(marker) for line in self.lines()):
                return
            time.sleep(0.2)
        raise AssertionError("mosquitto_sub did not come up")

    def lines(self) -> list[str]:
        self._handle.flush()
        return self.out.read_text().splitlines()

    def payloads(self, suffix: str) -> list[dict]:
        found = []
        for line in self.lines():
            topic, _, payload = line.partition(" ")
            if topic.endswith(suffix):
                found.append(json.loads(payload))
        return found

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        self._handle.close()


def _edge(*args: str) -> list[str]:
    return [sys.executable, "-m", "edge", *args]


def _expected_events(tmp_path: Path, scene: LineScene, frame_ids: list[str],
                     frames: Path) -> list[tuple[str, str, str, float]]:
    """What the laptop predicts: ``edge score`` on every well crop, then k=1 of n=1 decisions."""
    crops_dir = tmp_path / "crops"
    crops_dir.mkdir()
    order = []
    for frame_id in frame_ids:
        with Image.open(frames / f"{frame_id}.png") as image:
            pixels = np.asarray(image)
        for well, crop in well_crops(scene, pixels).items():
            path = crops_dir / f"{frame_id}__{well}.png"
            Image.fromarray(crop).save(path)
            order.append((frame_id, well, path))
    result = subprocess.run(_edge("score", str(BUNDLE), *[str(p) for _, _, p in order], "--json"),
                            capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=True)
    scores = {json.loads(line)["path"]: json.loads(line) for line in result.stdout.splitlines()}
    expected = []
    state = dict.fromkeys((well for _, well, _ in order), "ok")
    for frame_id, well, path in order:
        line = scores[str(path)]
        new = line["state"]
        if new == "anomaly" or state[well] == "anomaly":
            expected.append((frame_id, well, new, line["score"]))
        state[well] = new
    return expected


@pytest.fixture
def line(tmp_path: Path) -> tuple[LineScene, list[str], Path]:
    if shutil.which("mosquitto_sub") is None:
        reason = "mosquitto-clients is not installed (scripts/test.sh installs it)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    scene = LineScene(SceneConfig(), seed=42)
    frames = tmp_path / "frames"
    return scene, _write_line(frames, scene), frames


def test_replay_delivers_exactly_the_events_the_laptop_predicts(
        tmp_path: Path, line: tuple[LineScene, list[str], Path], mqtt_broker) -> None:
    scene, frame_ids, frames = line
    expected = _expected_events(tmp_path, scene, frame_ids, frames)
    witness = Witness(mqtt_broker.port, tmp_path)
    try:
        config = _write_config(tmp_path / "device.toml", frames, mqtt_broker.port, scene.config)
        run = subprocess.run(_edge("run", "--config", str(config)), capture_output=True,
                             text=True, timeout=RUN_TIMEOUT_S)
        assert run.returncode == 0, run.stderr
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(
                p["status"] == "offline" for p in witness.payloads("/status")):
            time.sleep(0.1)
        events = witness.payloads("/events")
    finally:
        witness.stop()
    received = [(e["frame_id"], e["crop"], e["state"], e["score"]) for e in events]
    assert [r[:3] for r in received] == [e[:3] for e in expected]
    for got, want in zip(received, expected, strict=True):
        assert got[3] == pytest.approx(want[3], rel=1e-9, abs=1e-12)
    flagged = {(f, c) for f, c, s, _ in received if s == "anomaly"}
    for frame_id, force in zip(frame_ids, FORCED, strict=True):
        for well in force:
            assert (frame_id, well) in flagged, f"{force[well]} in {well} of {frame_id} missed"
    assert [e["seq"] for e in events] == sorted({e["seq"] for e in events})
    assert {e["bundle"]["name"] for e in events} == {"demo-wells"}


def test_kill_9_of_the_edge_process_leaves_retained_offline(
        tmp_path: Path, line: tuple[LineScene, list[str], Path], mqtt_broker) -> None:
    scene, _, frames = line
    witness = Witness(mqtt_broker.port, tmp_path)
    config = _write_config(tmp_path / "device.toml", frames, mqtt_broker.port, scene.config,
                           loop=True)
    process = subprocess.Popen(_edge("run", "--config", str(config)), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=dict(os.environ))
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not witness.payloads("/stats"):
            time.sleep(0.1)
        assert witness.payloads("/stats"), "the edge never published stats"
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
        witness.stop()
    # A new client sees the retained status the broker set from the Last Will.
    retained = subprocess.run(
        ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(mqtt_broker.port), "-C", "1", "-W", "10",
         "-t", f"anomaly/{DEVICE}/status"], capture_output=True, text=True, timeout=20)
    assert json.loads(retained.stdout)["status"] == "offline"
