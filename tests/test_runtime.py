"""The pipeline end to end: real PNG replays, the real int8 interpreter, real decisions.

Most tests hand the runtime a recording stand-in for the publisher (same methods as
edge.publish.mqtt.MqttPublisher) to look at exactly what the pipeline decided; the tests marked
``broker`` run the real publisher against a real Mosquitto, in-process and as the ``edge`` CLI.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
from runtime_support import RecorderPublisher, config_text, write_frames

from edge.cli import main as cli_main
from edge.config import load_config
from edge.errors import ConfigError, PublishError, SourceError
from edge.metrics import END, FrameQueue
from edge.publish.payloads import load_schema
from edge.runtime import Runtime
from edge.sources import Source
from edge.types import Frame

REPO = Path(__file__).resolve().parents[1]
EDGE = [sys.executable, "-m", "edge"]


def make_runtime(tmp_path: Path, bundle: Path, frames: list[tuple[tuple[int, int], ...]],
                 **config_kwargs: str) -> tuple[Runtime, RecorderPublisher]:
    write_frames(tmp_path / "frames", frames)
    path = tmp_path / "device.toml"
    path.write_text(config_text(bundle, "frames", **config_kwargs), encoding="utf-8")
    recorder: dict[str, RecorderPublisher] = {}

    def factory(*args: Any) -> RecorderPublisher:
        recorder["publisher"] = RecorderPublisher(*args)
        return recorder["publisher"]

    runtime = Runtime(load_config(path), publisher_factory=factory)
    return runtime, recorder["publisher"]


def test_replay_decides_events_states_and_stats(tmp_path, runtime_bundle, caplog):
    runtime, publisher = make_runtime(tmp_path, runtime_bundle,
                                      [(), ((0, 1),), (), ((1, 2), (0, 0)), ()])
    (tmp_path / "frames" / "frame_002b.png").write_bytes(b"\x89PNG broken")
    calls = []
    real_score = runtime.scorer.score
    runtime.scorer.score = lambda batch: calls.append(batch.shape) or real_score(batch)

    assert runtime.run() == 0

    assert calls == [(6, 16, 16, 1)] * 5  # ONE batched score call per frame
    summary = [(e.frame_id, e.crop, e.state, e.previous_state) for e in publisher.events]
    assert summary == [
        ("frame_001", "r0c1", "anomaly", "ok"),
        ("frame_002", "r0c1", "ok", "anomaly"),
        ("frame_003", "r0c0", "anomaly", "ok"),
        ("frame_003", "r1c2", "anomaly", "ok"),
        ("frame_004", "r0c0", "ok", "anomaly"),
        ("frame_004", "r1c2", "ok", "anomaly"),
    ]
    first = publisher.events[0]
    assert first.device_id == "line-1" and first.box == [32, 12, 16, 16]
    assert first.score > 0.002 and first.score_z is not None
    assert first.threshold == {"high": 0.002, "low": None, "source": "bundle", "rule": "max"}
    assert first.bundle == {"name": "tiny-wells", "sha256": runtime.bundle.sha256}
    # Retained state: every crop on the first frame, then each change.
    assert [c for c, _ in publisher.states[:6]] == ["r0c0", "r0c1", "r0c2", "r1c0", "r1c1",
                                                    "r1c2"]
    assert len(publisher.states) == 6 + 6
    assert publisher.states[6] == ("r0c1", publisher.states[6][1])
    assert publisher.states[6][1]["state"] == "anomaly"
    final = publisher.stats[-1]
    assert final["frames"] == 5 and final["corrupt_frames"] == 1
    assert final["dropped_frames"] == 0 and final["source_errors"] == 0
    assert set(final["latency_ms"]) == {"capture", "preprocess", "score", "decide", "publish"}
    assert final["latency_ms"]["score"]["p50"] > 0
    assert publisher.calls == ["start", "flush", "close"]
    assert publisher.statuses == []  # never degraded
    assert "frame_002b.png" in caplog.text


def test_max_frames_stops_a_looping_replay(tmp_path, runtime_bundle):
    runtime, publisher = make_runtime(tmp_path, runtime_bundle, [(), ((0, 0),)],
                                      source_extra="loop = true")
    runtime.max_frames = 7
    assert runtime.run() == 0
    assert runtime.frames_processed == 7
    # frames 1, 3, 5 (0-based) are anomalous, each followed by an ok transition.
    assert [e.state for e in publisher.events] == ["anomaly", "ok"] * 3
    assert publisher.calls[-2:] == ["flush", "close"]


def test_box_outside_the_first_frame_stops_with_a_config_error(tmp_path, runtime_bundle):
    runtime, publisher = make_runtime(
        tmp_path, runtime_bundle, [()],
        layout_extra='\n[[layout.boxes]]\nname = "label"\nbox = [70, 50, 20, 20]')
    with pytest.raises(ConfigError, match=r"outside the 80×60 px frame: label \[70, 50, 20, 20\]"):
        runtime.run()
    assert publisher.calls[-1] == "close"


def test_a_refused_event_is_reported_and_the_run_goes_on(tmp_path, runtime_bundle, caplog):
    runtime, publisher = make_runtime(tmp_path, runtime_bundle, [((0, 0),), ((0, 1),), ()])
    real_submit = publisher.submit_event

    def disk_full_once(**fields: Any) -> Any:
        if fields["crop"] == "r0c0" and fields["state"] == "anomaly":
            raise PublishError("cannot write spool.db: database or disk is full")
        return real_submit(**fields)

    publisher.submit_event = disk_full_once  # type: ignore[method-assign]
    assert runtime.run() == 0
    assert [(e.crop, e.state) for e in publisher.events] == [
        ("r0c0", "ok"), ("r0c1", "anomaly"), ("r0c1", "ok")]
    assert publisher.stats[-1]["events_failed"] == 1
    assert publisher.statuses == [
        ("degraded", "event spool refused an event: cannot write spool.db: database or disk "
                     "is full"),
        ("online", None)]
    assert "event for crop r0c0 of frame frame_000 NOT stored" in caplog.text
    state_r0c1 = [p for c, p in publisher.states if c == "r0c1"][1]
    assert state_r0c1["state"] == "anomaly" and state_r0c1["event_id"] == "id-1"


def test_denied_delivery_is_degraded_and_a_spool_read_error_does_not_end_the_run(
        tmp_path, runtime_bundle, caplog):
    runtime, publisher = make_runtime(tmp_path, runtime_bundle, [((0, 0),), ()],
                                      mqtt="stats_interval_s = 0.01")
    denied = "broker refused event seq 1 on 'anomaly/line-1/events': Not authorized"

    def unreadable_spool() -> int:
        raise PublishError("event spool read failed at 'spool.db': disk I/O error")

    publisher.delivery_problem = lambda: denied  # type: ignore[method-assign]
    publisher.spool_depth = unreadable_spool  # type: ignore[method-assign]
    assert runtime.run() == 0  # the stats' spool read raised out of run() before the fix
    assert publisher.statuses == [("degraded", denied)]
    assert publisher.stats and all(s["spool_depth"] is None for s in publisher.stats)
    assert "cannot read the event spool depth" in caplog.text


class StallingSource(Source):
    """Two frames with a pause between them longer than the stall timeout; then the end."""

    kind = "stalling"

    def __init__(self, image: np.ndarray, pause_s: float, fail_first: bool = False) -> None:
        super().__init__(None)
        self.image, self.pause_s, self.fail_first = image, pause_s, fail_first
        self.opened = 0

    def describe(self) -> str:
        return "stalling test source"

    def open(self) -> None:
        self.opened += 1
        if self.fail_first and self.opened == 1:
            raise SourceError("USB camera unplugged")

    def frames(self):
        yield Frame("a", time.time(), self.image)
        if self.pause_s:
            time.sleep(self.pause_s)
        yield Frame("b", time.time(), self.image)


def swap_source(runtime: Runtime, source: Source) -> None:
    runtime.source = source
    runtime.retrying.source = source


def test_stall_sets_degraded_then_online(tmp_path, runtime_bundle):
    runtime, publisher = make_runtime(tmp_path, runtime_bundle, [()],
                                      source_extra="stall_timeout_s = 0.3")
    image = np.full((60, 80), 120, np.uint8)
    swap_source(runtime, StallingSource(image, pause_s=1.0))
    assert runtime.run() == 0
    assert [s for s, _ in publisher.statuses] == ["degraded", "online"]
    reason = publisher.statuses[0][1]
    assert reason == "no frames from stalling test source for more than 0.3 s"


def test_failing_source_is_retried_and_reported_as_degraded(tmp_path, runtime_bundle):
    runtime, publisher = make_runtime(tmp_path, runtime_bundle, [()],
                                      source_extra="retry_initial_s = 0.6")
    swap_source(runtime, StallingSource(np.full((60, 80), 120, np.uint8), 0, fail_first=True))
    assert runtime.run() == 0
    assert publisher.statuses[0] == ("degraded", "source error: USB camera unplugged")
    assert publisher.statuses[-1] == ("online", None)
    assert runtime.frames_processed == 2 and publisher.stats[-1]["source_errors"] == 1


def test_frame_queue_drops_the_oldest_for_live_sources_and_waits_for_replays():
    stop = threading.Event()
    queue = FrameQueue(2)
    frames = [Frame(str(i), 0.0, np.zeros((8, 8), np.uint8)) for i in range(4)]
    for frame in frames:
        queue.put(frame, drop_oldest=True, stop=stop)
    assert queue.dropped == 2 and queue.depth() == 2
    assert [queue.get(0.1).id for _ in range(2)] == ["2", "3"]  # type: ignore[union-attr]
    assert queue.get(0.01) is None
    queue.put(frames[0], drop_oldest=False, stop=stop)
    queue.put(frames[1], drop_oldest=False, stop=stop)
    waiter = threading.Thread(target=queue.put, args=(frames[2],),
                              kwargs={"drop_oldest": False, "stop": stop})
    waiter.start()
    time.sleep(0.2)
    assert waiter.is_alive() and queue.dropped == 2  # a replay waits for room, drops nothing
    assert queue.get(0.1) is frames[0]
    waiter.join(1.0)
    queue.close()
    assert [queue.get(0.1) for _ in range(3)] == [frames[1], frames[2], END]


# ----------------------------------------------------------------------- --validate-config


def write_config(tmp_path: Path, bundle: Path, **kwargs: str) -> Path:
    write_frames(tmp_path / "frames", [()])
    path = tmp_path / "device.toml"
    path.write_text(config_text(bundle, "frames", **kwargs), encoding="utf-8")
    return path


SECRET = "s3cr3t-Value-9f2c"
AUTH = ('[mqtt.auth]\nusername_env = "EDGE_TEST_MQTT_USER"\n'
        'password_env = "EDGE_TEST_MQTT_PASSWORD"')


def test_validate_config_ok_never_prints_a_secret(tmp_path, runtime_bundle, monkeypatch, capsys):
    monkeypatch.setenv("EDGE_TEST_MQTT_USER", "edge-user-7")
    monkeypatch.setenv("EDGE_TEST_MQTT_PASSWORD", SECRET)
    path = write_config(tmp_path, runtime_bundle, mqtt=AUTH)
    assert cli_main(["run", "--config", str(path), "--validate-config"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("config OK:")
    assert "bundle tiny-wells" in out and "6 crops scored" in out and "80×60" in out
    assert "password from $EDGE_TEST_MQTT_PASSWORD" in out
    assert SECRET not in out + err and "edge-user-7" not in out + err


def test_validate_config_lists_problems_and_exits_1(tmp_path, runtime_bundle, monkeypatch,
                                                   capsys):
    monkeypatch.delenv("EDGE_TEST_MQTT_USER", raising=False)
    monkeypatch.setenv("EDGE_TEST_MQTT_PASSWORD", SECRET)
    path = write_config(tmp_path, runtime_bundle, mqtt=AUTH,
                        layout_extra='\n[[layout.boxes]]\nname = "label"\nbox = [70, 50, 20, 20]')
    assert cli_main(["run", "--config", str(path), "--validate-config"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "config INVALID" in err and "2 problems" in err
    assert "label [70, 50, 20, 20]" in err and "EDGE_TEST_MQTT_USER" in err
    assert SECRET not in err

    path.write_text(path.read_text() + "\nbogus = 1\n")
    assert cli_main(["run", "--config", str(path), "--validate-config"]) == 1
    assert "bogus: unknown key" in capsys.readouterr().err


def test_validate_config_names_a_replay_folder_or_video_that_is_not_there(
        tmp_path, runtime_bundle, capsys):
    path = write_config(tmp_path, runtime_bundle)
    text = path.read_text()
    cases = [("frames", "missing", "is not a folder (found nothing there)"),
             ("frames", "empty", "holds no images"),
             ('kind = "folder"\npath = "frames"', 'kind = "opencv"\npath = "line.mp4"',
              "no video file at")]
    (tmp_path / "empty").mkdir()
    for old, new, expected in cases:
        path.write_text(text.replace(old, new, 1))
        assert cli_main(["run", "--config", str(path), "--validate-config"]) == 1
        err = capsys.readouterr().err
        assert "source.path" in err and expected in err, err


@pytest.mark.parametrize("threads", ["0", "-2", "two", "65"])
def test_edge_score_with_a_thread_count_out_of_range_is_a_usage_error(runtime_bundle, capsys,
                                                                      threads):
    with pytest.raises(SystemExit) as caught:
        cli_main(["score", str(runtime_bundle), "frame.png", "--threads", threads])
    assert caught.value.code == 2
    assert "give a whole number from 1 to 64" in capsys.readouterr().err


def test_validate_config_checks_the_bundle_hash(tmp_path, runtime_bundle, capsys):
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(runtime_bundle, bundle)
    with (bundle / "model.tflite").open("ab") as handle:
        handle.write(b"\0")
    path = write_config(tmp_path, bundle)
    assert cli_main(["run", "--config", str(path), "--validate-config"]) == 1
    assert "sha256" in capsys.readouterr().err


# ----------------------------------------------------------------------- real broker, real CLI


def edge_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO)
    return env


@pytest.mark.broker
def test_cli_replay_publishes_to_a_real_broker_and_exits_0(tmp_path, runtime_bundle,
                                                           mqtt_broker, mqtt_subscriber_factory):
    write_frames(tmp_path / "frames", [(), ((0, 1),), (), ((1, 1),)])
    path = tmp_path / "device.toml"
    path.write_text(config_text(runtime_bundle, "frames", device_id="e2e-1",
                                mqtt=f"port = {mqtt_broker.port}\nprefix = \"t\""))
    subscriber = mqtt_subscriber_factory(mqtt_broker, ["t/e2e-1/#"])
    result = subprocess.run([*EDGE, "run", "--config", str(path)], env=edge_env(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert subscriber.wait_for(lambda msgs: any(
        m.topic == "t/e2e-1/status" and m.json()["status"] == "offline" for m in msgs), 10)
    events = [m.json() for m in subscriber.on_topic("/events")]
    assert [(e["frame_id"], e["crop"], e["state"]) for e in events] == [
        ("frame_001", "r0c1", "anomaly"), ("frame_002", "r0c1", "ok"),
        ("frame_003", "r1c1", "anomaly")]
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    states = {m.topic.split("/")[3]: m.json() for m in subscriber.on_topic("/state")}
    assert len(states) == 6 and states["r1c1"]["state"] == "anomaly"
    assert states["r1c1"]["event_id"] == events[2]["event_id"]
    # What the runtime put on the wire matches the published contract (edge/schemas).
    for name, payloads in (("event", events), ("state", list(states.values())),
                           ("stats", [m.json() for m in subscriber.on_topic("/stats")]),
                           ("status", [m.json() for m in subscriber.on_topic("/status")])):
        for payload in payloads:
            jsonschema.validate(payload, load_schema(name))
    assert (tmp_path / "spool.db").exists()  # relative spool path → next to the config


@pytest.mark.broker
def test_sigterm_stops_cleanly_and_publishes_offline(tmp_path, runtime_bundle, mqtt_broker,
                                                     mqtt_subscriber_factory):
    write_frames(tmp_path / "frames", [(), ((0, 2),)])
    path = tmp_path / "device.toml"
    path.write_text(config_text(runtime_bundle, "frames", device_id="sig-1",
                                source_extra="loop = true\nfps = 20",
                                mqtt=f"port = {mqtt_broker.port}\nstats_interval_s = 0.5"))
    subscriber = mqtt_subscriber_factory(mqtt_broker, ["anomaly/sig-1/#"])
    process = subprocess.Popen([*EDGE, "run", "--config", str(path)], env=edge_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert subscriber.wait_for(lambda msgs: sum(m.topic.endswith("/stats")
                                                    for m in msgs) >= 2, 30)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert "signal SIGTERM received" in stderr
    assert subscriber.wait_for(lambda msgs: any(
        m.topic.endswith("/status") and m.json()["status"] == "offline" for m in msgs), 10)
    stats = subscriber.on_topic("/stats")[-1].json()
    assert stats["fps"] > 5 and stats["frames"] >= 5
    assert stats["latency_ms"]["score"]["p99"] is not None
    assert len(subscriber.on_topic("/events")) >= 2


def test_a_frame_of_another_size_is_skipped_and_counted(tmp_path, runtime_bundle, caplog):
    from PIL import Image

    runtime, publisher = make_runtime(tmp_path, runtime_bundle, [(), ()])
    Image.new("L", (100, 60), 120).save(tmp_path / "frames" / "frame_000b.png")
    assert runtime.run() == 0
    # Skipped frames are not "processed", and the device says it is not healthy meanwhile.
    assert runtime.frames_processed == 2 and runtime.frame_size_errors == 1
    assert publisher.stats[-1]["frame_size_errors"] == 1
    assert "frame frame_000b skipped: frames are 100×60 px but the layout was checked against " \
           "80×60; nothing is scored" in caplog.text
    statuses = [status for status, _ in publisher.statuses]
    assert statuses == ["degraded", "online"], publisher.statuses


def test_json_logging_and_max_frames_must_be_positive(tmp_path, runtime_bundle, capsys):
    import json
    import logging

    from edge.config import LoggingConfig
    from edge.validate import setup_logging

    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    try:
        setup_logging(LoggingConfig(level="DEBUG", format="json"))
        logging.getLogger("edge.test").info("hello %s", "world")
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert json.loads(line)["message"] == "hello world"
        assert root.level == logging.DEBUG
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    path = write_config(tmp_path, runtime_bundle)
    assert cli_main(["run", "--config", str(path), "--max-frames", "0"]) == 2
    assert "--max-frames is 0" in capsys.readouterr().err
