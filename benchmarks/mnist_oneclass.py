"""One-class MNIST under the shared protocol: AUROC per digit, float and int8, and the mean.

For digit k: shuffle its normals with ``numpy.random.default_rng(0).permutation``, train on the
first 80 %, test on the remaining 20 % plus every anomaly in ``mnist{k}.npz``; image-level AUROC
of the reconstruction MSE. The same recipe (``quality_common.MNIST_RECIPE``) for every digit;
the threshold is normals-only (``quantile:0.98`` of held-back training normals), at which TPR and
TNR on the test split are reported too.

    python benchmarks/mnist_oneclass.py [--digits 0,1,5] [--steps N] [--members K] [--seed S]
        [--out-json NAME]

Needs ../shared/data/mnist-oneclass (exits 2 with a message when it is absent). Prints a table
and writes benchmarks/results/mnist_oneclass.json and docs/img/mnist_oneclass_auroc.png for the
full recipe run (all digits, no overrides); any other run writes mnist_oneclass_custom.json and
no plot unless --out-json / --plot say otherwise, so a trial never replaces published results.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from quality_common import (
    IMG_DIR,
    MNIST_RECIPE,
    RESULTS_DIR,
    environment,
    log,
    size_ratio,
    threshold_metrics,
    train_and_score,
    write_json,
)
from shared_data import DIGITS, protocol_split, require_mnist

NORMALS_ONLY_RULE = "quantile:0.98"   # aims at TNR >= 0.98 using held-back normals only
INT8_TOLERANCE = 0.002                # |AUROC int8 - AUROC float| allowed
SIZE_RATIO_TARGET = 0.25              # int8 file at most this share of the float file
PUBLISHED_MEAN_AUROC = {"DCAE": 0.897, "Deep SVDD": 0.948, "OCGAN": 0.975, "GeoTrans": 0.980}


def run_digit(digit: int, work: Path, recipe: dict[str, Any]) -> dict[str, Any]:
    """Train and evaluate one digit; returns its row of the results table."""
    from sklearn.metrics import roc_auc_score

    from trainer.data import from_arrays, make_spec

    train, test_normals, anomalies = protocol_split(digit)
    dataset = from_arrays(make_spec(recipe["size"], 1), train, test_normals, anomalies,
                          source=f"mnist{digit}.npz")
    trained = train_and_score(dataset, work / f"digit{digit}", threshold=NORMALS_ONLY_RULE,
                              **recipe)
    high = trained.bundle["threshold"]["high"]
    int8 = threshold_metrics(trained.labels, trained.int8, high)
    flt = threshold_metrics(trained.labels, trained.float32, *trained.float_bounds())
    auroc_float = float(roc_auc_score(trained.labels, trained.float32))
    training = trained.bundle["training"]
    return {
        "digit": digit, "train_normals": len(train), "test_normals": len(test_normals),
        "anomalies": len(anomalies),
        "auroc_int8": int8["auroc"], "auroc_float": auroc_float,
        "auroc_gap": abs(int8["auroc"] - auroc_float),
        "threshold_rule": NORMALS_ONLY_RULE, "threshold": high,
        "tpr_at_threshold_int8": int8["tpr"], "tnr_at_threshold_int8": int8["tnr"],
        "at_threshold": {"int8": int8, "float": flt},
        "steps_run": training["steps_run"], "best_round": training["best_round"],
        "seconds": round(trained.fit_seconds, 1), **size_ratio(trained.bundle),
    }


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    import numpy as np

    int8 = [r["auroc_int8"] for r in rows]
    worst = min(rows, key=lambda r: r["auroc_int8"])
    return {
        "mean_auroc_int8": float(np.mean(int8)),
        "mean_auroc_float": float(np.mean([r["auroc_float"] for r in rows])),
        "worst_digit": worst["digit"], "worst_auroc_int8": worst["auroc_int8"],
        "max_auroc_gap": max(r["auroc_gap"] for r in rows),
        "int8_within_tolerance": all(r["auroc_gap"] <= INT8_TOLERANCE for r in rows),
        "max_size_ratio": max(r["ratio"] for r in rows),
        "mean_tpr_at_threshold_int8": float(np.mean([r["tpr_at_threshold_int8"] for r in rows])),
        "mean_tnr_at_threshold_int8": float(np.mean([r["tnr_at_threshold_int8"] for r in rows])),
        "total_seconds": round(sum(r["seconds"] for r in rows), 1),
    }


def format_table(rows: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    lines = ["digit  AUROC float  AUROC int8   gap     TPR@thr  TNR@thr  int8/float  seconds"]
    for r in rows:
        lines.append(f"{r['digit']:>5}  {r['auroc_float']:11.4f}  {r['auroc_int8']:10.4f}  "
                     f"{r['auroc_gap']:.4f}  {r['tpr_at_threshold_int8']:7.3f}  "
                     f"{r['tnr_at_threshold_int8']:7.3f}  {r['ratio']:10.3f}  {r['seconds']:7.1f}")
    lines.append(f" mean  {summary['mean_auroc_float']:11.4f}  {summary['mean_auroc_int8']:10.4f}"
                 f"  worst digit {summary['worst_digit']} ({summary['worst_auroc_int8']:.4f}), "
                 f"total {summary['total_seconds']:.0f} s")
    return "\n".join(lines)


def plot_bars(rows: list[dict[str, Any]], path: Path) -> None:
    from trainer.report import _pyplot, _save

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    digits = [r["digit"] for r in rows]
    ax.bar([d - 0.2 for d in digits], [r["auroc_float"] for r in rows], 0.4, label="float")
    ax.bar([d + 0.2 for d in digits], [r["auroc_int8"] for r in rows], 0.4, label="int8")
    for index, (name, value) in enumerate(PUBLISHED_MEAN_AUROC.items()):
        ax.axhline(value, linewidth=0.7, linestyle=":", color="grey")
        # Alternate sides: OCGAN and GeoTrans lie 0.005 apart.
        ax.text(9.7 if index % 2 else -0.7, value, name, fontsize=6, va="bottom",
                ha="right" if index % 2 else "left")
    ax.set_xticks(digits)
    ax.set_ylim(0.6, 1.0)
    ax.set_xlabel("normal digit")
    ax.set_ylabel("AUROC")
    ax.set_title("one-class MNIST (lines: published mean AUROC)", fontsize=10)
    ax.legend(fontsize=8, loc="lower left")
    _save(fig, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--digits", default=",".join(map(str, DIGITS)))
    parser.add_argument("--steps", type=int, default=None, help="override the recipe's steps")
    parser.add_argument("--members", type=int, default=None,
                        help="override the recipe's members (autoencoders in one model)")
    parser.add_argument("--seed", type=int, default=0,
                        help="training seed (weights, batches, held-back normals); the protocol's "
                             "test split does not depend on it")
    parser.add_argument("--out-json", default=None,
                        help="results file in benchmarks/results (default: mnist_oneclass.json "
                             "for the full recipe run, mnist_oneclass_custom.json for any other, "
                             "so that a trial never replaces the published results)")
    parser.add_argument("--plot", default=None,
                        help="PNG of the AUROC bars (default: docs/img/mnist_oneclass_auroc.png "
                             "for the full recipe run, none for any other; '' for none)")
    parser.add_argument("--plot-only", action="store_true",
                        help="redraw the plot from the results JSON, train nothing")
    args = parser.parse_args()
    full_run = (args.digits == ",".join(map(str, DIGITS)) and not args.steps
                and not args.members and args.seed == 0)
    if args.out_json is None:
        args.out_json = "mnist_oneclass.json" if full_run or args.plot_only else (
            "mnist_oneclass_custom.json")
    if args.plot is None:
        args.plot = str(IMG_DIR / "mnist_oneclass_auroc.png") if full_run or args.plot_only else ""
    if args.plot_only:
        saved = json.loads((RESULTS_DIR / args.out_json).read_text(encoding="utf-8"))
        plot_bars(saved["rows"], Path(args.plot))
        return 0
    require_mnist()
    recipe = dict(MNIST_RECIPE)
    if args.steps:
        recipe["steps"] = args.steps
    if args.members:
        recipe["members"] = args.members
    recipe["seed"] = args.seed
    digits = [int(d) for d in args.digits.split(",")]
    rows = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mnist-oneclass-") as work:
        for digit in digits:
            rows.append(run_digit(digit, Path(work), recipe))
            r = rows[-1]
            log(f"digit {digit}: AUROC float {r['auroc_float']:.4f} int8 {r['auroc_int8']:.4f} "
                f"TPR {r['tpr_at_threshold_int8']:.3f} TNR {r['tnr_at_threshold_int8']:.3f} "
                f"({r['seconds']:.0f} s)")
            summary = summarise(rows)
            summary["wall_seconds"] = round(time.perf_counter() - started, 1)
            write_json(args.out_json, {"protocol": __doc__.split("\n\n")[1],
                                       "recipe": recipe, "threshold_rule": NORMALS_ONLY_RULE,
                                       "published_mean_auroc": PUBLISHED_MEAN_AUROC,
                                       "rows": rows, "summary": summary,
                                       "environment": environment()})
    print(format_table(rows, summary))
    if len(rows) > 1 and args.plot:
        plot_bars(rows, Path(args.plot))
    return 0


if __name__ == "__main__":
    sys.exit(main())
