"""Casting case on the synthetic production line: plain AE against the VAE, two threshold rules.

Crops come from ``linesim`` (MVTec layout, as ``python -m linesim crops`` writes them) with the
demo's model settings (size 32, filters 16,32,64, latent 8 for the AE). Two independent stretches
of the line are generated: a *calibration* set (training normals, held-back normals and labelled
defects: the labelled rules ``maxmin`` and ``band`` choose their bounds on it) and an
*evaluation* set from another seed, on which TPR and TNR are reported, so the bounds are not
judged on the crops that chose them. Target: TPR and TNR both ≥ 0.91.

    python benchmarks/quality_casting.py [--quick]

Writes benchmarks/results/quality_casting.json and docs/img/casting_*.png.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from quality_common import (
    IMG_DIR,
    ROOT,
    environment,
    int8_scorer,
    log,
    size_ratio,
    threshold_metrics,
    train_and_score,
    write_json,
)

TARGET_RATE = 0.91
CALIBRATION_SEED, EVALUATION_SEED = 1, 2
TRAIN_FRAMES, CALIBRATION_FRAMES, EVALUATION_FRAMES = 40, 30, 60
STEPS, QUICK_STEPS = 3000, 600
RULES = ("maxmin", "band")
# (label, model kind, latent): the demo's AE and the VAE with the latent sizes tried before.
MODELS: tuple[tuple[str, str, int], ...] = (("AE latent 8", "ae", 8),
                                            ("VAE latent 2", "vae", 2),
                                            ("VAE latent 100", "vae", 100))
RECIPE: dict[str, Any] = {"size": 32, "filters": (16, 32, 64), "batch_size": 32}


def make_crops(work: Path, quick: bool) -> tuple[Path, Path]:
    """(calibration folder, evaluation folder) of MVTec-style well crops."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from linesim import LineScene, SceneConfig, write_crops

    scale = 2 if quick else 1
    calibration, evaluation = work / "calibration", work / "evaluation"
    write_crops(LineScene(SceneConfig(), seed=CALIBRATION_SEED), calibration,
                train_frames=TRAIN_FRAMES // scale, test_frames=CALIBRATION_FRAMES // scale)
    # Evaluation uses only test/ (one train frame keeps the folder loadable); its own seed and
    # a later stretch of frames.
    write_crops(LineScene(SceneConfig(), seed=EVALUATION_SEED), evaluation, train_frames=1,
                test_frames=EVALUATION_FRAMES // scale, start=10_000)
    return calibration, evaluation


def run_case(label: str, kind: str, latent: int, rule: str, calibration: Path,
             evaluation: Path, work: Path, steps: int, quick: bool) -> dict[str, Any]:
    from trainer.data import load_dataset, make_spec

    spec = make_spec(RECIPE["size"], 1)
    calibration_data = load_dataset(calibration, spec)
    evaluation_data = load_dataset(evaluation, spec)
    out = work / f"{kind}{latent}-{rule}"
    trained = train_and_score(calibration_data, out, threshold=rule, model=kind, latent=latent,
                              steps=steps, **RECIPE)
    # Score the independent evaluation stretch with the same bundle.
    import numpy as np

    from trainer.evaluate import _float_scores

    scorer = int8_scorer(out)
    images = np.concatenate([evaluation_data.test_normals, evaluation_data.test_anomalies])
    labels = np.concatenate([np.zeros(len(evaluation_data.test_normals), int),
                             np.ones(len(evaluation_data.test_anomalies), int)])
    t = trained.bundle["threshold"]
    int8 = threshold_metrics(labels, scorer.score(images), t.get("high"), t.get("low"))
    flt = threshold_metrics(labels, _float_scores(out / "float_model.keras", images),
                            *trained.float_bounds())
    row = {"model": label, "kind": kind, "latent": latent, "rule": rule,
           "threshold": {"high": t.get("high"), "low": t.get("low")},
           "calibration": t.get("chosen_on", {}),
           "evaluation_normals": len(evaluation_data.test_normals),
           "evaluation_anomalies": len(evaluation_data.test_anomalies),
           "int8": int8, "float": flt,
           "meets_target_int8": int8["tpr"] >= TARGET_RATE and int8["tnr"] >= TARGET_RATE,
           "steps_run": trained.bundle["training"]["steps_run"],
           "seconds": round(trained.fit_seconds, 1), **size_ratio(trained.bundle)}
    if kind == "ae" and rule == "band" and not quick:
        _plots(out, evaluation_data, labels, images, scorer, t)
    return row


def _plots(bundle_dir: Path, data: Any, labels: Any, images: Any, scorer: Any,
           threshold: dict[str, Any]) -> None:
    import json

    from trainer.report import plot_learning_curve, plot_reconstructions, plot_score_histogram

    meta = json.loads((bundle_dir / "bundle.json").read_text(encoding="utf-8"))
    plot_learning_curve(meta["training"]["history"], IMG_DIR / "casting_learning_curve.png",
                        title="casting AE: learning curve")
    normal_scores = scorer.score(data.test_normals)
    anomaly_scores = scorer.score(data.test_anomalies)
    plot_score_histogram(normal_scores, anomaly_scores, IMG_DIR / "casting_histogram.png",
                         high=threshold.get("high"), low=threshold.get("low"),
                         title="casting AE, band rule: int8 scores (evaluation line)")
    shown = 8
    plot_reconstructions(
        [("normal", data.test_normals[:shown], scorer.reconstruct(data.test_normals[:shown])),
         ("defect", data.test_anomalies[:shown],
          scorer.reconstruct(data.test_anomalies[:shown]))],
        IMG_DIR / "casting_reconstructions.png",
        scores=[normal_scores[:shown], anomaly_scores[:shown]])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="half the crops, 600 steps")
    args = parser.parse_args()
    steps = QUICK_STEPS if args.quick else STEPS
    rows = []
    with tempfile.TemporaryDirectory(prefix="casting-") as tmp:
        work = Path(tmp)
        calibration, evaluation = make_crops(work, args.quick)
        for label, kind, latent in MODELS:
            for rule in RULES:
                rows.append(run_case(label, kind, latent, rule, calibration, evaluation, work,
                                     steps, args.quick))
                r = rows[-1]
                log(f"{label:<15} {rule:<7} int8 TPR {r['int8']['tpr']:.3f} TNR "
                    f"{r['int8']['tnr']:.3f} AUROC {r['int8']['auroc']:.4f} | float TPR "
                    f"{r['float']['tpr']:.3f} TNR {r['float']['tnr']:.3f} ({r['seconds']:.0f} s)")
    # A smoke run never overwrites the committed figures.
    name = "quality_casting_quick.json" if args.quick else "quality_casting.json"
    write_json(name, {"description": __doc__.split("\n\n")[1], "steps": steps,
                      "quick": args.quick, "target_rate": TARGET_RATE, "rows": rows,
                      "environment": environment()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
