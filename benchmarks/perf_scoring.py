"""Benchmark 1: per-crop scoring latency and throughput of one trained model, every way to run it.

    python benchmarks/perf_scoring.py [--quick] [--work DIR]

The same weights, the same well crops, in one process and one run:

- **int8 bundle on ai-edge-litert** — ``edge.scoring.Scorer``, what the device runs;
- **float TFLite** on ai-edge-litert — the float model converted with the same fixed batch;
- **Keras ``model.predict``** — how the original experiments scored — and a direct Keras call;
- **int8 bundle on tflite-runtime** — ``Scorer`` with ``backend="tflite-runtime"`` in its own venv
  (numpy < 2), driven through perf_tflite_worker.py so that its blocks interleave with the rest.

Each timed call takes uint8 crops and returns their reconstruction MSE (input conversion,
invoke, output and score included). Batch 1, 8 and 32; 1 and 2 interpreter threads (Keras uses
TensorFlow's own pool: both cores). After a warm-up, every round runs a short timing block of each
alternative in a new shuffled order, so background load falls on all of them alike; the table
gives the median and 99th percentile per crop over all rounds and ratios from this same run.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import perf_common as common

BATCHES = (1, 8, 32)
THREADS = (1, 2)
POOL_CROPS = 256
ROUNDS, QUICK_ROUNDS = 7, 3
BLOCK_S, QUICK_BLOCK_S = 0.4, 0.06  # timing budget of one alternative in one round
MAX_REPS = 5000
WARMUP_CALLS = 5
TARGET_VS_FLOAT = 2.0  # int8 at least this much faster than float TFLite per crop, batch 1
TARGET_VS_KERAS = 20.0  # and than Keras model.predict
INT8, FLOAT, PREDICT, CALL, LEGACY = ("int8 · ai-edge-litert", "float · ai-edge-litert",
                                      "float · Keras predict", "float · Keras call",
                                      "int8 · tflite-runtime")
TF_THREADS = 0  # marks "TensorFlow's default pool" in the threads column


class Candidate:
    """One way of scoring ``batch`` crops, timed in blocks."""

    def __init__(self, name: str, batch: int, threads: int,
                 score: Callable[[np.ndarray], Any] | None) -> None:
        self.name, self.batch, self.threads = name, batch, threads
        self.score = score
        self.seconds: list[float] = []
        self.error: str | None = None

    def block(self, pool: np.ndarray, cursor: int, budget_s: float, warmup: int) -> int:
        """Time calls for about ``budget_s``; returns the new position in the crop pool."""
        assert self.score is not None
        for _ in range(warmup):
            self.score(_take(pool, cursor, self.batch))
        deadline = time.perf_counter() + budget_s
        count = 0
        while count < MAX_REPS and (count < 3 or time.perf_counter() < deadline):
            chunk = _take(pool, cursor, self.batch)
            cursor += self.batch
            start = time.perf_counter()
            self.score(chunk)
            self.seconds.append(time.perf_counter() - start)
            count += 1
        return cursor


class RemoteCandidate(Candidate):
    """The tflite-runtime alternative, timed by the worker process in its own venv."""

    def __init__(self, worker: subprocess.Popen[str], batch: int, threads: int) -> None:
        super().__init__(LEGACY, batch, threads, None)
        self.worker = worker

    def block(self, pool: np.ndarray, cursor: int, budget_s: float, warmup: int) -> int:
        if self.error is not None:
            return cursor
        assert self.worker.stdin is not None and self.worker.stdout is not None
        self.worker.stdin.write(json.dumps({"batch": self.batch, "threads": self.threads,
                                            "budget_s": budget_s, "max_reps": MAX_REPS,
                                            "warmup": warmup}) + "\n")
        self.worker.stdin.flush()
        answer = json.loads(self.worker.stdout.readline() or '{"error": "worker died"}')
        if "error" in answer:
            self.error = answer["error"]
        else:
            self.seconds.extend(answer["seconds"])
        return cursor


def _take(pool: np.ndarray, at: int, batch: int) -> np.ndarray:
    return pool[(np.arange(batch) + at) % len(pool)]


def float_tflite_models(bundle: Path, work: Path) -> dict[int, Path]:
    """The float model converted with each fixed batch (as the int8 export does), cached."""
    import tensorflow as tf

    from trainer.backend import keras
    from trainer.model import ModelConfig, clone_with_batch
    from trainer.quiet import silenced

    paths = {b: work / f"float_b{b}.tflite" for b in BATCHES}
    missing = [b for b, p in paths.items()
               if not p.exists() or p.stat().st_mtime < (bundle / "bundle.json").stat().st_mtime]
    if missing:
        info = json.loads((bundle / "bundle.json").read_text())["provenance"]["model"]
        config = ModelConfig(height=info["height"], width=info["width"],
                             channels=info["channels"], filters=tuple(info["filters"]),
                             latent=info["latent"], kind=info["kind"],
                             members=info.get("members", 1))
        model = keras.models.load_model(bundle / "float_model.keras", compile=False)
        for batch in missing:
            with silenced():
                fixed = clone_with_batch(model, config, batch)
                blob = tf.lite.TFLiteConverter.from_keras_model(fixed).convert()
            paths[batch].write_bytes(blob)
    return paths


def build(bundle_dir: Path, work: Path, pool: np.ndarray) -> tuple[list[Candidate], list[str]]:
    """Every alternative for every batch size and thread count; notes on what could not run."""
    from ai_edge_litert.interpreter import Interpreter

    from edge.bundle import load_bundle
    from edge.scoring import PIXEL_MAX, Scorer, reconstruction_mse
    from trainer.backend import keras

    bundle = load_bundle(bundle_dir)
    candidates: list[Candidate] = []
    notes: list[str] = []
    floats = float_tflite_models(bundle_dir, work)
    for batch in BATCHES:
        for threads in THREADS:
            scorer = Scorer(bundle, backend="litert", num_threads=threads, batch_sizes=(batch,))
            candidates.append(Candidate(INT8, batch, threads, scorer.score))
            interpreter = Interpreter(model_path=str(floats[batch]), num_threads=threads)
            interpreter.allocate_tensors()
            candidates.append(Candidate(FLOAT, batch, threads,
                                        _float_scorer(interpreter, reconstruction_mse,
                                                      bundle.members)))
    model = keras.models.load_model(bundle_dir / "float_model.keras", compile=False)

    def predict(crops: np.ndarray) -> np.ndarray:
        unit = crops.astype(np.float32) / np.float32(PIXEL_MAX)
        return reconstruction_mse(unit, model.predict(unit, batch_size=len(unit), verbose=0),
                                  bundle.members)

    def call(crops: np.ndarray) -> np.ndarray:
        unit = crops.astype(np.float32) / np.float32(PIXEL_MAX)
        return reconstruction_mse(unit, np.asarray(model(unit, training=False)), bundle.members)

    for batch in BATCHES:
        candidates.append(Candidate(PREDICT, batch, TF_THREADS, predict))
        candidates.append(Candidate(CALL, batch, TF_THREADS, call))
    python, why = common.ensure_tflite_venv(work, bundle_dir)
    if python is None:
        notes.append(f"tflite-runtime: not measured — {why}")
        return candidates, notes
    notes.append(f"tflite-runtime: {why}")
    np.save(work / "pool.npy", pool)
    worker = subprocess.Popen([str(python), str(Path(__file__).with_name(
        "perf_tflite_worker.py")), str(bundle_dir), str(work / "pool.npy")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert worker.stdout is not None
    hello = json.loads(worker.stdout.readline() or "{}")
    if not hello.get("ready"):
        notes.append("tflite-runtime: the worker did not start; not measured")
        return candidates, notes
    candidates += [RemoteCandidate(worker, b, t) for b in BATCHES for t in THREADS]
    return candidates, notes


def _float_scorer(interpreter: Any, mse: Callable[[np.ndarray, np.ndarray, int], np.ndarray],
                  members: int) -> Callable[[np.ndarray], np.ndarray]:
    inp = interpreter.get_input_details()[0]["index"]
    out = interpreter.get_output_details()[0]["index"]

    def score(crops: np.ndarray) -> np.ndarray:
        unit = crops.astype(np.float32) / np.float32(255.0)
        interpreter.set_tensor(inp, unit)
        interpreter.invoke()
        return mse(unit, interpreter.get_tensor(out), members)

    return score


def run(candidates: Sequence[Candidate], pool: np.ndarray, rounds: int, block_s: float) -> None:
    """Warm every alternative up, then interleave their timing blocks, shuffled each round."""
    order = random.Random(0)
    cursor = 0
    for candidate in candidates:
        cursor = candidate.block(pool, cursor, 0.0, WARMUP_CALLS)
        candidate.seconds.clear()
    for _ in range(rounds):
        shuffled = list(candidates)
        order.shuffle(shuffled)
        for candidate in shuffled:
            cursor = candidate.block(pool, cursor, block_s, 0)


def summarise(candidates: Sequence[Candidate]) -> tuple[list[list[str]], dict[str, Any]]:
    """Table rows and JSON figures, with each alternative's time relative to int8."""
    per_crop: dict[tuple[str, int, int], common.Timing] = {}
    for c in candidates:
        if c.seconds:
            per_crop[(c.name, c.batch, c.threads)] = common.Timing.of(
                [s / c.batch for s in c.seconds])
    rows, figures = [], []
    for c in candidates:
        timing = per_crop.get((c.name, c.batch, c.threads))
        base = per_crop.get((INT8, c.batch, c.threads or max(THREADS)))
        ratio = timing.median_s / base.median_s if timing and base else None
        threads = (f"TF pool ({os.cpu_count()} cores)" if c.threads == TF_THREADS
                   else str(c.threads))
        if timing is None:
            rows.append([c.name, str(c.batch), threads, "–", "–", "–", "–",
                         f"not measured: {c.error}"])
            continue
        rows.append([c.name, str(c.batch), threads, common.fmt(timing.median_s * common.US_PER_S),
                     common.fmt(timing.p99_s * common.US_PER_S),
                     common.fmt(1.0 / timing.median_s, 0), common.fmt(ratio, 2) + "×",
                     str(timing.samples)])
        figures.append({"backend": c.name, "batch": c.batch, "threads": c.threads,
                        "per_crop_median_us": timing.median_s * common.US_PER_S,
                        "per_crop_p99_us": timing.p99_s * common.US_PER_S,
                        "crops_per_s": 1.0 / timing.median_s, "time_vs_int8": ratio,
                        "calls": timing.samples})
    return rows, {"results": figures, "targets": targets(per_crop)}


def targets(per_crop: dict[tuple[str, int, int], common.Timing]) -> list[dict[str, Any]]:
    """The issue's targets at batch 1, each from this run's side-by-side medians."""
    found = []
    for other, goal, threads_list in ((FLOAT, TARGET_VS_FLOAT, THREADS),
                                      (PREDICT, TARGET_VS_KERAS, (TF_THREADS,)),
                                      (CALL, TARGET_VS_KERAS, (TF_THREADS,))):
        for threads in threads_list:
            mine = per_crop.get((INT8, 1, threads or max(THREADS)))
            theirs = per_crop.get((other, 1, threads))
            if mine and theirs:
                speedup = theirs.median_s / mine.median_s
                found.append({"vs": other, "batch": 1, "threads": threads or max(THREADS),
                              "speedup": speedup, "target": goal, "met": speedup >= goal})
    return found


def main(argv: Sequence[str] | None = None) -> int:
    args = common.parser(__doc__ or "").parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    bundle = common.ensure_bundle(args.work, args.quick, args.bundle)
    pool = common.test_crops(args.work, bundle, POOL_CROPS)
    candidates, notes = build(bundle, args.work, pool)
    rounds, block_s = (QUICK_ROUNDS, QUICK_BLOCK_S) if args.quick else (ROUNDS, BLOCK_S)
    started = time.perf_counter()
    run(candidates, pool, rounds, block_s)
    rows, figures = summarise(candidates)
    for target in figures["targets"]:
        notes.append(f"batch 1, {target['threads']} thread(s): int8 is {target['speedup']:.1f}× "
                     f"faster per crop than {target['vs']} (target ≥ {target['target']:g}×: "
                     f"{'met' if target['met'] else 'NOT met'})")
    notes.append(f"{rounds} interleaved rounds, {block_s:g} s per alternative per round, "
                 f"{len(pool)} well crops of {pool.shape[1]}×{pool.shape[2]} px; "
                 f"timed in {time.perf_counter() - started:.0f} s")
    common.report("scoring", "Per-crop scoring: one model, every backend, one run",
                  ["backend", "batch", "threads", "µs/crop p50", "µs/crop p99", "crops/s",
                   "time vs int8", "calls"], rows, figures, args.quick, notes,
                  work=args.work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
