"""Threshold rules on score distributions whose right answer is known."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.errors import ConfigError, DataError
from trainer.thresholds import Rule, choose_threshold, parse_rule

NORMALS = np.linspace(0.0, 1.0, 101)           # uniform 0..1 in steps of 0.01
SEPARATED_ANOMALIES = np.linspace(2.0, 3.0, 11)


def _flagged(threshold, scores: np.ndarray) -> np.ndarray:
    return np.array([threshold.is_anomalous(float(s)) for s in scores])


def test_parse_rules_and_defaults() -> None:
    assert parse_rule("max") == Rule("max", None)
    assert parse_rule("quantile") == Rule("quantile", 0.999)
    assert parse_rule("quantile:0.9") == Rule("quantile", 0.9)
    assert parse_rule("meanstd:2.5") == Rule("meanstd", 2.5)
    assert parse_rule("band") == Rule("band", None) and parse_rule("band").needs_labels
    assert not parse_rule("band:0.9").needs_labels
    for bad, message in (("median", "unknown rule"), ("quantile:1.5", r"fraction in \(0, 1\)"),
                         ("youden:3", "takes no parameter"), ("meanstd:x", "not a number"),
                         ("meanstd:-1", "positive"), ("meanstd:inf", "not a finite number"),
                         ("meanstd:nan", "not a finite number")):
        with pytest.raises(ConfigError, match=message):
            parse_rule(bad)


def test_max_quantile_meanstd_on_uniform_normals() -> None:
    assert choose_threshold("max", NORMALS).high == pytest.approx(1.0)
    quantile = choose_threshold("quantile:0.9", NORMALS)
    assert quantile.high == pytest.approx(0.9)
    assert quantile.params == {"q": 0.9} and quantile.low is None
    meanstd = choose_threshold("meanstd:2", NORMALS)
    assert meanstd.high == pytest.approx(0.5 + 2 * NORMALS.std())
    assert meanstd.scores_from == "int8"
    assert meanstd.chosen_on["normals"] == 101 and meanstd.chosen_on["anomalies"] == 0


def test_band_on_normals_is_the_central_interval() -> None:
    band = choose_threshold("band:0.8", NORMALS, chosen_on={"split": "val"})
    assert band.low == pytest.approx(0.1) and band.high == pytest.approx(0.9)
    assert band.chosen_on["split"] == "val"


@pytest.mark.parametrize("rule", ["youden", "f1", "maxmin"])
def test_labeled_rules_separate_separable_scores(rule: str) -> None:
    threshold = choose_threshold(rule, NORMALS, SEPARATED_ANOMALIES)
    assert threshold.high is not None
    assert 1.0 <= threshold.high < 2.0  # between the largest normal and the smallest anomaly
    assert not _flagged(threshold, NORMALS).any()
    assert _flagged(threshold, SEPARATED_ANOMALIES).all()
    assert threshold.chosen_on["tpr"] == 1.0 and threshold.chosen_on["tnr"] == 1.0


def test_youden_and_f1_differ_where_they_should() -> None:
    # Overlap: 100 normals uniform 0..1, 10 anomalies uniform 0.9..1.9. Youden weighs TPR and
    # FPR equally; F1 cares about precision, so with few anomalies it cuts at least as high.
    normals = np.linspace(0.0, 1.0, 100)
    anomalies = np.linspace(0.9, 1.9, 10)
    youden = choose_threshold("youden", normals, anomalies)
    f1 = choose_threshold("f1", normals, anomalies)
    maxmin = choose_threshold("maxmin", normals, anomalies)
    assert youden.high is not None and f1.high is not None
    assert 0.85 <= youden.high <= 1.1
    assert youden.chosen_on["tpr"] + youden.chosen_on["tnr"] - 1 >= 0.89
    assert f1.high >= youden.high - 1e-9
    assert min(maxmin.chosen_on["tpr"], maxmin.chosen_on["tnr"]) >= 0.9


def test_labeled_band_catches_anomalies_on_both_sides() -> None:
    normals = np.linspace(1.0, 2.0, 50)
    anomalies = np.r_[np.linspace(0.0, 0.5, 10), np.linspace(3.0, 4.0, 10)]
    band = choose_threshold("band", normals, anomalies)
    assert band.low is not None and band.high is not None
    assert 0.5 < band.low < 1.0 and 2.0 < band.high < 3.0
    assert not _flagged(band, normals).any() and _flagged(band, anomalies).all()


def test_labeled_band_stays_one_sided_when_anomalies_are_only_high() -> None:
    band = choose_threshold("band", NORMALS, SEPARATED_ANOMALIES)
    assert band.low is None and band.high is not None and 1.0 < band.high < 2.0


@pytest.mark.parametrize("rule", ["youden", "f1", "maxmin", "band"])
def test_labeled_rules_without_anomalies_say_what_they_need(rule: str) -> None:
    with pytest.raises(DataError, match=f"rule {rule} needs labeled anomalies.*normals-only rule"):
        choose_threshold(rule, NORMALS)


def test_degenerate_inputs() -> None:
    with pytest.raises(DataError, match="no normal scores"):
        choose_threshold("max", np.array([]))
    with pytest.raises(DataError, match="needs spread"):
        choose_threshold("band:0.9", np.full(10, 0.5))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=2, max_size=40),
       st.lists(st.floats(0.0, 1.0), min_size=1, max_size=40))
def test_labeled_rules_report_the_rates_they_achieve(normals: list[float],
                                                     anomalies: list[float]) -> None:
    n, a = np.array(normals), np.array(anomalies)
    for rule in ("youden", "f1", "maxmin"):
        threshold = choose_threshold(rule, n, a)
        assert threshold.chosen_on["tnr"] == pytest.approx(1 - _flagged(threshold, n).mean())
        assert threshold.chosen_on["tpr"] == pytest.approx(_flagged(threshold, a).mean())
