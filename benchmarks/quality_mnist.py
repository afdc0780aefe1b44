"""Reproductions of the earlier MNIST experiments, float and int8 (issue 5, items 1 to 3).

1. ``split``: digits 0–4 are normal, 5–9 anomalous. The normals of 0–4 are shuffled with
   ``default_rng(0)``; 80 % train, 20 % plus every 5–9 image are the test set. Threshold = the
   largest held-back normal score (``max``); AUROC and TPR/TNR at it; learning curve; originals
   beside reconstructions.
2. ``contaminated``: digit 1 trained with 1 % of "3" mixed in (the protocol's training 1s plus
   3s amounting to 1 % of the mix). Threshold = 99.9 % quantile of the *training* errors; how many
   training images are flagged and how many of them are really 3s; the worst reconstructions
   (``recon_vis.png``) and the loss plot.
3. ``anogan``: digit 0 against the rest (the protocol split), AUROC, precision, recall and F1
   (anomaly = positive) at normals-only thresholds, to set beside AnoGAN's published figures.

    python benchmarks/quality_mnist.py [--quick] [--only split|contaminated|anogan]

Needs ../shared/data/mnist-oneclass (exits 2 with a message when absent).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from quality_common import (
    IMG_DIR,
    MNIST_RECIPE,
    RESULTS_DIR,
    environment,
    int8_scorer,
    log,
    size_ratio,
    threshold_metrics,
    train_and_score,
    write_json,
)
from shared_data import PROTOCOL_SEED, TRAIN_SHARE, all_normals, protocol_split, require_mnist

NORMAL_DIGITS, ANOMALY_DIGITS = (0, 1, 2, 3, 4), (5, 6, 7, 8, 9)
CLEAN_DIGIT, CONTAMINANT_DIGIT = 1, 3
CONTAMINATION = 0.01          # share of the training mix that is the contaminant digit
TRAIN_QUANTILE = 0.999        # threshold: this quantile of training errors
WORST_SHOWN = 10              # worst reconstructions in recon_vis.png
GRID_SAMPLES = 10             # originals / reconstructions per class in the split grid
QUICK_STEPS = 300
ANOGAN_DIGIT = 0
ANOGAN_RULE = "quantile:0.99"  # normals-only, fixed before looking at any anomaly
EXPERIMENTS = ("split", "contaminated", "anogan")


def _dataset(train: np.ndarray, test_normals: np.ndarray, anomalies: np.ndarray,
             source: str, size: int) -> Any:
    from trainer.data import from_arrays, make_spec

    return from_arrays(make_spec(size, 1), train, test_normals, anomalies, source=source)


def split_experiment(work: Path, recipe: dict[str, Any], img_dir: Path) -> dict[str, Any]:
    """Digits 0–4 normal vs 5–9, threshold ``max``."""
    from trainer.report import plot_learning_curve, plot_reconstructions

    normals = all_normals()
    pool = np.concatenate([normals[d] for d in NORMAL_DIGITS])
    order = np.random.default_rng(PROTOCOL_SEED).permutation(len(pool))
    cut = int(len(pool) * TRAIN_SHARE)
    anomalies = np.concatenate([normals[d] for d in ANOMALY_DIGITS])
    dataset = _dataset(pool[order[:cut]], pool[order[cut:]], anomalies, "mnist 0-4 vs 5-9",
                       recipe["size"])
    out = work / "split"
    trained = train_and_score(dataset, out, threshold="max", **recipe)
    high = trained.bundle["threshold"]["high"]
    history = trained.bundle["training"]["history"]
    plot_learning_curve(history, img_dir / "mnist_split_learning_curve.png",
                        title="digits 0-4: learning curve")
    scorer = int8_scorer(out)
    shown_normal = dataset.test_normals[:GRID_SAMPLES]
    shown_anomaly = dataset.test_anomalies[
        np.random.default_rng(PROTOCOL_SEED).permutation(len(anomalies))[:GRID_SAMPLES]]
    plot_reconstructions(
        [("0-4 (normal)", shown_normal, scorer.reconstruct(shown_normal)),
         ("5-9 (anomaly)", shown_anomaly, scorer.reconstruct(shown_anomaly))],
        img_dir / "mnist_split_reconstructions.png",
        scores=[scorer.score(shown_normal), scorer.score(shown_anomaly)])
    return {"test_normals": len(dataset.test_normals), "anomalies": len(anomalies),
            "train_normals": len(dataset.train_normals), "threshold_rule": "max",
            "threshold": high,
            "int8": threshold_metrics(trained.labels, trained.int8, high),
            "float": threshold_metrics(trained.labels, trained.float32,
                                       *trained.float_bounds()),
            "steps_run": trained.bundle["training"]["steps_run"],
            "seconds": round(trained.fit_seconds, 1), **size_ratio(trained.bundle)}


def contaminated_experiment(work: Path, recipe: dict[str, Any],
                            img_dir: Path) -> dict[str, Any]:
    """Digit 1 with 1 % of 3s mixed into training; who gets flagged at the 99.9 % quantile."""
    from trainer.evaluate import _float_scores
    from trainer.report import plot_learning_curve, plot_reconstructions

    ones, test_ones, anomalies = protocol_split(CLEAN_DIGIT)
    # The 3s mixed in must not be test anomalies too (the protocol's anomalies of digit 1 include
    # some 3s): training on a test image would flatter the test AUROC.
    tested = {row.tobytes() for row in anomalies}
    threes = np.array([row for row in all_normals()[CONTAMINANT_DIGIT]
                       if row.tobytes() not in tested])
    count = round(len(ones) * CONTAMINATION / (1.0 - CONTAMINATION))
    mixed_in = threes[np.random.default_rng(PROTOCOL_SEED).permutation(len(threes))[:count]]
    train = np.concatenate([ones, mixed_in])
    is_three = np.concatenate([np.zeros(len(ones), bool), np.ones(count, bool)])
    dataset = _dataset(train, test_ones, anomalies, "mnist 1 + 1% of 3", recipe["size"])
    out = work / "contaminated"
    trained = train_and_score(dataset, out, threshold="max", **recipe)
    scorer = int8_scorer(out)
    train_u8 = dataset.train_normals
    result: dict[str, Any] = {"train_images": len(train), "threes_mixed_in": count,
                              "contamination": CONTAMINATION, "quantile": TRAIN_QUANTILE}
    for kind, scores in (("int8", scorer.score(train_u8)),
                         ("float", _float_scores(out / "float_model.keras", train_u8))):
        threshold = float(np.quantile(scores, TRAIN_QUANTILE))
        flagged = scores > threshold
        ranked = np.argsort(scores)[::-1]
        result[kind] = {"threshold": threshold, "flagged": int(flagged.sum()),
                        "flagged_really_3": int((flagged & is_three).sum()),
                        "threes_in_top_100": int(is_three[ranked[:100]].sum()),
                        "auroc_3_vs_1_on_training": _auroc(is_three, scores)}
        if kind == "int8":
            worst = ranked[:WORST_SHOWN]
            plot_reconstructions(
                [("worst", train_u8[worst], scorer.reconstruct(train_u8[worst]))],
                img_dir / "recon_vis.png", scores=[scores[worst]],
                title="digit 1 + 1% of 3: worst int8 reconstructions of the training set")
            result["int8"]["worst_are_3"] = [bool(is_three[i]) for i in worst]
    plot_learning_curve(trained.bundle["training"]["history"],
                        img_dir / "mnist_contaminated_loss.png", title="digit 1 + 1% of 3: loss")
    result["test_auroc_int8"] = _auroc(trained.labels.astype(bool), trained.int8)
    result["test_auroc_float"] = _auroc(trained.labels.astype(bool), trained.float32)
    result["seconds"] = round(trained.fit_seconds, 1)
    return result


def anogan_experiment(work: Path, recipe: dict[str, Any],
                      img_dir: Path) -> dict[str, Any]:
    """Digit 0 against the rest (the protocol split) at normals-only thresholds.

    The bundle's rule is ``quantile:0.99`` of held-back training normals; the 0.999 quantile of
    the same normals (recorded in bundle.json) is a second, stricter operating point.
    """
    train, test_normals, anomalies = protocol_split(ANOGAN_DIGIT)
    dataset = _dataset(train, test_normals, anomalies, f"mnist{ANOGAN_DIGIT}", recipe["size"])
    trained = train_and_score(dataset, work / "anogan", threshold=ANOGAN_RULE, **recipe)
    strict = trained.bundle["normal_scores"]["quantiles"]["0.999"]
    points = {ANOGAN_RULE: trained.bundle["threshold"]["high"], "quantile:0.999": strict}
    return {"digit": ANOGAN_DIGIT, "test_normals": len(test_normals),
            "anomalies": len(anomalies),
            "operating_points": {rule: {"threshold": high,
                                        "int8": threshold_metrics(trained.labels, trained.int8,
                                                                  high),
                                        "float": threshold_metrics(
                                            trained.labels, trained.float32,
                                            *trained.float_bounds(rule))}
                                 for rule, high in points.items()},
            "seconds": round(trained.fit_seconds, 1)}


def _auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels.astype(int), scores))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_STEPS} steps (smoke run)")
    parser.add_argument("--only", choices=EXPERIMENTS, default=None)
    args = parser.parse_args()
    require_mnist()
    recipe = dict(MNIST_RECIPE)
    if args.quick:
        recipe["steps"] = QUICK_STEPS
    # A smoke run never overwrites the committed figures' numbers; --only updates one entry.
    name = "quality_mnist_quick.json" if args.quick else "quality_mnist.json"
    existing = RESULTS_DIR / name
    results: dict[str, Any] = (json.loads(existing.read_text(encoding="utf-8"))
                               if args.only and existing.is_file() else {})
    results.update({"recipe": recipe, "quick": args.quick, "environment": environment()})
    with tempfile.TemporaryDirectory(prefix="quality-mnist-") as tmp:
        img_dir = Path(tmp) / "img" if args.quick else IMG_DIR  # a smoke run keeps docs/img
        for experiment in EXPERIMENTS:
            if args.only not in (None, experiment):
                continue
            key, job = {"split": ("split_0to4_vs_5to9", split_experiment),
                        "contaminated": ("contaminated_1_with_3", contaminated_experiment),
                        "anogan": ("digit0_vs_rest", anogan_experiment)}[experiment]
            results[key] = job(Path(tmp), recipe, img_dir)
            _log_result(key, results[key])
            write_json(name, results)  # after each experiment: a later failure keeps this one
    return 0


def _log_result(key: str, result: dict[str, Any]) -> None:
    if key == "split_0to4_vs_5to9":
        log(f"split: AUROC int8 {result['int8']['auroc']:.4f} float "
            f"{result['float']['auroc']:.4f}, TPR {result['int8']['tpr']:.3f} TNR "
            f"{result['int8']['tnr']:.3f} at max")
    elif key == "contaminated_1_with_3":
        log(f"contaminated: int8 flagged {result['int8']['flagged']}, really 3: "
            f"{result['int8']['flagged_really_3']}; float flagged {result['float']['flagged']}, "
            f"really 3: {result['float']['flagged_really_3']}")
    else:
        for rule, point in result["operating_points"].items():
            m = point["int8"]
            log(f"digit 0 vs rest at {rule}: int8 precision {m['precision']:.3f} recall "
                f"{m['recall']:.3f} F1 {m['f1']:.3f} AUROC {m['auroc']:.4f}")


if __name__ == "__main__":
    sys.exit(main())
