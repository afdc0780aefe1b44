"""``trainer report BUNDLE DATA --out DIR``: the plots a user looks at before trusting a bundle.

Four PNGs, all from the int8 model scored through :class:`edge.scoring.Scorer` (the device's own
code) and, when ``float_model.keras`` sits in the bundle, the float model beside it:

* ``learning_curve.png`` — training and validation loss per round, from bundle.json's history;
* ``reconstructions.png`` — originals above their int8 reconstructions, normals and anomalies;
* ``score_histogram.png`` — normal and anomaly scores with the bundle's threshold line(s);
* ``roc.png`` — ROC curve(s) with their AUROC.

matplotlib runs on the Agg backend (no display needed) and is imported only when plotting, so
``trainer --help`` stays fast. The plotting functions are public for the benchmarks.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import ConfigError

FIGURE_DPI = 100            # dots per inch; keeps each PNG well under 150 KB
HIST_BINS = 60
SAMPLES_PER_KIND = 8        # crops shown per class in the reconstruction grid
PANEL_INCH = 0.8            # size of one image panel in the grid (inches)
LEARNING_CURVE_FILE = "learning_curve.png"
RECONSTRUCTIONS_FILE = "reconstructions.png"
HISTOGRAM_FILE = "score_histogram.png"
ROC_FILE = "roc.png"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_learning_curve(history: Sequence[Mapping[str, float]], path: Path, *,
                        title: str = "learning curve") -> Path:
    """Training and validation loss against optimiser steps (log scale)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    steps = [h["steps"] for h in history]
    ax.plot(steps, [h["loss"] for h in history], label="training loss")
    ax.plot(steps, [h["val_loss"] for h in history], label="validation loss (held-back normals)")
    ax.set_xlabel("optimiser steps")
    ax.set_ylabel("loss (MSE per pixel)")
    ax.set_yscale("log")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_reconstructions(rows: Sequence[tuple[str, np.ndarray, np.ndarray]], path: Path, *,
                         title: str = "originals (top) and int8 reconstructions (bottom)",
                         scores: Sequence[np.ndarray] | None = None) -> Path:
    """A grid: for each (label, originals, reconstructions) an originals row over its recon row.

    Images are (n, H, W[, C]) in [0, 1] or uint8; ``scores`` (one array per row) titles panels.
    """
    plt = _pyplot()
    columns = max(len(originals) for _, originals, _ in rows)
    fig, axes = plt.subplots(2 * len(rows), columns, squeeze=False,
                             figsize=(PANEL_INCH * columns, PANEL_INCH * 2 * len(rows) + 0.4))
    for r, (label, originals, reconstructions) in enumerate(rows):
        for c in range(columns):
            for k, images in enumerate((originals, reconstructions)):
                ax = axes[2 * r + k, c]
                ax.axis("off")
                if c < len(images):
                    ax.imshow(_displayable(images[c]), cmap="gray", vmin=0, vmax=1,
                              interpolation="nearest")
            if c < len(originals) and scores is not None:
                axes[2 * r, c].set_title(f"{scores[r][c]:.4f}", fontsize=6)
        axes[2 * r, 0].text(-0.1, 0.5, label, transform=axes[2 * r, 0].transAxes,
                            ha="right", va="center", fontsize=8, rotation=90)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_score_histogram(normal: np.ndarray, anomaly: np.ndarray, path: Path, *,
                         high: float | None = None, low: float | None = None,
                         title: str = "int8 reconstruction MSE") -> Path:
    """Overlaid histograms of normal and anomaly scores with the threshold line(s)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    values = np.concatenate([normal, anomaly])
    bins = np.linspace(float(values.min()), float(np.quantile(values, 0.995)), HIST_BINS)
    ax.hist(np.clip(normal, None, bins[-1]), bins=bins, alpha=0.6, density=True,
            label=f"normal ({len(normal)})")
    if len(anomaly):
        ax.hist(np.clip(anomaly, None, bins[-1]), bins=bins, alpha=0.6, density=True,
                label=f"anomaly ({len(anomaly)})")
    for value, name in ((high, "high"), (low, "low")):
        if value is not None:
            ax.axvline(value, color="k", linestyle="--", linewidth=1,
                       label=f"threshold {name} {value:.4g}")
    ax.set_xlabel("score (reconstruction MSE, [0, 1] pixels)")
    ax.set_ylabel("density")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_roc(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: Path, *,
             title: str = "ROC") -> Path:
    """ROC curves, one per name → (labels, scores), each with its AUROC in the legend."""
    from sklearn.metrics import roc_auc_score, roc_curve

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(3.8, 3.6))
    for name, (labels, scores) in curves.items():
        fpr, tpr, _ = roc_curve(labels, scores)
        ax.plot(fpr, tpr, label=f"{name} AUROC {roc_auc_score(labels, scores):.4f}")
    ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlabel("false positive rate (1 − TNR)")
    ax.set_ylabel("true positive rate")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def _displayable(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    unit = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image
    return unit[..., 0] if unit.ndim == 3 and unit.shape[-1] == 1 else unit


def _save(fig: Any, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=FIGURE_DPI)
    _pyplot().close(fig)
    return path


def write_report(bundle_path: str | Path, data: Any, out_dir: str | Path, *,
                 shape: tuple[int, ...] | None = None,
                 samples: int = SAMPLES_PER_KIND) -> dict[str, Path]:
    """Score ``data`` (a path or Dataset) with the bundle and write the four PNGs to ``out_dir``."""
    from edge.bundle import load_bundle
    from edge.scoring import Scorer
    from trainer.data import Dataset, load_dataset
    from trainer.evaluate import _float_scores, _ranking_score, labeled_split
    from trainer.export import FLOAT_KERAS_FILE
    from trainer.quiet import silenced

    bundle = load_bundle(bundle_path)
    dataset = data if isinstance(data, Dataset) else load_dataset(data, bundle.input, shape=shape)
    normals, anomalies, _ = labeled_split(dataset)
    for note in dataset.notes:  # resized, colour converted, files skipped: said, not hidden
        print(f"note: {note}", file=sys.stderr)
    with silenced():
        scorer = Scorer(bundle)
    out = Path(out_dir)
    written: dict[str, Path] = {}
    history = bundle.meta.get("training", {}).get("history", [])
    if history:
        written["learning_curve"] = plot_learning_curve(history, out / LEARNING_CURVE_FILE,
                                                        title=f"{bundle.name}: learning curve")
    normal_scores, anomaly_scores = scorer.score(normals), scorer.score(anomalies)
    rows = []
    for label, images, scores in (("normal", normals, normal_scores),
                                  ("anomaly", anomalies, anomaly_scores)):
        chosen = images[:samples]
        rows.append((label, chosen, scorer.reconstruct(chosen), scores[:samples]))
    written["reconstructions"] = plot_reconstructions(
        [(label, o, r) for label, o, r, _ in rows], out / RECONSTRUCTIONS_FILE,
        scores=[s for *_, s in rows])
    threshold = bundle.threshold
    written["histogram"] = plot_score_histogram(
        normal_scores, anomaly_scores, out / HISTOGRAM_FILE, high=threshold.high,
        low=threshold.low, title=f"{bundle.name}: int8 scores, rule {threshold.rule}")
    labels = np.concatenate([np.zeros(len(normals), int), np.ones(len(anomalies), int)])
    images = np.concatenate([normals, anomalies])
    int8 = _ranking_score(np.concatenate([normal_scores, anomaly_scores]), threshold)
    curves = {"int8": (labels, int8)}
    if (bundle.path / FLOAT_KERAS_FILE).is_file():
        float_scores = _float_scores(bundle.path / FLOAT_KERAS_FILE, images)
        curves["float"] = (labels, _ranking_score(float_scores, threshold))
    written["roc"] = plot_roc(curves, out / ROC_FILE, title=f"{bundle.name}: ROC")
    return written


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``trainer report`` on the CLI's subparsers."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "report", help="plots of a bundle on labeled data (learning curve, reconstructions, "
                       "score histogram, ROC)")
    parser.add_argument("bundle", help="bundle directory (models/NAME)")
    parser.add_argument("data", help="MVTec-style folder or .npz with x and y")
    parser.add_argument("--out", required=True, help="folder for the PNGs")
    parser.add_argument("--shape", default=None, help="H,W[,C] of flat npz rows")
    parser.add_argument("--samples", type=int, default=SAMPLES_PER_KIND,
                        help="crops per class in the reconstruction grid (default %(default)s)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Write the report and print one line per PNG."""
    from trainer.data import parse_shape

    if args.samples < 1:
        raise ConfigError(f"--samples {args.samples}: give at least 1 crop per class for the "
                          f"reconstruction grid (default {SAMPLES_PER_KIND}).")
    shape = parse_shape(args.shape) if args.shape else None
    for name, path in write_report(args.bundle, args.data, args.out, shape=shape,
                                   samples=args.samples).items():
        print(f"{name}: {path}")
    return 0
