"""Shared pieces of the quality benchmarks: train a bundle, score it float and int8, save JSON.

Every figure comes from the exported bundle: int8 scores through :class:`edge.scoring.Scorer`
(what the device runs) and float scores from the bundle's ``float_model.keras`` with the same
reconstruction-MSE definition. Each model is judged at its own threshold: the bundle's rule applied
to int8 scores (the bundle's threshold) or to float scores of the same held-back normals (and, for
a labelled rule, the same anomalies) — a float model at a bound calibrated on int8 scores would mix
calibration with the cost of quantization.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS_DIR = BENCH_DIR / "results"
IMG_DIR = ROOT / "docs" / "img"
SCORE_BATCH = 64  # the int8 batch model the benchmarks score with (plus batch 1, always)

# The MNIST recipe, the same for every digit: four stride-2 stages down to a 2×2×8 bottleneck
# (32 values); inpainting + denoising training (a random 8×8 square of the input blanked, Gaussian
# noise σ 0.05, the target whole); Adam 2e-3 with cosine decay over 1,500 steps of 64, no early
# stopping. Chosen from float-only trials on the four weakest digits of the earlier recipe (8, 2,
# 5, 3; experiments/mnist_trials.py, docs/results.md lists them), then run unchanged on all ten.
MNIST_RECIPE: dict[str, Any] = {
    "size": 28, "filters": (32, 64, 64, 64), "latent": 8, "steps": 1500, "batch_size": 64,
    "learning_rate": 2e-3, "lr_schedule": "cosine", "patience": 0,
    "augment": ("noise", "erase"),
}


@dataclass
class Trained:
    """A bundle and its scores on a labeled test split."""

    path: Path
    bundle: dict[str, Any]
    int8: np.ndarray        # scores of test normals then anomalies
    float32: np.ndarray
    labels: np.ndarray
    fit_seconds: float
    float_val: np.ndarray   # float scores of the held-back normals the threshold was chosen on

    def float_bounds(self, rule: str | None = None) -> tuple[float | None, float | None]:
        """(high, low) of ``rule`` (default: the bundle's) calibrated on float scores, on the
        data the bundle's int8 threshold was chosen on."""
        from trainer.thresholds import choose_threshold, parse_rule

        parsed = parse_rule(rule or self.bundle["provenance"]["trainer_options"]["threshold"])
        anomalies = self.float32[self.labels == 1] if parsed.needs_labels else None
        chosen = choose_threshold(parsed, self.float_val, anomalies)
        return chosen.high, chosen.low


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def train_and_score(dataset: Any, out_dir: Path, *, threshold: str, model: str = "ae",
                    seed: int = 0, **recipe: Any) -> Trained:
    """Fit a bundle on ``dataset`` (keeping the float model) and score its labeled test split."""
    from edge.bundle import load_bundle
    from trainer.evaluate import _float_scores
    from trainer.export import FLOAT_KERAS_FILE
    from trainer.fit import split_normals
    from trainer.pipeline import fit_bundle_detailed

    options: dict[str, Any] = {
        "size": 32, "channels": 1, "shape": None, "filters": (16, 32), "latent": 8,
        "steps": None, "epochs": None, "batch_size": 32, "learning_rate": 1e-3,
        "val_fraction": 0.2, "augment": (), "batch_sizes": (1, SCORE_BATCH), "name": None,
        "progress": False}
    options.update(recipe)
    started = time.perf_counter()
    fit_bundle_detailed(dataset, out_dir, model=model, threshold=threshold, seed=seed,
                        keep_float=True, report=lambda message: None, **options)
    seconds = time.perf_counter() - started
    bundle = load_bundle(out_dir)
    scorer = int8_scorer(out_dir)
    images = np.concatenate([dataset.test_normals, dataset.test_anomalies])
    labels = np.concatenate([np.zeros(len(dataset.test_normals), int),
                             np.ones(len(dataset.test_anomalies), int)])
    # The same held-back normals as the trainer's (the split depends only on data and seed).
    _, val = split_normals(dataset.train_normals, options["val_fraction"], seed)
    float_model = out_dir / FLOAT_KERAS_FILE
    return Trained(path=out_dir, bundle=dict(bundle.meta), int8=scorer.score(images),
                   float32=_float_scores(float_model, images), labels=labels,
                   fit_seconds=seconds, float_val=_float_scores(float_model, val))


def int8_scorer(bundle_dir: Path) -> Any:
    """The device's scorer (``edge.scoring.Scorer``) on a bundle's int8 models."""
    from edge.bundle import load_bundle
    from edge.scoring import Scorer
    from trainer.quiet import silenced

    with silenced():
        return Scorer(load_bundle(bundle_dir))


def threshold_metrics(labels: np.ndarray, scores: np.ndarray, high: float | None,
                      low: float | None = None) -> dict[str, Any]:
    """AUROC and TPR/TNR/precision/recall/F1 at the given bound(s) (anomalous outside)."""
    from edge.bundle import Threshold
    from trainer.evaluate import metrics

    return metrics(labels, scores, Threshold(rule="given", high=high, low=low))


def size_ratio(bundle: dict[str, Any]) -> dict[str, Any]:
    """int8 vs float flatbuffer bytes of the batch-1 models."""
    sizes = bundle["provenance"]["model_bytes"]
    return {"int8_bytes": sizes["int8_b1"], "float_bytes": sizes["float_b1"],
            "ratio": round(sizes["int8_b1"] / sizes["float_b1"], 4)}


def environment() -> dict[str, Any]:
    from trainer.export import library_versions

    return {"created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": platform.machine(), "libraries": library_versions()}


def write_json(name: str, payload: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / name
    path.write_text(json.dumps(payload, indent=2, default=_plain) + "\n", encoding="utf-8")
    log(f"wrote {path}")
    return path


def _plain(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, (tuple, np.ndarray)):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def timed(job: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = job()
    return result, time.perf_counter() - started
