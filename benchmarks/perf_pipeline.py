"""Benchmark 2: the whole edge pipeline on the synthetic line replay, against bare invokes.

    python benchmarks/perf_pipeline.py [--quick] [--work DIR]

A pipeline pass is ``edge run`` in-process (``edge.runtime.Runtime``, the demo's config: 4 × 6
wells, k = 1 of n = 1, batch-24 model, 2 threads) over a replay folder of linesim trays, as fast
as it goes: PNG decode (capture thread) → crops → score → decide → publish, with events going
through the durable spool to a real Mosquitto on a free port (``linesim.broker.LocalBroker``)
and counted by an independent subscriber (``mosquitto_sub``, its own process).

The reference is the bare batched invoke of the same model on the same crops (prepared and
quantized beforehand: ``set_tensor`` + ``invoke`` only), and ``Scorer.score`` on them. Rounds
interleave the three, in a shuffled order; throughputs are medians over rounds and the ratio is
pipeline crops/s ÷ bare crops/s from this run. Frames/s counts from the first frame taken up to
the last frame decided (start-up and the final flush are reported apart).
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import perf_common as common

DEVICE_ID = "perf-line"
PREFIX = "anomaly"
THREAD_COUNTS = (1, 2)  # interpreter threads: each is compared with a bare invoke of its own
FRAMES, QUICK_FRAMES = 600, 150
ROUNDS, QUICK_ROUNDS = 3, 2
TARGET_RATIO = 0.90  # pipeline throughput at least this share of bare batched invoke throughput
SUBSCRIBER_QUIET_S = 1.0  # the witness is done when nothing arrives for this long
SUBSCRIBER_WAIT_S = 30.0
SUBSCRIBE_WAIT_S = 0.5  # time given to mosquitto_sub to connect and subscribe
MOSQUITTO_SUB = shutil.which("mosquitto_sub") or "/usr/bin/mosquitto_sub"
STAGES = ("capture", "preprocess", "score", "decide", "publish")
# Thread names (up to the first '-') → what the per-thread CPU table calls them.
THREAD_LABELS = {"capture": "capture (decode + crops)", "event": "event writer",
                 "mqtt": "MQTT event sender", "paho": "paho network loop"}


def _config_text(bundle: Path, replay: Path, port: int, spool: Path, threads: int) -> str:
    from linesim.device import replay_config_toml

    return replay_config_toml(device_id=DEVICE_ID, bundle=bundle, frames=replay, port=port,
                              spool=spool, prefix=PREFIX, threads=threads)


class Witness:
    """An independent subscriber in its own process (``mosquitto_sub``) counting what the device
    published, so that it takes no time from the pipeline's process."""

    def __init__(self, port: int, log: Path) -> None:
        self.log = log
        self.handle = log.open("wb")
        self.process = subprocess.Popen(
            [MOSQUITTO_SUB, "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-v",
             "-i", f"perf-witness-{log.parent.name}", "-t", f"{PREFIX}/{DEVICE_ID}/#"],
            stdout=self.handle, stderr=subprocess.STDOUT)
        time.sleep(SUBSCRIBE_WAIT_S)

    def settle(self) -> dict[str, int]:
        """Wait until nothing has arrived for SUBSCRIBER_QUIET_S; count messages per topic kind."""
        deadline = time.monotonic() + SUBSCRIBER_WAIT_S
        size, quiet_since = -1, time.monotonic()
        while time.monotonic() < deadline:
            now_size = self.log.stat().st_size
            if now_size != size:
                size, quiet_since = now_size, time.monotonic()
            elif time.monotonic() - quiet_since >= SUBSCRIBER_QUIET_S:
                break
            time.sleep(0.05)
        self.process.terminate()
        self.process.wait()
        self.handle.close()
        counts: dict[str, int] = {}
        for line in self.log.read_text(encoding="utf-8", errors="replace").splitlines():
            parts = line.split(" ", 1)[0].split("/")
            if len(parts) > 2:
                counts[parts[2]] = counts.get(parts[2], 0) + 1
        return counts


def pipeline_pass(bundle: Path, replay: Path, broker: Any, work: Path, name: str,
                  threads: int) -> dict[str, Any]:
    """One ``edge run`` over the replay; frames/s, crops/s, stage latencies, messages seen, and
    the CPU time per frame of this process, the broker and the witness."""
    from edge.config import load_config
    from edge.runtime import Runtime, Taken

    class TimedRuntime(Runtime):
        first_at: float | None = None
        last_at = 0.0
        first_cpu = last_cpu = 0.0  # the processing thread's own CPU, first to last frame

        def _process(self, taken: Taken) -> bool:
            if self.first_at is None:
                self.first_at, self.first_cpu = time.perf_counter(), time.thread_time()
            processed = super()._process(taken)
            self.last_at, self.last_cpu = time.perf_counter(), time.thread_time()
            return processed

    folder = work / "pipeline" / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    config = folder / "perf-line.toml"
    config.write_text(_config_text(bundle, replay, broker.port, folder / "spool.db", threads),
                      encoding="utf-8")
    witness = Witness(broker.port, folder / "witness.log")
    others = {"broker": broker.pid, "witness": witness.process.pid}
    cpu_before = {k: common.cpu_seconds(pid) for k, pid in others.items()}
    cpu_before["edge process"] = time.process_time()
    started = time.perf_counter()
    with common.ThreadCpu(THREAD_LABELS) as by_thread:
        runtime = TimedRuntime(load_config(config))
        waits = time_waits(runtime)
        runtime.run()
    ended = time.perf_counter()
    cpu = {k: common.cpu_seconds(pid) - cpu_before[k] for k, pid in others.items()}
    cpu["edge process"] = time.process_time() - cpu_before["edge process"]
    seen = witness.settle()
    assert runtime.first_at is not None
    busy = runtime.last_at - runtime.first_at
    frames = runtime.frames_processed
    crops = frames * len(runtime.layout.boxes)
    frame_ms = busy * common.MS_PER_S / frames
    return {"threads": threads, "frames": frames, "crops": crops, "seconds": busy,
            "frames_per_s": frames / busy, "crops_per_s": crops / busy,
            "startup_s": runtime.first_at - started, "flush_and_close_s": ended - runtime.last_at,
            "latency_ms": runtime.latency.summary_ms(), "messages": seen,
            "events_failed": runtime.writer.events_failed,
            "spool_groups": runtime.writer.groups_written,
            # From start-up to close, so a little more than the frames/s window.
            "cpu_ms_per_frame": {k: v * common.MS_PER_S / frames for k, v in cpu.items()},
            "edge_cpu_ms_per_frame_by_thread": _by_thread(by_thread.seconds, cpu["edge process"],
                                                          frames),
            # Where the processing loop's wall time went: on a CPU, waiting for a frame, or
            # neither (runnable, waiting for the GIL).
            "processing_cpu_share": (runtime.last_cpu - runtime.first_cpu) / busy,
            "frame_wait_share": waits["frame"] / busy, "writer_wait_share": waits["writer"] / busy,
            "cores_used": sum(cpu.values()) * common.MS_PER_S / frames / frame_ms}


def time_waits(runtime: Any) -> dict[str, float]:
    """Wall time the processing loop spends in ``queue.get`` (waiting for a frame from the
    capture thread) and ``writer.put`` (waiting for the event writer); instruments these two
    objects only, by wrapping their methods."""
    waits = {"frame": 0.0, "writer": 0.0}

    def timed(owner: Any, method: str, key: str) -> None:
        original = getattr(owner, method)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                waits[key] += time.perf_counter() - started

        setattr(owner, method, wrapper)

    timed(runtime.queue, "get", "frame")
    timed(runtime.writer, "put", "writer")
    return waits


def _by_thread(seconds: dict[str, float], process_s: float, frames: int) -> dict[str, float]:
    """Per-frame core-ms of each edge thread; "native" is what no Python thread accounts for."""
    shares = {name: s * common.MS_PER_S / frames for name, s in sorted(seconds.items())}
    shares["native (library threads)"] = max(
        0.0, (process_s - sum(seconds.values())) * common.MS_PER_S / frames)
    return shares


def prepared_batches(bundle: Path, replay: Path) -> tuple[list[np.ndarray], float]:
    """Every replay frame cut and prepared as the pipeline does; median decode time (s)."""
    from edge.bundle import load_bundle
    from edge.layout import Layout
    from edge.preprocess import load_image
    from edge.types import Box
    from linesim import SceneConfig

    scene = SceneConfig()
    spec = load_bundle(bundle).input
    layout = Layout([(scene.well_name(r, c), Box(*scene.well_box(r, c)))
                     for r in range(scene.rows) for c in range(scene.cols)])
    decode, batches = [], []
    for path in sorted(replay.glob("*.png")):
        start = time.perf_counter()
        image = load_image(path)
        decode.append(time.perf_counter() - start)
        batches.append(layout.batch(image, spec))
    return batches, float(np.median(decode))


def reference_pass(bundle: Path, batches: list[np.ndarray], threads: int) -> Any:
    """A closure timing one pass over all batches, alternating bare invoke and Scorer.score
    batch by batch (so that both see the same load); returns (bare, score) crops/s."""
    from edge.bundle import load_bundle
    from edge.scoring import Scorer

    size = len(batches[0])
    scorer = Scorer(load_bundle(bundle), num_threads=threads, batch_sizes=(size,))
    runner = scorer._runners[size]  # the same allocated interpreter the scorer uses
    quantized = [runner.input_lut[b] for b in batches]
    interpreter, index = runner.interpreter, runner.input_index

    def one_pass() -> tuple[float, float]:
        bare = score = 0.0
        for q, b in zip(quantized, batches, strict=True):
            start = time.perf_counter()
            interpreter.set_tensor(index, q)
            interpreter.invoke()
            middle = time.perf_counter()
            scorer.score(b)
            score += time.perf_counter() - middle
            bare += middle - start
        crops = len(batches) * size
        return crops / bare, crops / score

    one_pass()  # warm-up
    return one_pass


def stage_rows(run: dict[str, Any]) -> list[list[str]]:
    latency = run["latency_ms"]
    return [[f"  stage: {stage}", "", "", "", "", common.fmt(latency[stage]["p50"], 3),
             common.fmt(latency[stage]["p99"], 3)] for stage in STAGES if stage in latency]


def cpu_budget(run: dict[str, Any], bare_frames_per_s: float, threads: int,
               decode_ms: float) -> str:
    """Where the CPU time of a frame went, the ceiling that puts on the ratio, and what reaching
    the target would leave for the work that is neither the invoke nor the PNG decode."""
    cpu = run["cpu_ms_per_frame"]
    total = sum(cpu.values())
    cores = os.cpu_count() or 1
    # A bare invoke keeps ``threads`` cores busy for its whole duration.
    invoke = threads * common.MS_PER_S / bare_frames_per_s
    parts = ", ".join(f"{name} {value:.2f}" for name, value in cpu.items())
    edge = ", ".join(f"{name} {value:.2f}"
                     for name, value in run.get("edge_cpu_ms_per_frame_by_thread", {}).items())
    # The target frame rate, spread over every core, allows this much CPU per frame in all.
    budget = cores * common.MS_PER_S / (TARGET_RATIO * bare_frames_per_s)
    fixed = invoke + decode_ms + cpu.get("broker", 0.0) + cpu.get("witness", 0.0)
    left, rest = budget - fixed, total - fixed
    verdict = (f"{left:.2f} for everything else (crops, decisions, spool, MQTT; measured: "
               f"{rest:.2f})" if left > 0 else
               "nothing for everything else: no split of the work over threads or processes "
               "can meet it on this machine")
    return (f"{threads} thread(s), CPU per frame (core-ms): {parts} (edge process by thread: "
            f"{edge}); total {total:.2f}, of which "
            f"the bare invoke needs {invoke:.2f}. On {cores} cores the pipeline cannot "
            f"exceed {min(1.0, cores * invoke / threads / total):.0%} of bare "
            f"with this much CPU per frame (if all of it ran in parallel). "
            f"{TARGET_RATIO:.0%} of bare allows {budget:.2f} core-ms a frame on {cores} cores; "
            f"the invoke, the PNG decode ({decode_ms:.2f}), broker and witness take "
            f"{fixed:.2f} of it, leaving {verdict}")


def wait_note(run: dict[str, Any], threads: int, label: str) -> str:
    """Where the processing loop's wall time went: running, waiting for a frame or for the
    writer, or ready to run but not running (the GIL, or no free core)."""
    ready = 1.0 - run["processing_cpu_share"] - run["frame_wait_share"] - run["writer_wait_share"]
    return (f"{threads} thread(s), {label}: one frame every "
            f"{common.MS_PER_S / run['frames_per_s']:.2f} ms; the processing loop ran on a CPU "
            f"{run['processing_cpu_share']:.0%} of that time, waited for frames "
            f"{run['frame_wait_share']:.0%} and for the event writer "
            f"{run['writer_wait_share']:.0%}; the other {ready:.0%} it was ready but not running "
            f"(waiting for the GIL or a core: edge, broker and witness kept "
            f"{run['cores_used']:.2f} of {os.cpu_count()} cores busy)")


def main(argv: Sequence[str] | None = None) -> int:
    from linesim.broker import LocalBroker

    cli = common.parser(__doc__ or "")
    cli.add_argument("--threads", default=",".join(map(str, THREAD_COUNTS)),
                     help="interpreter thread counts to compare, e.g. 1,2")
    args = cli.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    args.work.mkdir(parents=True, exist_ok=True)
    threads = [int(t) for t in args.threads.split(",")]
    bundle = common.ensure_bundle(args.work, args.quick, args.bundle)
    frames, rounds = (QUICK_FRAMES, QUICK_ROUNDS) if args.quick else (FRAMES, ROUNDS)
    replays = {"line": common.ensure_replay(args.work, frames),
               "normal": common.ensure_replay(args.work, frames, normal_only=True)}
    batches, decode_s = prepared_batches(bundle, replays["line"])
    references = {t: reference_pass(bundle, batches, t) for t in threads}
    order = random.Random(0)
    bare: dict[int, list[float]] = {t: [] for t in threads}
    scored: dict[int, list[float]] = {t: [] for t in threads}
    passes: dict[str, list[dict[str, Any]]] = {f"{kind}-{t}": [] for kind in replays
                                               for t in threads}
    with LocalBroker() as broker:
        for round_no in range(rounds):
            jobs = [f"reference-{t}" for t in threads] + list(passes)
            order.shuffle(jobs)
            for job in jobs:
                kind, count = job.rsplit("-", 1)
                t = int(count)
                if kind == "reference":
                    b, sc = references[t]()
                    bare[t].append(b)
                    scored[t].append(sc)
                else:
                    passes[job].append(pipeline_pass(bundle, replays[kind], broker, args.work,
                                                     f"{job}-round-{round_no}", t))
    # The middle pass; of an even number, the slower middle one (never flatter than the data).
    median = {k: sorted(v, key=lambda p: p["crops_per_s"])[(len(v) - 1) // 2]
              for k, v in passes.items()}
    bare_median = {t: float(np.median(v)) for t, v in bare.items()}
    score_median = {t: float(np.median(v)) for t, v in scored.items()}
    best_bare = max(bare_median.values())
    first = median[f"line-{threads[0]}"]
    crops_per_frame = first["crops"] // first["frames"]
    rows: list[list[str]] = []
    ratios: dict[str, float] = {}
    for t in threads:
        rows += [
            ["bare batched invoke (set_tensor + invoke)", str(t),
             common.fmt(bare_median[t] / crops_per_frame), common.fmt(bare_median[t], 0),
             "100 %", "–", "–"],
            ["Scorer.score (+ quantize, MSE)", str(t),
             common.fmt(score_median[t] / crops_per_frame), common.fmt(score_median[t], 0),
             f"{score_median[t] / bare_median[t]:.0%}", "–", "–"],
        ]
        for kind, label in (("line", "line with defects"), ("normal", "defect-free line")):
            run = median[f"{kind}-{t}"]
            ratio = run["crops_per_s"] / bare_median[t]
            ratios[f"{kind}-{t}"] = ratio
            rows.append([f"pipeline, {label} ({run['messages'].get('events', 0)} events / "
                         f"{run['frames']} frames)", str(t), common.fmt(run["frames_per_s"]),
                         common.fmt(run["crops_per_s"], 0), f"{ratio:.0%}", "–", "–"])
            rows += stage_rows(run)
    best_pipe = max(median.values(), key=lambda p: p["crops_per_s"])
    headline = ratios[f"line-{threads[-1]}"]
    notes = [
        "pipeline ÷ bare at the same thread count, line with defects: "
        + ", ".join(f"{t} thread(s) {ratios[f'line-{t}']:.0%}" for t in threads)
        + "; defect-free line: "
        + ", ".join(f"{t} thread(s) {ratios[f'normal-{t}']:.0%}" for t in threads)
        + f"; target ≥ {TARGET_RATIO:.0%}: {'met' if headline >= TARGET_RATIO else 'NOT met'}",
        f"fastest pipeline pass ({best_pipe['threads']} thread(s), "
        f"{best_pipe['crops_per_s']:,.0f} crops/s) ÷ fastest bare invoke "
        f"({best_bare:,.0f} crops/s): {best_pipe['crops_per_s'] / best_bare:.0%}",
        *(cpu_budget(median[f"line-{t}"], bare_median[t] / crops_per_frame, t,
                     decode_s * common.MS_PER_S) + " (line with defects)" for t in threads),
        # At 1 thread only: with more, the loop also waits inside invoke for the library's own
        # worker threads, which these shares cannot tell apart.
        *(wait_note(median[f"{kind}-1"], 1, label) for kind, label in (
            ("line", "line with defects"), ("normal", "defect-free line")) if 1 in threads),
        f"{crops_per_frame} crops per frame; PNG decode of one frame: "
        f"{decode_s * common.MS_PER_S:.2f} ms median (capture thread, not in the stages); "
        "preprocess runs on the capture thread, publish (one spool commit per group of frames, "
        "then their states) on the event writer",
        f"{rounds} rounds, each: one reference pass per thread count (bare invoke and "
        "Scorer.score alternating batch by batch) and one pipeline pass per replay and thread "
        "count, in shuffled order; medians shown",
    ]
    figures = {"bare_crops_per_s": bare, "score_crops_per_s": scored, "pipeline_passes": passes,
               "median_pipeline": median, "ratios_to_bare_same_threads": ratios,
               "ratio_pipeline_to_bare": headline, "target_ratio": TARGET_RATIO,
               "met": headline >= TARGET_RATIO, "decode_ms_median": decode_s * common.MS_PER_S}
    common.report("pipeline", "Whole pipeline on the line replay vs bare batched invoke",
                  ["what", "threads", "frames/s", "crops/s", "of bare", "p50 ms", "p99 ms"],
                  rows, figures, args.quick, notes, work=args.work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
