"""Command line of the trainer: ``trainer fit`` and ``trainer evaluate``.

Errors the project raises on purpose (ProjectError) print as one line on stderr and exit with the
error's code; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import trainer  # noqa: F401  (sets TensorFlow's log environment before anything imports it)
from edge import __version__
from edge.errors import ConfigError, run_command
from trainer import report
from trainer.defaults import (
    AUGMENTATIONS,
    DEFAULT_BATCH_SIZE,
    DEFAULT_BATCH_SIZES,
    DEFAULT_FILTERS,
    DEFAULT_LATENT_CHANNELS,
    DEFAULT_LEARNING_RATE,
    DEFAULT_PATIENCE_ROUNDS,
    DEFAULT_RULE,
    DEFAULT_SIZE_PX,
    DEFAULT_STEPS,
    DEFAULT_VAL_FRACTION,
    LR_SCHEDULES,
    MODEL_KINDS,
)


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise ConfigError(f"{text!r} is not a comma-separated list of integers.") from exc


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _cmd_fit(args: argparse.Namespace) -> int:
    from trainer.pipeline import fit_bundle

    fit_bundle(args.data, args.out, size=args.size, channels=args.channels, shape=args.shape,
               model=args.model, filters=_int_list(args.filters), latent=args.latent,
               members=args.members, steps=args.steps, epochs=args.epochs,
               batch_size=args.batch_size,
               learning_rate=args.learning_rate, lr_schedule=args.lr_schedule,
               patience=args.patience, val_fraction=args.val_fraction,
               augment=_names(args.augment), threshold=args.threshold,
               batch_sizes=args.batch_sizes, seed=args.seed, keep_float=args.keep_float,
               name=args.name, progress=False if args.no_progress else None)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from trainer.data import parse_shape
    from trainer.evaluate import evaluate_bundle, format_report

    shape = parse_shape(args.shape) if args.shape else None
    result = evaluate_bundle(args.bundle, args.data, shape=shape)
    print(json.dumps(result, indent=2) if args.json else format_report(result))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trainer",
        description="Train a conv autoencoder on normal crops and export an int8 edge bundle.")
    parser.add_argument("--version", action="version", version=f"trainer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    fit = sub.add_parser("fit", help="train on normals and write models/NAME")
    fit.add_argument("data", help="MVTec-style folder (train/good, test/...) or .npz with x[, y]")
    fit.add_argument("--out", required=True, help="bundle directory to write, e.g. models/NAME")
    fit.add_argument("--name", default=None, help="bundle name (default: the --out folder name)")
    fit.add_argument("--size", type=int, default=DEFAULT_SIZE_PX,
                     help=f"model input side in px; crops are resized to it "
                          f"(default {DEFAULT_SIZE_PX})")
    fit.add_argument("--channels", type=int, choices=(1, 3), default=1,
                     help="1 grey (default) or 3 RGB")
    fit.add_argument("--shape", default=None, help="H,W[,C] of flat npz rows")
    fit.add_argument("--model", default="ae", choices=MODEL_KINDS,
                     help="network kind: ae (default) or vae (variational; --latent is its "
                          "vector length)")
    fit.add_argument("--filters", default=",".join(map(str, DEFAULT_FILTERS)),
                     help="filters per stride-2 stage (default %(default)s)")
    fit.add_argument("--latent", type=int, default=DEFAULT_LATENT_CHANNELS,
                     help="bottleneck channels (default %(default)s)")
    fit.add_argument("--members", type=int, default=1,
                     help="autoencoders trained side by side in one model, scored by the mean of "
                          "their errors (an ensemble: steadier than one, and that many times the "
                          "device's compute; default %(default)s)")
    budget = fit.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, default=None,
                        help=f"optimiser steps (default {DEFAULT_STEPS}, whatever the data size)")
    budget.add_argument("--epochs", type=int, default=None,
                        help="full passes over the training normals instead of --steps")
    fit.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                     help="training batch size (default %(default)s)")
    fit.add_argument("--learning-rate", type=float, default=DEFAULT_LEARNING_RATE,
                     help="Adam learning rate (default %(default)s)")
    fit.add_argument("--lr-schedule", choices=LR_SCHEDULES, default="constant",
                     help="constant, or cosine decay to 0 over the step budget "
                          "(default %(default)s)")
    fit.add_argument("--patience", type=int, default=DEFAULT_PATIENCE_ROUNDS,
                     help="stop after this many rounds without a better held-back loss and "
                          "keep the best weights; 0 trains the whole budget and keeps the last "
                          "(default %(default)s)")
    fit.add_argument("--val-fraction", type=float, default=DEFAULT_VAL_FRACTION,
                     help="normals held back for validation and calibration (default %(default)s)")
    fit.add_argument("--augment", default="",
                     help=f"comma list of {','.join(AUGMENTATIONS)}; only what keeps a normal "
                          "crop normal on your line (default none)")
    fit.add_argument("--threshold", default=DEFAULT_RULE,
                     help="max | quantile:Q | meanstd:K | band:P | youden | f1 | maxmin | band "
                          "(default %(default)s)")
    fit.add_argument("--batch-sizes", default=",".join(map(str, DEFAULT_BATCH_SIZES)),
                     help="int8 models to export, one per batch size (default %(default)s)")
    fit.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    fit.add_argument("--keep-float", action="store_true",
                     help="also save float_model.keras and model_float.tflite in the bundle")
    fit.add_argument("--no-progress", action="store_true",
                     help="one line per round even on a terminal")
    fit.set_defaults(func=_cmd_fit)

    evaluate = sub.add_parser("evaluate", help="metrics of a bundle on labeled data")
    evaluate.add_argument("bundle", help="bundle directory (models/NAME)")
    evaluate.add_argument("data", help="MVTec-style folder or .npz with x and y")
    evaluate.add_argument("--shape", default=None, help="H,W[,C] of flat npz rows")
    evaluate.add_argument("--json", action="store_true", help="print the result as JSON")
    evaluate.set_defaults(func=_cmd_evaluate)

    keygen = sub.add_parser("keygen", help="make an Ed25519 key pair for signing bundles")
    keygen.add_argument("--out", required=True, type=Path,
                        help="path prefix: writes PREFIX.pem (private) and PREFIX.pub.pem")
    keygen.set_defaults(func=_cmd_keygen)

    sign = sub.add_parser("sign", help="sign a bundle (writes bundle.sig beside bundle.json)")
    sign.add_argument("bundle", type=Path, help="bundle directory (models/NAME)")
    sign.add_argument("--key", required=True, type=Path, help="private key from 'trainer keygen'")
    sign.set_defaults(func=_cmd_sign)
    report.add_parser(sub)  # trainer/report.py: learning curve, reconstructions, histogram, ROC
    return parser


def _cmd_keygen(args: argparse.Namespace) -> int:
    from edge.signing import generate_keypair

    private = args.out.with_name(args.out.name + ".pem")
    public = args.out.with_name(args.out.name + ".pub.pem")
    for path in (private, public):
        if path.exists():
            raise ConfigError(f"{path} exists; refusing to overwrite a key. Choose another --out.")
    generate_keypair(private, public)
    print(f"private key {private} (keep it off the devices)\npublic key  {public} "
          "(name it in the device config as bundle_public_key)")
    return 0


def _cmd_sign(args: argparse.Namespace) -> int:
    from edge.bundle import load_bundle
    from edge.signing import sign_bundle

    bundle = load_bundle(args.bundle)  # never sign a bundle whose model hashes do not match
    print(f"signed {bundle.name}: {sign_bundle(bundle.path, args.key)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command("trainer", lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
