"""``trainer evaluate BUNDLE DATA``: how well a bundle separates labeled normals and anomalies.

The int8 model is always evaluated, through :class:`edge.scoring.Scorer` as on the device. When
``float_model.keras`` sits next to the bundle (``trainer fit --keep-float``), the float model is
evaluated too with the same score definition, so the cost of quantization is visible. All metrics
come from sklearn; the decision at the bundle's threshold uses ``Threshold.is_anomalous``'s rule.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from edge.bundle import Bundle, Threshold, load_bundle
from edge.errors import DataError
from edge.scoring import Scorer
from trainer.data import Dataset, load_dataset
from trainer.export import FLOAT_KERAS_FILE
from trainer.quiet import silenced


def labeled_split(dataset: Dataset) -> tuple[np.ndarray, np.ndarray, str]:
    """(normals, anomalies, description) to evaluate on.

    Held-out normals (test/good, or npz x_test) when the data has them; otherwise all normals,
    which for a training folder means the model has seen them (said in the description).
    """
    if len(dataset.test_anomalies) == 0:
        raise DataError(f"{dataset.summary.get('source')}: no anomalies to evaluate against; "
                        "evaluation needs test/<defect>/ images (folder) or y=1 samples (npz).")
    if len(dataset.test_normals):
        return dataset.test_normals, dataset.test_anomalies, "test normals + test anomalies"
    return (dataset.train_normals, dataset.test_anomalies,
            "all normals in DATA (no test/good split; the model may have trained on them) "
            "+ anomalies")


def decide(scores: np.ndarray, threshold: Threshold) -> np.ndarray:
    """Vectorised ``Threshold.is_anomalous``: True where the score is outside the normal region."""
    flagged = np.zeros(len(scores), dtype=bool)
    if threshold.high is not None:
        flagged |= scores > threshold.high
    if threshold.low is not None:
        flagged |= scores < threshold.low
    return flagged


def metrics(labels: np.ndarray, scores: np.ndarray, threshold: Threshold) -> dict[str, Any]:
    """AUROC, AP, and TPR/TNR/precision/recall/F1/confusion counts at the threshold."""
    predicted = decide(scores, threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(labels, predicted, labels=[0, 1]).ravel()
    # A two-sided band flags low scores too, so the ranking score for AUROC/AP is the distance
    # outside the band rather than the raw score.
    ranking = _ranking_score(scores, threshold)
    return {
        "auroc": float(roc_auc_score(labels, ranking)),
        "average_precision": float(average_precision_score(labels, ranking)),
        "tpr": float(tp / (tp + fn)) if tp + fn else 0.0,
        "tnr": float(tn / (tn + fp)) if tn + fp else 0.0,
        "precision": float(precision_score(labels, predicted, zero_division=0)),
        "recall": float(recall_score(labels, predicted, zero_division=0)),
        "f1": float(f1_score(labels, predicted, zero_division=0)),
        "confusion": {"tp": int(tp), "fp": int(fp), "tn": int(tn), "fn": int(fn)},
    }


def _ranking_score(scores: np.ndarray, threshold: Threshold) -> np.ndarray:
    if threshold.low is None or threshold.high is None:
        return scores
    centre = (threshold.low + threshold.high) / 2.0
    return np.abs(scores - centre)


def _float_scores(model_path: Path, images_u8: np.ndarray) -> np.ndarray:
    from trainer import vae  # registers the VAE's sampling layer so its .keras file loads
    from trainer.backend import keras
    from trainer.fit import float_scores

    with silenced():
        model = keras.models.load_model(model_path, compile=False,
                                        custom_objects={"PosteriorSample": vae.PosteriorSample})
    return float_scores(model, images_u8)


def evaluate_bundle(bundle_path: str | Path, data: str | Path | Dataset, *,
                    shape: tuple[int, ...] | None = None) -> dict[str, Any]:
    """Score ``data`` with the bundle (int8, and float when kept) and return the metrics."""
    bundle: Bundle = load_bundle(bundle_path)
    dataset = data if isinstance(data, Dataset) else load_dataset(data, bundle.input, shape=shape)
    if dataset.spec.shape != bundle.input.shape:
        raise DataError(f"data is prepared as {dataset.spec.shape} but the bundle expects "
                        f"{bundle.input.shape}; load it with the bundle's input spec.")
    normals, anomalies, split = labeled_split(dataset)
    images = np.concatenate([normals, anomalies])
    labels = np.concatenate([np.zeros(len(normals), int), np.ones(len(anomalies), int)])
    with silenced():
        scorer = Scorer(bundle)
    result: dict[str, Any] = {
        "bundle": str(bundle.path),
        "data": str(dataset.summary.get("source")),
        "split": split,
        "normals": len(normals),
        "anomalies": len(anomalies),
        "threshold": bundle.threshold.to_json(),
        "int8": metrics(labels, scorer.score(images), bundle.threshold),
    }
    float_path = bundle.path / FLOAT_KERAS_FILE
    if float_path.is_file():
        result["float"] = metrics(labels, _float_scores(float_path, images), bundle.threshold)
    result["caveats"] = caveats(bundle, dataset)
    # How the data was fitted to the bundle's input (resized, colour converted, files skipped):
    # data of another size or colour than the bundle was trained on is scored, but not as it was.
    result["notes"] = dataset.notes
    return result


def caveats(bundle: Bundle, dataset: Dataset) -> list[str]:
    """What makes these figures look better than the line will see them, said plainly.

    A labelled threshold rule (youden, f1, maxmin, band) picked its bound on the anomalies of the
    training data; evaluated on those same anomalies, TPR/TNR/F1 at it are optimistic.
    """
    chosen_on = bundle.threshold.chosen_on
    data = bundle.meta.get("provenance", {}).get("data", {})
    trained_on, evaluated_on = data.get("source"), dataset.summary.get("source")
    if not chosen_on.get("anomalies") or trained_on is None or evaluated_on is None:
        return []
    if Path(str(trained_on)).resolve() != Path(str(evaluated_on)).resolve():
        return []
    return [f"the threshold ({bundle.threshold.rule}) was chosen on {chosen_on['anomalies']} "
            f"anomalies of this same data ({evaluated_on}): TPR, TNR, precision and F1 at it are "
            "optimistic (AUROC and AP do not depend on the threshold). Evaluate on data the "
            "bundle was not fitted on, or fit with a normals-only rule (quantile:Q, max)."]


def format_report(result: dict[str, Any]) -> str:
    """Human-readable table of :func:`evaluate_bundle`'s result."""
    t = result["threshold"]
    lines = [
        f"bundle {result['bundle']} on {result['data']}",
        f"split: {result['split']} ({result['normals']} normals, {result['anomalies']} anomalies)",
        f"threshold: {t['rule']} high={t['high']} low={t['low']}",
        f"{'model':<6} {'AUROC':>7} {'AP':>7} {'TPR':>7} {'TNR':>7} {'prec':>7} {'F1':>7}"
        "  tp/fp/tn/fn",
    ]
    for kind in ("int8", "float"):
        if kind not in result:
            continue
        m = result[kind]
        c = m["confusion"]
        lines.append(f"{kind:<6} {m['auroc']:7.4f} {m['average_precision']:7.4f} {m['tpr']:7.4f} "
                     f"{m['tnr']:7.4f} {m['precision']:7.4f} {m['f1']:7.4f}  "
                     f"{c['tp']}/{c['fp']}/{c['tn']}/{c['fn']}")
    lines.extend(f"caveat: {caveat}" for caveat in result.get("caveats", []))
    lines.extend(f"note: {note}" for note in result.get("notes", []))
    return "\n".join(lines)
