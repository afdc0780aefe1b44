"""From a trained float model to a verified bundle, calibrated with the device's own code path.

1. Convert: one int8 flatbuffer per batch size, plus a float batch-1 reference.
2. Write a staging bundle, load it back with :func:`edge.bundle.load_bundle` (hash checks and all)
   and score the held-back normals — and labeled anomalies, if any — with
   :class:`edge.scoring.Scorer` on the int8 models: exactly what the device will compute.
3. Choose the threshold on those int8 scores; record normal-score statistics and float-vs-int8
   agreement on the same crops.
4. Rewrite the staging bundle with all of it and move it into place, replacing an older bundle
   only once the new one is complete.
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import roc_auc_score

from edge.bundle import BUNDLE_FILE, Threshold, load_bundle, write_bundle
from edge.errors import ConfigError
from edge.scoring import Scorer, declared_members, reconstruction_mse
from trainer.data import Dataset
from trainer.fit import FitResult
from trainer.quantize import Conversion, convert_all
from trainer.quiet import silenced
from trainer.thresholds import Rule, choose_threshold

Reporter = Callable[[str], None]

FLOAT_KERAS_FILE = "float_model.keras"
FLOAT_TFLITE_FILE = "model_float.tflite"
NORMAL_QUANTILES = (0.5, 0.9, 0.95, 0.99, 0.999)
PIXEL_MAX = 255.0
# Stand-in bound for the staging bundle, replaced by the calibrated threshold before shipping.
PROVISIONAL_HIGH = 1.0
BUNDLE_DIR_MODE = 0o755
VERSIONED_PACKAGES = ("edge-anomaly", "tensorflow-cpu", "tensorflow", "keras", "numpy",
                      "scikit-learn", "ai-edge-litert", "pillow")


@dataclass(frozen=True)
class ExportResult:
    """Where the bundle went and the figures the user is shown at the end."""

    path: Path
    threshold: Threshold
    normal_scores: dict[str, Any]
    agreement: dict[str, Any]
    model_bytes: dict[str, int]
    conversion_seconds: dict[str, float]


def normal_score_stats(scores: np.ndarray, split: str) -> dict[str, Any]:
    """count, mean, std, min, max and quantiles of int8 normal scores (bundle.normal_scores)."""
    return {
        "count": len(scores),
        "mean": float(np.mean(scores)),
        "std": float(np.std(scores)),
        "min": float(np.min(scores)),
        "max": float(np.max(scores)),
        "quantiles": {f"{q:g}": float(np.quantile(scores, q)) for q in NORMAL_QUANTILES},
        "scores_from": "int8",
        "split": split,
    }


def tflite_float_scores(float_blob: bytes, images_u8: np.ndarray) -> np.ndarray:
    """Reconstruction MSE from the float batch-1 TFLite model, one invoke per crop."""
    from ai_edge_litert.interpreter import Interpreter

    with silenced():  # LiteRT announces its XNNPACK delegate on stderr
        interpreter = Interpreter(model_content=float_blob, num_threads=2)
        interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    unit = images_u8.astype(np.float32) / np.float32(PIXEL_MAX)
    reconstruction = np.empty((len(unit), *out["shape"][1:]), dtype=np.float32)
    for i in range(len(unit)):
        interpreter.set_tensor(inp["index"], unit[i:i + 1])
        interpreter.invoke()
        reconstruction[i] = interpreter.get_tensor(out["index"])[0]
    return reconstruction_mse(unit, reconstruction,
                              declared_members(inp["shape"], out["shape"]))


def agreement_stats(float_scores: np.ndarray, int8_scores: np.ndarray,
                    labels: np.ndarray | None) -> dict[str, Any]:
    """Pearson / Spearman of float vs int8 scores on the same crops, AUROC of each if labeled."""
    result: dict[str, Any] = {"crops": len(float_scores), "float_from": "float TFLite batch 1"}
    varied = len(float_scores) > 2 and np.std(float_scores) > 0 and np.std(int8_scores) > 0
    result["pearson"] = float(pearsonr(float_scores, int8_scores)[0]) if varied else None
    result["spearman"] = float(spearmanr(float_scores, int8_scores)[0]) if varied else None
    result["mean_abs_diff"] = float(np.mean(np.abs(float_scores - int8_scores)))
    if labels is not None and 0 < labels.sum() < len(labels):
        result["auroc_float"] = float(roc_auc_score(labels, float_scores))
        result["auroc_int8"] = float(roc_auc_score(labels, int8_scores))
    return result


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _int8_scorer(staging: Path) -> Scorer:
    bundle = load_bundle(staging)  # the edge's own checks: hashes, format, batch-1 model
    with silenced():
        return Scorer(bundle)


def check_output_dir(out_dir: Path) -> None:
    """ConfigError unless ``out_dir`` is new, empty, or an older bundle we may replace."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file; give a directory such as models/NAME.")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / BUNDLE_FILE).is_file():
        raise ConfigError(f"--out {out_dir} exists and is not a bundle (no {BUNDLE_FILE}); "
                          "refusing to overwrite it. Choose a new directory.")
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file in the way, no permission, a read-only mount
        raise ConfigError(f"--out {out_dir}: cannot create its folder {out_dir.parent} "
                          f"({exc}); choose a writable place such as models/NAME.") from exc
    if not os.access(out_dir.parent, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {out_dir}: {out_dir.parent} is not writable by this user; "
                          "choose a writable place such as models/NAME.")


def _move_into_place(staging: Path, out_dir: Path) -> None:
    """Swap the finished staging bundle in; an old bundle is removed only after the swap."""
    old = None
    if out_dir.exists():
        old = staging.with_name(staging.name.replace(".staging-", ".old-"))
        out_dir.rename(old)
    staging.rename(out_dir)
    if old is not None:
        shutil.rmtree(old)


def export_bundle(fit: FitResult, dataset: Dataset, out_dir: Path, *, rule: Rule,
                  batch_sizes: tuple[int, ...], name: str, keep_float: bool, seed: int,
                  provenance: dict[str, Any], report: Reporter = print) -> ExportResult:
    """Convert, calibrate on int8 scores, and write the bundle to ``out_dir``."""
    out_dir = Path(out_dir)
    check_output_dir(out_dir)
    report(f"converting to int8 TFLite for batch sizes {', '.join(map(str, batch_sizes))} ...")
    conversion: Conversion = convert_all(fit.model, fit.config, batch_sizes, fit.train_normals,
                                         seed=seed)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.staging-", dir=out_dir.parent))
    staging.chmod(BUNDLE_DIR_MODE)  # mkdtemp makes it owner-only; a bundle is meant to be copied
    try:
        write_bundle(staging, name=name, input_spec=dataset.spec,
                     threshold=Threshold(rule="provisional", high=PROVISIONAL_HIGH),
                     models=conversion.int8, normal_scores={}, extra={},
                     members=fit.config.members)
        scorer = _int8_scorer(staging)
        val_scores = scorer.score(fit.val_normals)
        anomalies = dataset.test_anomalies
        anomaly_scores = scorer.score(anomalies) if len(anomalies) else np.empty(0)
        # Record only the data the rule really used: a normals-only rule never sees anomalies.
        labelled = rule.needs_labels and len(anomalies) > 0
        split = "held-back validation normals" + (" + test anomalies" if labelled else "")
        threshold = choose_threshold(rule, val_scores, anomaly_scores if labelled else None,
                                     chosen_on={"split": split, "scores": "int8"})
        stats = normal_score_stats(val_scores, "held-back validation normals")
        agreement = _agreement(conversion.float_batch1, scorer, fit, dataset, val_scores,
                               anomaly_scores)
        model_bytes = {f"int8_b{size}": len(blob) for size, blob in conversion.int8.items()}
        model_bytes["float_b1"] = len(conversion.float_batch1)
        extra = {
            "agreement": agreement,
            "provenance": {
                **provenance,
                "seed": seed,
                "steps": fit.steps_run,
                "epochs": round(fit.epochs_equivalent, 2),
                "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds")
                .replace("+00:00", "Z"),
                "libraries": library_versions(),
                "model": fit.config.to_json(),
                "model_bytes": model_bytes,
                "conversion_seconds": conversion.seconds,
                "data": _json_summary(dataset.summary),
                "warnings": list(fit.warnings),
            },
            "training": {
                "steps_budget": fit.steps_budget,
                "steps_run": fit.steps_run,
                "steps_per_round": fit.steps_per_round,
                "batch_size": fit.batch_size,
                "epochs_equivalent": round(fit.epochs_equivalent, 2),
                "best_round": fit.best_round,
                "steps_at_best": fit.best_round * fit.steps_per_round,
                "train_normals": len(fit.train_normals),
                "val_normals": len(fit.val_normals),
                "baseline": fit.baseline,
                "history": fit.history,
            },
        }
        write_bundle(staging, name=name, input_spec=dataset.spec, threshold=threshold,
                     models=conversion.int8, normal_scores=stats, extra=extra,
                     members=fit.config.members)
        if keep_float:
            # .keras is a zip of JSON config + weights; no pickle is involved in loading it.
            fit.model.save(staging / FLOAT_KERAS_FILE)
            (staging / FLOAT_TFLITE_FILE).write_bytes(conversion.float_batch1)
        load_bundle(staging)  # what we ship must pass the edge's checks
        _move_into_place(staging, out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return ExportResult(path=out_dir, threshold=threshold, normal_scores=stats,
                        agreement=agreement, model_bytes=model_bytes,
                        conversion_seconds=conversion.seconds)


def _agreement(float_blob: bytes, scorer: Scorer, fit: FitResult, dataset: Dataset,
               val_scores: np.ndarray, anomaly_scores: np.ndarray) -> dict[str, Any]:
    """Float vs int8 on every labeled crop we have: val normals, test normals, anomalies."""
    test_normal_scores = (scorer.score(dataset.test_normals) if len(dataset.test_normals)
                          else np.empty(0))
    crops = np.concatenate([fit.val_normals, dataset.test_normals, dataset.test_anomalies])
    int8_scores = np.concatenate([val_scores, test_normal_scores, anomaly_scores])
    labels = np.concatenate([np.zeros(len(fit.val_normals) + len(dataset.test_normals), int),
                             np.ones(len(dataset.test_anomalies), int)])
    float_scores = tflite_float_scores(float_blob, crops)
    return agreement_stats(float_scores, int8_scores, labels)


def _json_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """The data summary as plain JSON types (tuples → lists)."""
    return {key: (list(value) if isinstance(value, tuple) else value)
            for key, value in summary.items()}
