"""Benchmark 4: what the model costs — MACs, parameters, file sizes — and what that means on a Pi.

    python benchmarks/perf_model.py [--quick] [--work DIR]

MACs and parameters are counted from the exported TFLite graph itself (the int8 ``model.tflite``
the device runs), op by op from its tensor shapes:

- ``CONV_2D``: output H·W·C_out × kernel H·W × C_in; ``DEPTHWISE_CONV_2D``: output H·W·C ×
  kernel H·W; ``TRANSPOSE_CONV``: input H·W·C_in × kernel H·W × C_out; ``FULLY_CONNECTED``:
  rows × in × out;
- parameters: the elements of those ops' weight and bias tensors.

From the MACs per crop, frames per second on other hardware are *estimates* under the compute
rates stated in ``HARDWARE`` (assumptions, not measurements). The same model is timed here
(batch 24, 2 threads, bare invoke) to give this machine's effective rate next to them.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import perf_common as common

CROPS_PER_FRAME = 24  # the synthetic tray: 4 × 6 wells, one crop each
GIGA = 1e9
KIB = 1024.0
INVOKES, QUICK_INVOKES = 400, 100
THREADS = 2


@dataclass(frozen=True)
class Hardware:
    """A target and the effective int8 compute rate assumed for it."""

    name: str
    gmac_per_s: float  # sustained int8 multiply-accumulates, billions per second (assumed)
    fixed_ms_per_invoke: float  # per-invoke overhead outside the MACs (assumed)
    basis: str
    batch_one_only: bool = False  # one invoke per crop (the edgetpu backend: edge/scoring.py)


HARDWARE = (
    Hardware("Raspberry Pi 4 (4× Cortex-A72, 1.5–1.8 GHz)", 20.0, 0.0,
             "assumed ~20 int8 GMAC/s effective with XNNPACK on 4 cores (the issue's budget)"),
    Hardware("Raspberry Pi 5 (4× Cortex-A76, 2.4 GHz)", 50.0, 0.0,
             "assumed ~2.5× a Pi 4: higher clock, wider cores and int8 dot-product (SDOT) "
             "instructions the A72 lacks; not measured"),
    Hardware("Coral USB Edge TPU", 2000.0, 1.0,
             "assumed 4 TOPS peak = 2 TMAC/s, plus ~1 ms per invoke for the USB round trip and "
             "delegate, one invoke per crop (the Edge TPU runs the batch-1 model); for a model "
             "this small the fixed cost dominates; not measured", batch_one_only=True),
)


def count_ops(model: Path) -> tuple[list[dict[str, Any]], int, int]:
    """Per-op MACs and parameters of a TFLite model (per crop, batch divided out)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model))
    interpreter.allocate_tensors()
    shapes = {t["index"]: [int(v) for v in t["shape"]] for t in interpreter.get_tensor_details()}
    ops: list[dict[str, Any]] = []
    for op in interpreter._get_ops_details():
        name = op["op_name"]
        inputs = [shapes.get(i) for i in op["inputs"]]
        out = shapes[op["outputs"][0]]
        macs, weights = 0, []
        if name == "CONV_2D":
            filt, weights = inputs[1], inputs[1:3]
            assert filt is not None
            macs = int(np.prod(out[1:])) * filt[1] * filt[2] * filt[3]
        elif name == "DEPTHWISE_CONV_2D":
            filt, weights = inputs[1], inputs[1:3]
            assert filt is not None
            macs = int(np.prod(out[1:])) * filt[1] * filt[2]
        elif name == "TRANSPOSE_CONV":
            filt, source = inputs[1], inputs[2]
            weights = [filt, *inputs[3:4]]
            assert filt is not None and source is not None
            macs = int(np.prod(source[1:])) * filt[1] * filt[2] * filt[0]
        elif name == "FULLY_CONNECTED":
            filt, weights = inputs[1], inputs[1:3]
            assert filt is not None
            macs = int(np.prod(out[:-1])) // out[0] * filt[0] * filt[1]
        elif name == "DELEGATE":
            continue  # the XNNPACK node that runs the ops above; not an op of the model
        params = sum(int(np.prod(w)) for w in weights if w)
        ops.append({"op": name, "output": out, "macs": macs, "params": params})
    return ops, sum(o["macs"] for o in ops), sum(o["params"] for o in ops)


def measured_rate(bundle: Path, work: Path, macs_per_crop: int,
                  invokes: int) -> tuple[float, float]:
    """(µs per crop, effective GMAC/s) of a bare batch-24 invoke of real crops, this machine."""
    from edge.bundle import load_bundle
    from edge.scoring import Scorer

    scorer = Scorer(load_bundle(bundle), num_threads=THREADS, batch_sizes=(CROPS_PER_FRAME,))
    runner = scorer._runners[CROPS_PER_FRAME]
    crops = common.test_crops(work, bundle, CROPS_PER_FRAME)
    runner.interpreter.set_tensor(runner.input_index, runner.input_lut[crops])
    for _ in range(10):
        runner.interpreter.invoke()
    seconds = []
    for _ in range(invokes):
        start = time.perf_counter()
        runner.interpreter.invoke()
        seconds.append(time.perf_counter() - start)
    per_crop = float(np.median(seconds)) / CROPS_PER_FRAME
    return per_crop * common.US_PER_S, macs_per_crop / per_crop / GIGA


def main(argv: Sequence[str] | None = None) -> int:
    from edge.bundle import load_bundle

    args = common.parser(__doc__ or "").parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    bundle_dir = common.ensure_bundle(args.work, args.quick, args.bundle)
    bundle = load_bundle(bundle_dir)
    ops, macs, params = count_ops(bundle.model_path(1))
    _, float_macs, float_params = count_ops(bundle_dir / "model_float.tflite")
    if (float_macs, float_params) != (macs, params):
        raise SystemExit(f"float graph counts ({float_macs} MACs, {float_params} params) differ "
                         f"from int8 ({macs}, {params})")
    us_per_crop, here_gmac = measured_rate(bundle_dir, args.work, macs, QUICK_INVOKES if args.quick
                                           else INVOKES)
    sizes = {p.name: p.stat().st_size for p in sorted(bundle_dir.glob("*"))
             if p.suffix in (".tflite", ".keras")}
    rows: list[list[str]] = [[f"{o['op']} → {'×'.join(map(str, o['output'][1:]))}",
                              f"{o['macs']:,}", f"{o['params']:,}"] for o in ops]
    rows.append(["**total per crop**", f"**{macs:,}**", f"**{params:,}**"])
    rows.append([f"per frame ({CROPS_PER_FRAME} crops)", f"{macs * CROPS_PER_FRAME:,}", ""])
    rows += [[f"file {name}", f"{size / KIB:.1f} KiB", ""] for name, size in sizes.items()]
    frame_macs = macs * CROPS_PER_FRAME
    estimates = []
    for hw in HARDWARE:
        invokes = CROPS_PER_FRAME if hw.batch_one_only else 1
        seconds = (frame_macs / (hw.gmac_per_s * GIGA)
                   + invokes * hw.fixed_ms_per_invoke / common.MS_PER_S)
        estimates.append({"hardware": hw.name, "gmac_per_s": hw.gmac_per_s,
                          "fixed_ms_per_invoke": hw.fixed_ms_per_invoke,
                          "invokes_per_frame": invokes,
                          "frames_per_s": 1.0 / seconds,
                          "crops_per_s": CROPS_PER_FRAME / seconds, "basis": hw.basis})
        rows.append([f"estimate: {hw.name}", f"{1.0 / seconds:,.0f} frames/s",
                     f"{CROPS_PER_FRAME / seconds:,.0f} crops/s (model only)"])
    rows.append(["measured: this machine (bare invoke, batch 24, 2 threads)",
                 f"{1.0 / (us_per_crop * CROPS_PER_FRAME / common.US_PER_S):,.0f} frames/s",
                 f"{us_per_crop:.1f} µs/crop = {here_gmac:.1f} effective GMAC/s"])
    notes = [f"{hw.name}: {hw.basis}" for hw in HARDWARE]
    notes.append("estimates are for the model alone; decode, crops, decision and publishing "
                 "run on the same CPU (see the pipeline table for their share here)")
    common.report("model", "Model cost: MACs, parameters, sizes, and frames/s estimates",
                  ["op / item", "MACs / value", "parameters / note"], rows,
                  {"ops": ops, "macs_per_crop": macs, "params": params,
                   "macs_per_frame": frame_macs, "file_bytes": sizes, "estimates": estimates,
                   "this_machine": {"us_per_crop": us_per_crop, "gmac_per_s": here_gmac}},
                  args.quick, notes, work=args.work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
