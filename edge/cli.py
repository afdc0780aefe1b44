"""Command line of the edge runtime: ``edge score`` and ``edge run``.

Errors the project raises on purpose (ProjectError) print as one line on stderr and exit with the
error's code; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from edge import __version__
from edge.backends import BACKENDS, DEFAULT_BACKEND
from edge.errors import ImageError, run_command


def _cmd_score(args: argparse.Namespace) -> int:
    """Score whole images (each image is one crop) with a bundle; one line per image."""
    from edge.bundle import load_bundle
    from edge.config import auto_threads
    from edge.preprocess import load_image, prepare_crop
    from edge.scoring import Scorer

    bundle = load_bundle(args.bundle, public_key=args.public_key)
    threads = auto_threads() if args.threads is None else args.threads
    scorer = Scorer(bundle, backend=args.backend, num_threads=threads, batch_sizes=(1,))
    threshold = bundle.threshold
    failures = 0
    for path in _expand(args.paths):
        try:
            crop = prepare_crop(load_image(path), bundle.input)
        except ImageError as exc:
            failures += 1
            print(f"error: {exc}", file=sys.stderr)
            continue
        score = float(scorer.score(crop[None])[0])
        state = "anomaly" if threshold.is_anomalous(score) else "ok"
        if args.json:
            print(json.dumps({"path": str(path), "score": score, "threshold_high": threshold.high,
                              "threshold_low": threshold.low, "state": state}))
        else:
            bound = _format_threshold(threshold.low, threshold.high)
            print(f"{path}\t{score:.6f}\t{bound}\t{state}")
    return 1 if failures else 0


def _format_threshold(low: float | None, high: float | None) -> str:
    if low is None:
        return f"> {high:.6f}"
    if high is None:
        return f"< {low:.6f}"
    return f"outside [{low:.6f}, {high:.6f}]"


def _expand(paths: Sequence[str]) -> list[Path]:
    from edge.preprocess import IMAGE_SUFFIXES

    result: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            result.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES))
        else:
            result.append(path)
    return result


def _thread_count(text: str) -> int:
    """``--threads``: a whole number in the range the config allows for ``num_threads``."""
    from edge.config import MAX_THREADS

    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_THREADS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a thread count; give a whole number from 1 to {MAX_THREADS}, or "
            "leave --threads out for the default (cores - 1, at least 1, at most 4)")
    return value


def _cmd_run(args: argparse.Namespace) -> int:
    from edge.runtime import run_from_args

    return run_from_args(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge", description="Per-crop anomaly detection on the device (int8 TFLite + MQTT)."
    )
    parser.add_argument("--version", action="version", version=f"edge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    score = sub.add_parser("score", help="score image files with a bundle, one line per image")
    score.add_argument("bundle", help="bundle directory (models/NAME) or its bundle.json")
    score.add_argument("paths", nargs="+", help="image files or folders of images")
    score.add_argument("--json", action="store_true", help="one JSON object per line")
    score.add_argument("--backend", default=DEFAULT_BACKEND, choices=sorted(BACKENDS))
    score.add_argument("--threads", type=_thread_count, default=None,
                       help="interpreter threads (default: cores - 1, at least 1, at most 4)")
    score.add_argument("--public-key", type=Path, default=None,
                       help="refuse the bundle unless it is signed by this Ed25519 key (PEM)")
    score.set_defaults(func=_cmd_score)

    run = sub.add_parser("run", help="run the line: capture → crops → scores → MQTT")
    run.add_argument("--config", required=True, help="device config TOML (firmware_config/...)")
    run.add_argument("--validate-config", action="store_true",
                     help="check the config (and the bundle it names), print the result, exit")
    run.add_argument("--max-frames", type=int, default=None,
                     help="stop after this many frames (replays, tests)")
    run.set_defaults(func=_cmd_run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command("edge", lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
