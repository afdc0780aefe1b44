"""``python -m linesim``: write a synthetic production-line replay or a crop dataset."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from linesim.scene import DEFECTS, LineScene, SceneConfig
from linesim.writer import write_crops, write_scene


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="linesim", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, helptext in (("frames", "a replay folder of frames + truth.json"),
                           ("crops", "an MVTec-style dataset of well crops")):
        cmd = sub.add_parser(name, help=helptext)
        cmd.add_argument("out", type=Path)
        cmd.add_argument("--seed", type=int, default=0)
        cmd.add_argument("--rows", type=int, default=4)
        cmd.add_argument("--cols", type=int, default=6)
        cmd.add_argument("--pitch", type=int, default=40, help="well pitch in pixels")
        cmd.add_argument("--anomaly-rate", type=float, default=0.08,
                         help="fraction of wells with a defect (default 0.08)")
        cmd.add_argument("--defects", default=",".join(DEFECTS),
                         help=f"comma-separated subset of {','.join(DEFECTS)}")
        cmd.add_argument("--start", type=int, default=0, help="index of the first frame")
    sub.choices["frames"].add_argument("--frames", type=int, default=50)
    sub.choices["frames"].add_argument("--normal-only", action="store_true")
    sub.choices["crops"].add_argument("--train-frames", type=int, default=20)
    sub.choices["crops"].add_argument("--test-frames", type=int, default=10)
    args = parser.parse_args(argv)
    try:
        config = SceneConfig(rows=args.rows, cols=args.cols, pitch_px=args.pitch,
                             anomaly_rate=args.anomaly_rate,
                             defects=tuple(d for d in args.defects.split(",") if d))
    except ValueError as exc:
        print(f"linesim: error: {exc}", file=sys.stderr)
        return 2
    scene = LineScene(config, seed=args.seed)
    if args.command == "frames":
        truth = write_scene(scene, args.out, args.frames, start=args.start,
                            normal_only=args.normal_only)
        bad = sum(len(f["anomalies"]) for f in truth["frames"])
        print(f"wrote {args.frames} frames ({config.width}×{config.height} px, "
              f"{bad} defective wells) to {args.out}")
    else:
        counts = write_crops(scene, args.out, train_frames=args.train_frames,
                             test_frames=args.test_frames, start=args.start)
        summary = ", ".join(f"{folder} {n}" for folder, n in sorted(counts.items()))
        print(f"wrote crops to {args.out}: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
