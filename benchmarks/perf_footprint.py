"""Benchmark 3: footprint of the edge process — memory, start-up, installed size, no TensorFlow.

    python benchmarks/perf_footprint.py [--quick] [--work DIR] [--fresh-venv]

Everything runs from a throwaway venv made with ``pip install '<repo>[edge]'`` (what a device
installs), never from the project venv that also holds TensorFlow:

- **installed size**: the venv's site-packages, in total and per distribution;
- **peak RSS** of ``edge run`` over the line replay (batch-1 and batch-24 interpreters, 2 threads,
  real Mosquitto), read by the process itself at exit (``ru_maxrss``), with the list of
  TensorFlow / Keras / trainer modules it had loaded (must be empty);
- **start to first message**: from launching ``edge run`` to the first MQTT message an independent
  subscriber receives (the retained ``online`` status), to the first per-crop state (the first
  frame decided) and the first event, over several starts. The page cache is warm after the first
  start: these are process cold starts, not cold boots.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import perf_common as common

TARGET_RSS_MB = 100.0
TARGET_START_S = 1.0
STARTS, QUICK_STARTS = 5, 2
RSS_FRAMES, QUICK_RSS_FRAMES = 600, 150
START_FRAMES = 20  # --max-frames of a start-up measurement
FIRST_MESSAGE_TIMEOUT_S = 60.0
BYTES_PER_MB = 1024.0 * 1024.0
KB_PER_MB = 1024.0
FORBIDDEN = ("tensorflow", "keras", "tf_keras", "trainer", "jax", "torch")
TOP_DISTRIBUTIONS = 6
DISTRIBUTION_OF = {"pil": "pillow"}  # import name → distribution, where they differ

# Runs inside the edge venv: `edge run` with an exit hook that reports peak RSS and modules.
WRAPPER = f"""
import atexit, json, resource, sys
out = sys.argv.pop(1)
def report():
    loaded = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})
    with open(out, 'w') as handle:
        json.dump({{"maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                   "forbidden_modules": loaded, "modules": len(sys.modules)}}, handle)
atexit.register(report)
from edge.cli import main
sys.exit(main(sys.argv[1:]))
"""


def edge_venv(work: Path, fresh: bool) -> Path:
    """A venv with only ``.[edge]`` installed (re-made with ``fresh``); returns its python."""
    venv = work / "edge-venv"
    if fresh:
        shutil.rmtree(venv, ignore_errors=True)
    problem = common.make_venv(venv, [f"{common.ROOT}[edge]"])
    if problem:
        raise SystemExit(f"cannot build the [edge] venv: {problem}")
    return venv / "bin" / "python"


def installed_size(python: Path) -> dict[str, Any]:
    """Bytes under site-packages, in total and per top-level entry, and whether TF is there."""
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; "
                                "print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    sizes: dict[str, int] = {}
    for entry in site.iterdir():
        files = [entry] if entry.is_file() else [p for p in entry.rglob("*") if p.is_file()]
        name = entry.name.split("-")[0].split(".")[0].lower()
        name = DISTRIBUTION_OF.get(name, name)
        sizes[name] = sizes.get(name, 0) + sum(p.stat().st_size for p in files)
    tooling = sum(v for k, v in sizes.items() if k in ("pip", "setuptools", "_distutils_hack"))
    return {"site_packages": str(site), "total_bytes": sum(sizes.values()),
            "without_pip_bytes": sum(sizes.values()) - tooling,
            "largest": sorted(sizes.items(), key=lambda kv: -kv[1])[:TOP_DISTRIBUTIONS],
            "tensorflow_installed": any(k.startswith("tensorflow") for k in sizes)}


def config_file(folder: Path, bundle: Path, replay: Path, port: int, device_id: str) -> Path:
    from linesim.device import replay_config_toml

    path = folder / f"{device_id}.toml"
    path.write_text(replay_config_toml(device_id=device_id, bundle=bundle, frames=replay,
                                       port=port, spool=folder / f"{device_id}.db",
                                       log_level="WARNING"), encoding="utf-8")
    return path


def run_edge(python: Path, config: Path, report: Path, max_frames: int | None) -> dict[str, Any]:
    extra = ["--max-frames", str(max_frames)] if max_frames else []
    done = subprocess.run([str(python), "-c", WRAPPER, str(report), "run", "--config",
                           str(config), *extra], capture_output=True, text=True, check=False,
                          cwd=config.parent)
    if done.returncode != 0:
        raise SystemExit(f"edge run failed ({done.returncode}): {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(report.read_text())
    return result


def first_messages(python: Path, config: Path, port: int, device_id: str,
                   report: Path) -> dict[str, float]:
    """Seconds from launching ``edge run`` to its first status, crop state and event."""
    seen: dict[str, float] = {}
    lock = threading.Lock()
    ready = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"witness-{device_id}")

    def on_subscribe(*_: Any) -> None:
        ready.set()

    def on_message(c: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        kind = message.topic.split("/")[2]
        with lock:
            seen.setdefault("first message", time.perf_counter())
            seen.setdefault({"status": "status", "crops": "first crop state",
                             "events": "first event"}.get(kind, kind), time.perf_counter())

    client.on_connect = lambda c, *_: c.subscribe(f"anomaly/{device_id}/#", qos=1)
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.loop_start()
    ready.wait(FIRST_MESSAGE_TIMEOUT_S)
    started = time.perf_counter()
    run_edge(python, config, report, START_FRAMES)
    time.sleep(0.2)
    client.loop_stop()
    client.disconnect()
    return {k: v - started for k, v in seen.items()}


def main(argv: Sequence[str] | None = None) -> int:
    from linesim.broker import LocalBroker

    cli = common.parser(__doc__ or "")
    cli.add_argument("--fresh-venv", action="store_true",
                     help="re-install the [edge] venv (always done without --quick)")
    args = cli.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    bundle = common.ensure_bundle(args.work, args.quick, args.bundle)
    frames = QUICK_RSS_FRAMES if args.quick else RSS_FRAMES
    replay = common.ensure_replay(args.work, frames)
    started = time.perf_counter()
    python = edge_venv(args.work, args.fresh_venv or not args.quick)
    install_s = time.perf_counter() - started
    size = installed_size(python)
    folder = args.work / "footprint"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    starts: list[dict[str, float]] = []
    with LocalBroker() as broker:
        run = run_edge(python, config_file(folder, bundle, replay, broker.port, "perf-rss"),
                       folder / "rss.json", None)
        for index in range(QUICK_STARTS if args.quick else STARTS):
            device = f"perf-start-{index}"
            starts.append(first_messages(python, config_file(
                folder, bundle, replay, broker.port, device), broker.port, device,
                folder / f"{device}.json"))
    rss_mb = run["maxrss_kb"] / KB_PER_MB
    kinds = ("first message", "first crop state", "first event")
    start_median = {k: float(np.median([s[k] for s in starts if k in s])) for k in kinds}
    rows = [
        ["peak RSS of `edge run` (" + str(frames) + " frames)", f"{rss_mb:.1f} MB",
         f"≤ {TARGET_RSS_MB:g} MB", "met" if rss_mb <= TARGET_RSS_MB else "NOT met"],
        ["TensorFlow / Keras / trainer modules loaded", ", ".join(run["forbidden_modules"])
         or "none", "none", "met" if not run["forbidden_modules"] else "NOT met"],
    ]
    for kind in kinds:
        value = start_median[kind]
        target = f"≤ {TARGET_START_S:g} s" if kind == "first message" else "–"
        verdict = ("met" if value <= TARGET_START_S else "NOT met") if target != "–" else "–"
        rows.append([f"launch → {kind} (median of {len(starts)})", f"{value:.2f} s", target,
                     verdict])
    rows.append(["installed size of `.[edge]` (site-packages)",
                 f"{size['total_bytes'] / BYTES_PER_MB:.0f} MB "
                 f"({size['without_pip_bytes'] / BYTES_PER_MB:.0f} MB without pip)", "–",
                 "TensorFlow installed: " + ("yes" if size["tensorflow_installed"] else "no")])
    largest = ", ".join(f"{name} {n / BYTES_PER_MB:.1f} MB" for name, n in size["largest"])
    notes = [f"largest in site-packages: {largest}",
             "per start (s): " + "; ".join(
                 ", ".join(f"{k} {v:.2f}" for k, v in sorted(s.items(), key=lambda kv: kv[1]))
                 for s in starts),
             f"the [edge] venv took {install_s:.0f} s to build; the edge process loaded "
             f"{run['modules']} Python modules"]
    common.report("footprint", "Footprint of the edge process (venv with only .[edge])",
                  ["what", "measured", "target", "verdict"], rows,
                  {"rss": run, "rss_mb": rss_mb, "starts": starts, "start_median_s": start_median,
                   "installed": size}, args.quick, notes, work=args.work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
