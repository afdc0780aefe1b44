"""Before/after of the optimised parts: an older tree of the project against this one, interleaved.

    git archive 9ae9859 | (mkdir -p /tmp/before && tar -x -C /tmp/before)
    python benchmarks/perf_before_after.py --before /tmp/before [--quick]

Loads ``edge/preprocess.py``, ``edge/scoring.py`` and ``edge/publish/spool.py`` of the ``--before``
tree next to this tree's, checks that both give identical crops and scores, and times them call by
call in alternation (so both see the same load): preparing a frame's 24 crops, scoring them on a
bundle with models for batch 1, 8, 24 and 32, scoring one crop, and storing + acknowledging one
frame's events in the spool. Then it runs ``perf_pipeline.py --quick`` in both trees, alternately,
and puts the whole-pipeline figures side by side. Writes ``results/perf_before_after.json``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import perf_common as common

EVENTS_PER_FRAME = 4  # the defective line: ~2 anomalous wells and ~2 flips back to ok per tray
REPS, QUICK_REPS = 600, 150
SPOOL_REPS_DIVISOR = 4  # spool rounds fsync: fewer of them
PIPELINE_PAIRS, QUICK_PIPELINE_PAIRS = 5, 1
STAGES = ("preprocess", "score", "decide", "publish")
PIPELINE_THREADS = 2  # the demo configuration's interpreter threads, on both sides


def load(tree: Path, relative: str, name: str) -> ModuleType:
    """Import one module file of ``tree`` under another name (its own imports come from here)."""
    spec = importlib.util.spec_from_file_location(name, tree / relative)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def event_fields() -> dict[str, Any]:
    return {"device_id": "perf", "frame_id": "frame_000001", "timestamp": time.time(),
            "crop": "r0c0", "box": [20, 20, 40, 40], "score": 0.0123, "state": "anomaly",
            "previous_state": "ok", "threshold": {"high": 0.002, "low": None}, "score_z": 9.9,
            "bundle": {"name": "perf-wells", "sha256": "0" * 64}, "extra": {}}


def components(before: Path, work: Path, bundle_dir: Path) -> dict[str, tuple[Callable[[], Any],
                                                                               Callable[[], Any]]]:
    """(before, after) callables doing the same work, checked to give the same results."""
    from edge import preprocess, scoring
    from edge.bundle import load_bundle
    from edge.publish import spool
    from edge.publish.settings import SpoolConfig

    old_pre = load(before, "edge/preprocess.py", "before_preprocess")
    old_score = load(before, "edge/scoring.py", "before_scoring")
    old_spool = load(before, "edge/publish/spool.py", "before_spool")
    bundle = load_bundle(bundle_dir)
    from edge.layout import Layout
    from edge.preprocess import load_image
    from edge.types import Box
    from linesim import SceneConfig

    scene = SceneConfig()
    layout = Layout([(scene.well_name(r, c), Box(*scene.well_box(r, c)))
                     for r in range(scene.rows) for c in range(scene.cols)])
    image = load_image(sorted(common.ensure_replay(work, 1).glob("*.png"))[0])
    crops = [box.cut(image) for _, box in layout.boxes]
    batch = preprocess.prepare_batch(crops, bundle.input)
    if not np.array_equal(old_pre.prepare_batch(crops, bundle.input), batch):
        raise SystemExit("prepared crops differ between the trees")
    scorers = [(old_score.Scorer(bundle, num_threads=2, batch_sizes=sizes),
                scoring.Scorer(bundle, num_threads=2, batch_sizes=sizes))
               for sizes in (None, (1,))]
    for old, new in scorers:
        if not np.array_equal(old.score(batch), new.score(batch)):
            raise SystemExit("scores differ between the trees")
    folder = Path(tempfile.mkdtemp(prefix="spools-", dir=work))
    spools = (old_spool.Spool(folder / "before.db", SpoolConfig()),
              spool.Spool(folder / "after.db", SpoolConfig()))
    fields = event_fields()

    def store_before() -> None:
        stored = []
        for _ in range(EVENTS_PER_FRAME):  # the old runtime: one submit_event per event
            stored.append(spools[0].append(fields))
            spools[0].enforce_limits()
        for event in stored:  # the old sender: one delete per PUBACK
            spools[0].ack(event.seq)

    def store_after() -> None:
        stored = spools[1].append_many([fields] * EVENTS_PER_FRAME)
        spools[1].enforce_limits()
        spools[1].ack_many([event.seq for event in stored])

    return {
        f"prepare a frame's {len(crops)} crops (40→32 px)": (
            lambda: old_pre.prepare_batch(crops, bundle.input),
            lambda: preprocess.prepare_batch(crops, bundle.input)),
        f"Scorer.score, {len(crops)} crops, bundle with batch 1/8/24/32": (
            lambda: scorers[0][0].score(batch), lambda: scorers[0][1].score(batch)),
        "Scorer.score, 1 crop": (lambda: scorers[1][0].score(batch[:1]),
                                 lambda: scorers[1][1].score(batch[:1])),
        f"spool: store + ack a frame's {EVENTS_PER_FRAME} events": (store_before, store_after),
    }


def time_pair(before: Callable[[], Any], after: Callable[[], Any], reps: int) -> list[float]:
    """Median seconds of each, timed call by call in alternation."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(3):
        before()
        after()
    for _ in range(reps):
        for job, sink in ((before, times[0]), (after, times[1])):
            start = time.perf_counter()
            job()
            sink.append(time.perf_counter() - start)
    return [float(np.median(t)) for t in times]


def _line_pass(figures: dict[str, Any]) -> dict[str, Any]:
    """The median line-with-defects pass at 2 threads, from either results format."""
    median = figures["median_pipeline"]
    return median["line"] if "line" in median else median[f"line-{PIPELINE_THREADS}"]


def pipelines(before: Path, pairs: int) -> list[dict[str, Any]]:
    """perf_pipeline.py --quick in both trees, alternately; the results of each pass.

    A tree that has its own perf_pipeline.py runs it (its runtime's internals are what that
    script knows); an older tree gets this tree's benchmark scripts copied in. Both sides run the
    demo's configuration, 2 interpreter threads.
    """
    target = before / "benchmarks"
    if not (target / "perf_pipeline.py").exists():
        target.mkdir(exist_ok=True)
        for script in Path(__file__).parent.glob("perf_*.py"):
            shutil.copy(script, target / script.name)
    found: list[dict[str, Any]] = []
    results = Path(tempfile.mkdtemp(prefix="before-after-"))  # keeps results/ of the real run
    environment = {**os.environ, common.RESULTS_ENV: str(results)}
    # The same interpreter threads on both sides, where the older script can be told.
    threads = ["--threads", str(PIPELINE_THREADS)]
    takes_threads = "--threads" in (target / "perf_pipeline.py").read_text(encoding="utf-8")
    sides: tuple[tuple[str, Path, list[str]], ...] = (
        ("before", before, threads if takes_threads else []), ("after", common.ROOT, threads))
    for _ in range(pairs):
        for side, tree, options in sides:
            subprocess.run([sys.executable, "benchmarks/perf_pipeline.py", "--quick", *options],
                           cwd=tree, check=True, capture_output=True, env=environment)
            result = json.loads((results / "perf_pipeline.json").read_text())["figures"]
            line = _line_pass(result)
            found.append({"side": side, "frames_per_s": line["frames_per_s"],
                          "ratio": result["ratio_pipeline_to_bare"],
                          "stages_p50_ms": {s: line["latency_ms"][s]["p50"] for s in STAGES},
                          # CPU per frame of the edge process, broker and witness (older trees'
                          # scripts may not record it).
                          "cpu_ms_per_frame": line.get("cpu_ms_per_frame", {})})
    return found


def main(argv: Sequence[str] | None = None) -> int:
    cli = common.parser(__doc__ or "")
    cli.add_argument("--before", type=Path, required=True, help="the older tree (git archive)")
    args = cli.parse_args(argv)
    bundle = common.ensure_bundle(args.work, args.quick, args.bundle)
    reps = QUICK_REPS if args.quick else REPS
    rows: list[list[str]] = []
    figures: dict[str, Any] = {}
    for name, (old, new) in components(args.before.resolve(), args.work, bundle).items():
        count = reps // SPOOL_REPS_DIVISOR if name.startswith("spool") else reps
        t_old, t_new = time_pair(old, new, count)
        figures[name] = {"before_ms": t_old * common.MS_PER_S, "after_ms": t_new * common.MS_PER_S}
        rows.append([name, f"{t_old * common.MS_PER_S:.3f}", f"{t_new * common.MS_PER_S:.3f}",
                     f"{t_old / t_new:.1f}×"])
    passes = pipelines(args.before.resolve(),
                       QUICK_PIPELINE_PAIRS if args.quick else PIPELINE_PAIRS)
    for side in ("before", "after"):
        mine = [p for p in passes if p["side"] == side]
        fps = float(np.median([p["frames_per_s"] for p in mine]))
        stages = {s: float(np.median([p["stages_p50_ms"][s] for p in mine])) for s in STAGES}
        cpu = {k: float(np.median([p["cpu_ms_per_frame"][k] for p in mine]))
               for k in set.intersection(*(set(p["cpu_ms_per_frame"]) for p in mine))}
        figures[f"pipeline {side}"] = {"frames_per_s": fps, "stages_p50_ms": stages,
                                       "cpu_ms_per_frame": cpu}
    b, a = figures["pipeline before"], figures["pipeline after"]
    rows.append(["pipeline, line with defects: frames/s (median of passes)",
                 f"{b['frames_per_s']:.1f}", f"{a['frames_per_s']:.1f}",
                 f"{a['frames_per_s'] / b['frames_per_s']:.2f}× faster"])
    rows += [[f"  CPU per frame: {k} (core-ms)", f"{b['cpu_ms_per_frame'][k]:.2f}",
              f"{a['cpu_ms_per_frame'][k]:.2f}",
              f"{b['cpu_ms_per_frame'][k] / a['cpu_ms_per_frame'][k]:.2f}× less"
              if a["cpu_ms_per_frame"][k] > 0 else "– (0 measured: under one clock tick)"]
             for k in sorted(set(b["cpu_ms_per_frame"]) & set(a["cpu_ms_per_frame"]))]
    rows += [[f"  stage {s} p50 (ms)", f"{b['stages_p50_ms'][s]:.3f}",
              f"{a['stages_p50_ms'][s]:.3f}", ""] for s in STAGES]
    figures["pipeline passes"] = passes
    common.report("before_after", f"Before ({args.before.name}) and after, interleaved",
                  ["what", "before ms", "after ms", "speed-up"], rows, figures, args.quick,
                  ["component rows: medians of calls alternating before/after in one process; "
                   "both trees give identical crops and scores",
                   "pipeline rows: perf_pipeline.py --quick run alternately in each tree"],
                  work=args.work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
