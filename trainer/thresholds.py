"""Threshold rules: from int8 scores of calibration crops to an :class:`edge.bundle.Threshold`.

Rules are written as strings (CLI ``--threshold``):

==================  =========  ==============================================================
rule                labels?    bound(s)
==================  =========  ==============================================================
``max``             no         high = largest normal score
``quantile:q``      no         high = q-quantile of normal scores (default q 0.999)
``meanstd:k``       no         high = mean + k·std of normal scores (population std; k 3)
``band:p``          no         [lo, hi] = central p interval of normal scores (two-sided)
``youden``          yes        high maximising TPR − FPR (Youden's J)
``f1``              yes        high maximising F1 of the anomaly class
``maxmin``          yes        high maximising min(TPR, TNR)
``band``            yes        [lo, hi] maximising min(TPR, TNR), anomalous outside
==================  =========  ==============================================================

The edge flags a score as anomalous when it is ``> high`` or ``< low``. Labeled rules search the
thresholds sklearn's curves return (``score >= t`` is positive) and place the bound halfway
between ``t`` and the next lower score, so the strict ``>`` of the edge decides the same way
with a margin on both sides.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve

from edge.bundle import Threshold
from edge.errors import ConfigError, DataError
from trainer.defaults import DEFAULT_RULE as DEFAULT_RULE

DEFAULTS: dict[str, float] = {"quantile": 0.999, "meanstd": 3.0, "band": 0.99}
UNLABELED_RULES = ("max", "quantile", "meanstd")
LABELED_RULES = ("youden", "f1", "maxmin")
# ``band`` is unlabeled with a parameter, labeled without one.
ALL_RULES = (*UNLABELED_RULES, *LABELED_RULES, "band")
# Above this many distinct scores the two-sided search runs on quantiles of them (m² memory).
BAND_MAX_CANDIDATES = 1000


@dataclass(frozen=True)
class Rule:
    """A parsed rule: its name and its parameter (None when it takes none)."""

    name: str
    param: float | None

    @property
    def needs_labels(self) -> bool:
        return self.name in LABELED_RULES or (self.name == "band" and self.param is None)

    def __str__(self) -> str:
        return self.name if self.param is None else f"{self.name}:{self.param:g}"


def parse_rule(text: str) -> Rule:
    """``"quantile:0.99"`` → Rule("quantile", 0.99); raises ConfigError on anything unknown."""
    name, _, raw = text.strip().partition(":")
    if name not in ALL_RULES:
        raise ConfigError(f"--threshold {text!r}: unknown rule {name!r}; choose one of "
                          "max, quantile:Q, meanstd:K, band:P, youden, f1, maxmin, band.")
    if not raw:
        param = DEFAULTS.get(name) if name != "band" else None
        return Rule(name, param)
    if name not in DEFAULTS:
        raise ConfigError(f"--threshold {text!r}: rule {name!r} takes no parameter.")
    try:
        param = float(raw)
    except ValueError as exc:
        raise ConfigError(f"--threshold {text!r}: {raw!r} is not a number.") from exc
    if not math.isfinite(param):
        raise ConfigError(f"--threshold {text!r}: {raw!r} is not a finite number.")
    if name in ("quantile", "band") and not 0.0 < param < 1.0:
        raise ConfigError(f"--threshold {text!r}: {name} needs a fraction in (0, 1), "
                          "e.g. quantile:0.999.")
    if name == "meanstd" and param <= 0:
        raise ConfigError(f"--threshold {text!r}: k must be positive, e.g. meanstd:3.")
    return Rule(name, param)


def choose_threshold(rule: Rule | str, normal_scores: np.ndarray,
                     anomaly_scores: np.ndarray | None = None, *,
                     chosen_on: Mapping[str, Any] | None = None) -> Threshold:
    """Apply ``rule`` to calibration scores; the Threshold records how it was chosen."""
    rule = parse_rule(rule) if isinstance(rule, str) else rule
    normals = np.asarray(normal_scores, dtype=np.float64)
    anomalies = np.asarray(anomaly_scores if anomaly_scores is not None else [], np.float64)
    if len(normals) == 0:
        raise DataError(f"threshold rule {rule}: no normal scores to calibrate on.")
    on: dict[str, Any] = {"normals": len(normals), "anomalies": len(anomalies)}
    on.update(chosen_on or {})
    params = {} if rule.param is None else {_PARAM_NAMES[rule.name]: rule.param}
    if rule.needs_labels:
        require_labels(rule, len(anomalies))
        high, low = _LABELED[rule.name](normals, anomalies)
        tpr = float(np.mean(_outside(anomalies, low, high)))
        tnr = float(np.mean(~_outside(normals, low, high)))
        on.update({"tpr": tpr, "tnr": tnr})
    elif rule.name == "max":
        high, low = float(normals.max()), None
    elif rule.name == "quantile":
        high, low = float(np.quantile(normals, float(rule.param or DEFAULTS["quantile"]))), None
    elif rule.name == "meanstd":
        k = float(rule.param or DEFAULTS["meanstd"])
        high, low = float(normals.mean() + k * normals.std()), None
    else:  # band:p, central interval of the normals
        tail = (1.0 - float(rule.param or DEFAULTS["band"])) / 2.0
        low, high = float(np.quantile(normals, tail)), float(np.quantile(normals, 1.0 - tail))
        if low >= high:
            raise DataError(f"threshold rule {rule}: normal scores are all {low:g}; a band needs "
                            "spread. Use max or quantile instead.")
    return Threshold(rule=str(rule), high=high, low=low, params=params, chosen_on=on,
                     scores_from="int8")


_PARAM_NAMES = {"quantile": "q", "meanstd": "k", "band": "p"}


def require_labels(rule: Rule, anomaly_count: int) -> None:
    """DataError when ``rule`` needs labeled anomalies and there are none (check early)."""
    if rule.needs_labels and anomaly_count == 0:
        raise DataError(
            f"threshold rule {rule!s} needs labeled anomalies to choose on, and the data has "
            "none; add test/<defect>/ images (folder) or y=1 samples (npz), or use a "
            "normals-only rule: max, quantile:0.999, meanstd:3, band:0.99.")


def _outside(scores: np.ndarray, low: float | None, high: float | None) -> np.ndarray:
    flagged = np.zeros(len(scores), dtype=bool)
    if high is not None:
        flagged |= scores > high
    if low is not None:
        flagged |= scores < low
    return flagged


def _labels(normals: np.ndarray, anomalies: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.concatenate([np.zeros(len(normals), int), np.ones(len(anomalies), int)])
    return y, np.concatenate([normals, anomalies])


def _bound_below(cut: float, scores: np.ndarray) -> float:
    """A ``high`` for which ``score > high`` ⇔ ``score >= cut`` over ``scores``."""
    below = scores[scores < cut]
    if len(below) == 0:
        return float(cut - max(abs(cut), 1.0) * 1e-6)
    return float((below.max() + cut) / 2.0)


def _roc_pick(normals: np.ndarray, anomalies: np.ndarray,
              objective: str) -> tuple[float, None]:
    y, scores = _labels(normals, anomalies)
    fpr, tpr, cuts = roc_curve(y, scores)
    finite = np.isfinite(cuts)  # sklearn prepends +inf (flag nothing)
    fpr, tpr, cuts = fpr[finite], tpr[finite], cuts[finite]
    value = tpr - fpr if objective == "youden" else np.minimum(tpr, 1.0 - fpr)
    return _bound_below(float(cuts[int(np.argmax(value))]), scores), None


def _youden(normals: np.ndarray, anomalies: np.ndarray) -> tuple[float, None]:
    return _roc_pick(normals, anomalies, "youden")


def _maxmin(normals: np.ndarray, anomalies: np.ndarray) -> tuple[float, None]:
    return _roc_pick(normals, anomalies, "maxmin")


def _f1(normals: np.ndarray, anomalies: np.ndarray) -> tuple[float, None]:
    y, scores = _labels(normals, anomalies)
    precision, recall, cuts = precision_recall_curve(y, scores)
    precision, recall = precision[:-1], recall[:-1]  # the last point has no threshold
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(denominator),
                   where=denominator > 0)
    return _bound_below(float(cuts[int(np.argmax(f1))]), scores), None


def _band(normals: np.ndarray, anomalies: np.ndarray) -> tuple[float | None, float | None]:
    """[lo, hi] maximising min(TPR, TNR); ties go to the larger TPR + TNR."""
    distinct = np.unique(np.concatenate([normals, anomalies]))
    if len(distinct) > BAND_MAX_CANDIDATES:
        distinct = np.unique(np.quantile(distinct, np.linspace(0, 1, BAND_MAX_CANDIDATES)))
    # Boundaries between consecutive distinct scores, plus one below and one above all.
    span = max(float(distinct[-1] - distinct[0]), 1e-12)
    cuts = np.concatenate([[distinct[0] - span], (distinct[:-1] + distinct[1:]) / 2,
                           [distinct[-1] + span]])
    normal_below = np.searchsorted(np.sort(normals), cuts)     # normals under each cut
    anomaly_below = np.searchsorted(np.sort(anomalies), cuts)
    # [i, j]: band from cuts[i] to cuts[j]; only j > i is a real band.
    tnr = (normal_below[None, :] - normal_below[:, None]) / len(normals)
    tpr = 1.0 - (anomaly_below[None, :] - anomaly_below[:, None]) / len(anomalies)
    valid = np.triu(np.ones((len(cuts), len(cuts)), dtype=bool), k=1)
    worst = np.where(valid, np.minimum(tpr, tnr), -1.0)
    total = np.where(valid, tpr + tnr, -1.0)
    best_min = worst.max()
    candidates = np.flatnonzero(worst.ravel() >= best_min - 1e-12)
    i, j = np.unravel_index(candidates[np.argmax(total.ravel()[candidates])], worst.shape)
    low = None if i == 0 else float(cuts[i])
    high = None if j == len(cuts) - 1 else float(cuts[j])
    if low is None and high is None:
        raise DataError("threshold rule band: no band separates normals from anomalies at all; "
                        "check the labels or use a one-sided rule.")
    return high, low


_LABELED = {"youden": _youden, "f1": _f1, "maxmin": _maxmin, "band": _band}
