"""Regenerate every detection-quality figure: ``python benchmarks/run_quality.py [--quick]``.

Runs, one after another (one heavy training at a time on a shared CPU):

1. ``mnist_oneclass.py`` — the ten-digit one-class MNIST benchmark (float and int8 AUROC), with
   the recipe's 1500 steps, again with 3000, and with three members in one model (the run that
   meets the issue's target; about 55 min of the whole);
2. ``quality_mnist.py`` — digits 0–4 vs 5–9 (``max`` rule) and digit 1 with 1 % of 3s;
3. ``quality_casting.py`` — the casting line, AE vs VAE, ``maxmin`` and ``band``;
4. ``quality_size.py`` — where the bytes of the int8 and float flatbuffers go (seconds);
5. ``quality_docs.py`` — docs/results.md from the JSON files.

Each writes its JSON to benchmarks/results/ and its plots to docs/img/; docs/results.md presents
them. ``--quick`` is a smoke run (digits 0, 1, 5 and the reproductions at 300 steps, a short
casting run) that writes ``*_quick.json`` files and leaves the committed figures alone. Needs
../shared/data/mnist-oneclass for the MNIST parts (exits 2 with a message when it is absent).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from shared_data import require_mnist

BENCH_DIR = Path(__file__).resolve().parent
QUICK_DIGITS = "0,1,5"
QUICK_STEPS = 300
LONG_STEPS = 3000  # the longer one-class run reported beside the main one
MEMBERS = 3  # the ensemble run reported beside the main one


def _run(script: str, *args: str) -> None:
    started = time.perf_counter()
    print(f"==> {script} {' '.join(args)}", flush=True)
    subprocess.run([sys.executable, str(BENCH_DIR / script), *args], check=True)
    print(f"    {script} took {time.perf_counter() - started:.0f} s", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run, minutes not half an hour")
    parser.add_argument("--skip", default="", help="comma list of oneclass,mnist,casting to skip")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    if not {"oneclass", "mnist"} <= skip:  # the casting, size and docs steps need no MNIST
        require_mnist()
    if args.quick:
        quick = ("--digits", QUICK_DIGITS, "--steps", str(QUICK_STEPS),
                 "--out-json", "mnist_oneclass_quick.json", "--plot", "")
        steps = () if "oneclass" in skip else quick
        if steps:
            _run("mnist_oneclass.py", *steps)
        if "mnist" not in skip:
            _run("quality_mnist.py", "--quick")
        if "casting" not in skip:
            _run("quality_casting.py", "--quick")
        return 0
    if "oneclass" not in skip:
        _run("mnist_oneclass.py")
        # The same recipe, trained twice as long (reported apart in docs/results.md).
        _run("mnist_oneclass.py", "--steps", str(LONG_STEPS), "--out-json",
             "mnist_oneclass_3000steps.json", "--plot", "")
        _run("mnist_oneclass.py", "--members", str(MEMBERS), "--out-json",
             f"mnist_oneclass_{MEMBERS}members.json", "--plot", "")
    if "mnist" not in skip:
        _run("quality_mnist.py")
    if "casting" not in skip:
        _run("quality_casting.py")
    _run("quality_size.py")
    _run("quality_docs.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
