"""The device config for replaying a synthetic line: the grid layout matches the scene's wells.

Used by the demo, the benchmarks and the end-to-end tests, so that all of them run the edge
exactly as a device on this line would be configured (firmware_config/demo-line.toml).
"""

from __future__ import annotations

from pathlib import Path

from linesim.scene import SceneConfig


def replay_config_toml(*, device_id: str, bundle: Path, frames: Path, port: int, spool: Path,
                       scene: SceneConfig | None = None, fps: float = 0.0, loop: bool = False,
                       prefix: str = "anomaly", threads: int = 2,
                       stats_interval_s: float = 10.0, log_level: str = "INFO") -> str:
    """TOML text of a device that replays ``frames`` (a folder) to a broker on 127.0.0.1."""
    scene = scene or SceneConfig()
    x, y, w, h = scene.region
    return f"""# Replay of a synthetic casting line (linesim); see firmware_config/demo-line.toml.
device_id = "{device_id}"
bundle = "{bundle}"

[scorer]
backend = "litert"
num_threads = {threads}

[source]
kind = "folder"
path = "{frames}"
fps = {fps}
loop = {str(loop).lower()}

[layout.grid]
region = [{x}, {y}, {w}, {h}]
rows = {scene.rows}
cols = {scene.cols}

[decision]
k = 1
n = 1

[mqtt]
host = "127.0.0.1"
port = {port}
prefix = "{prefix}"
stats_interval_s = {stats_interval_s}

[mqtt.spool]
path = "{spool}"

[logging]
level = "{log_level}"
"""
