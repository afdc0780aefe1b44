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
THREADS = 2
FRAMES, QUICK_FRAMES = 600, 150
ROUNDS, QUICK_ROUNDS = 3, 2
TARGET_RATIO = 0.90  # pipeline throughput at least this share of bare batched invoke throughput
SUBSCRIBER_QUIET_S = 1.0  # the witness is done when nothing arrives for this long
SUBSCRIBER_WAIT_S = 30.0
SUBSCRIBE_WAIT_S = 0.5  # time given to mosquitto_sub to connect and subscribe
MOSQUITTO_SUB = shutil.which("mosquitto_sub") or "/usr/bin/mosquitto_sub"
STAGES = ("capture", "preprocess", "score", "decide", "publish")


def _config_text(bundle: Path, replay: Path, port: int, spool: Path) -> str:
    from linesim.device import replay_config_toml

    return replay_config_toml(device_id=DEVICE_ID, bundle=bundle, frames=replay, port=port,
                              spool=spool, prefix=PREFIX, threads=THREADS)


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


def pipeline_pass(bundle: Path, replay: Path, port: int, work: Path, index: int) -> dict[str, Any]:
    """One ``edge run`` over the replay; frames/s, crops/s, stage latencies, messages seen."""
    from edge.config import load_config
    from edge.runtime import Runtime
    from edge.types import Frame

    class TimedRuntime(Runtime):
        first_at: float | None = None
        last_at = 0.0

        def _process(self, frame: Frame) -> bool:
            if self.first_at is None:
                self.first_at = time.perf_counter()
            processed = super()._process(frame)
            self.last_at = time.perf_counter()
            return processed

    folder = work / "pipeline" / f"pass-{index}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    config = folder / "perf-line.toml"
    config.write_text(_config_text(bundle, replay, port, folder / "spool.db"), encoding="utf-8")
    witness = Witness(port, folder / "witness.log")
    started = time.perf_counter()
    runtime = TimedRuntime(load_config(config))
    runtime.run()
    ended = time.perf_counter()
    seen = witness.settle()
    assert runtime.first_at is not None
    busy = runtime.last_at - runtime.first_at
    frames = runtime.frames_processed
    crops = frames * len(runtime.layout.boxes)
    return {"frames": frames, "crops": crops, "seconds": busy,
            "frames_per_s": frames / busy, "crops_per_s": crops / busy,
            "startup_s": runtime.first_at - started, "flush_and_close_s": ended - runtime.last_at,
            "latency_ms": runtime.latency.summary_ms(), "messages": seen,
            "events_failed": runtime.events_failed}


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


def reference_pass(bundle: Path, batches: list[np.ndarray]) -> Any:
    """A closure timing one pass over all batches, alternating bare invoke and Scorer.score
    batch by batch (so that both see the same load); returns (bare, score) crops/s."""
    from edge.bundle import load_bundle
    from edge.scoring import Scorer

    size = len(batches[0])
    scorer = Scorer(load_bundle(bundle), num_threads=THREADS, batch_sizes=(size,))
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


def pipeline_row(label: str, run: dict[str, Any], bare: float) -> list[str]:
    return [label, common.fmt(run["frames_per_s"]), common.fmt(run["crops_per_s"], 0),
            f"{run['crops_per_s'] / bare:.0%}", "–", "–"]


def main(argv: Sequence[str] | None = None) -> int:
    from linesim.broker import LocalBroker

    args = common.parser(__doc__ or "").parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    args.work.mkdir(parents=True, exist_ok=True)
    bundle = common.ensure_bundle(args.work, args.quick, args.bundle)
    frames, rounds = (QUICK_FRAMES, QUICK_ROUNDS) if args.quick else (FRAMES, ROUNDS)
    replays = {"line": common.ensure_replay(args.work, frames),
               "normal": common.ensure_replay(args.work, frames, normal_only=True)}
    batches, decode_s = prepared_batches(bundle, replays["line"])
    reference = reference_pass(bundle, batches)
    order = random.Random(0)
    bare: list[float] = []
    scored: list[float] = []
    passes: dict[str, list[dict[str, Any]]] = {"line": [], "normal": []}
    with LocalBroker("mosquitto") as broker:
        for _ in range(rounds):
            jobs = ["reference", "line", "normal"]
            order.shuffle(jobs)
            for job in jobs:
                if job == "reference":
                    b, sc = reference()
                    bare.append(b)
                    scored.append(sc)
                else:
                    passes[job].append(pipeline_pass(bundle, replays[job], broker.port,
                                                     args.work, len(passes[job]) * 2 +
                                                     (job == "normal")))
    median = {k: sorted(v, key=lambda p: p["crops_per_s"])[len(v) // 2]
              for k, v in passes.items()}
    bare_median, score_median = float(np.median(bare)), float(np.median(scored))
    pipe = median["line"]
    ratio = pipe["crops_per_s"] / bare_median
    normal_ratio = median["normal"]["crops_per_s"] / bare_median
    crops_per_frame = pipe["crops"] // pipe["frames"]
    rows = [
        ["bare batched invoke (set_tensor + invoke)", common.fmt(bare_median / crops_per_frame),
         common.fmt(bare_median, 0), "100 %", "–", "–"],
        ["Scorer.score (+ quantize, dequantize, MSE)", common.fmt(score_median / crops_per_frame),
         common.fmt(score_median, 0), f"{score_median / bare_median:.0%}", "–", "–"],
        pipeline_row(f"pipeline, line with defects ({pipe['messages'].get('events', 0)} events "
                     f"/ {pipe['frames']} frames)", pipe, bare_median),
    ]
    latency = pipe["latency_ms"]
    rows += [[f"  stage: {stage}", "", "", "", common.fmt(latency[stage]["p50"], 3),
              common.fmt(latency[stage]["p99"], 3)] for stage in STAGES if stage in latency]
    normal = median["normal"]
    rows.append(pipeline_row(f"pipeline, defect-free line ({normal['messages'].get('events', 0)}"
                             f" events / {normal['frames']} frames)", normal, bare_median))
    latency = normal["latency_ms"]
    rows += [[f"  stage: {stage}", "", "", "", common.fmt(latency[stage]["p50"], 3),
              common.fmt(latency[stage]["p99"], 3)] for stage in STAGES if stage in latency]
    per_round = [p["crops_per_s"] / b for p, b in zip(passes["line"], bare, strict=True)]
    notes = [
        f"pipeline ÷ bare, line with defects: {ratio:.0%} (per round: "
        f"{', '.join(f'{r:.0%}' for r in per_round)}); defect-free line: {normal_ratio:.0%}; "
        f"target ≥ {TARGET_RATIO:.0%}: {'met' if ratio >= TARGET_RATIO else 'NOT met'}",
        f"{crops_per_frame} crops per frame, {THREADS} interpreter threads; PNG decode of one "
        f"frame: {decode_s * common.MS_PER_S:.2f} ms median (capture thread, not in the stages)",
        f"line with defects: the witness received {pipe['messages'].get('events', 0)} events and "
        f"{pipe['messages'].get('crops', 0)} crop states; events_failed {pipe['events_failed']};"
        f" start-up {pipe['startup_s']:.2f} s, final flush + close "
        f"{pipe['flush_and_close_s']:.2f} s (not in frames/s)",
        f"{rounds} rounds, each: a reference pass (bare invoke and Scorer.score alternating "
        "batch by batch) and one pipeline pass per replay, in shuffled order; medians shown",
    ]
    figures = {"bare_crops_per_s": bare, "score_crops_per_s": scored, "pipeline_passes": passes,
               "median_pipeline": median, "ratio_pipeline_to_bare": ratio,
               "ratio_normal_line_to_bare": normal_ratio, "target_ratio": TARGET_RATIO,
               "met": ratio >= TARGET_RATIO, "decode_ms_median": decode_s * common.MS_PER_S}
    common.report("pipeline", "Whole pipeline on the line replay vs bare batched invoke",
                  ["what", "frames/s", "crops/s", "of bare", "p50 ms", "p99 ms"], rows, figures,
                  args.quick, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
