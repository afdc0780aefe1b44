"""Decision: per-crop threshold, k-of-n debounce, hysteresis, overrides with a logged reason."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from edge.bundle import Bundle, InputSpec, ModelFile, Threshold
from edge.config import DecisionConfig, ThresholdOverride
from edge.decision import ANOMALY, OK, DecisionEngine
from edge.errors import ConfigError
from edge.types import Box

HIGH = 1.0


def bundle_with(threshold: Threshold) -> Bundle:
    """A Bundle value for decision logic only (no model is run here)."""
    return Bundle(path=Path("."), name="b", input=InputSpec(8, 8, 1), threshold=threshold,
                  models=(ModelFile("model.tflite", 1, "0" * 64, 1),),
                  normal_scores={"mean": 0.5, "std": 0.25}, meta={})


def engine(names=("a",), bundle_threshold=None, **config) -> DecisionEngine:
    boxes = {name: Box(0, 0, 8, 8) for name in names}
    return DecisionEngine(list(names), boxes,
                          bundle_with(bundle_threshold or Threshold(rule="max", high=HIGH)),
                          DecisionConfig(**config))


def states(decider: DecisionEngine, scores: list[float]) -> list[str]:
    return [decider.decide([score])[0].state for score in scores]


def test_default_decides_every_frame_on_its_own():
    assert states(engine(), [0.5, 1.5, 0.9, 1.01, 1.0]) == [OK, ANOMALY, OK, ANOMALY, OK]


def test_decision_fields():
    decider = engine()
    first, second = decider.decide([2.0])[0], decider.decide([0.5])[0]
    assert (first.state, first.previous_state, first.changed) == (ANOMALY, OK, True)
    assert (second.state, second.previous_state) == (OK, ANOMALY)
    assert first.threshold_high == HIGH and first.threshold_low is None
    assert first.threshold_source == "bundle"
    assert first.score_z == pytest.approx((2.0 - 0.5) / 0.25)


def test_k_of_n_debounce():
    decider = engine(k=2, n=3)
    # One spike is ignored; two of the last three enter anomaly.
    assert states(decider, [1.5, 0.2, 0.2, 1.5, 0.2, 1.5]) == [OK, OK, OK, OK, OK, ANOMALY]


def test_hysteresis_leaves_anomaly_only_below_high_times_ratio_for_clear_n_frames():
    decider = engine(clear_ratio=0.8, clear_n=2)
    scores = [1.5, 0.9, 0.85, 0.7, 0.75, 0.79, 1.2]
    # 0.9 and 0.85 are under the threshold but above 0.8 × high: still anomaly.
    assert states(decider, scores) == [ANOMALY, ANOMALY, ANOMALY, ANOMALY, OK, OK, ANOMALY]


def test_after_clearing_the_debounce_window_starts_empty():
    decider = engine(k=2, n=5, clear_n=2)
    assert states(decider, [1.5, 1.5, 0.1, 0.1, 1.5, 0.1, 1.5]) == \
        [OK, ANOMALY, ANOMALY, OK, OK, OK, ANOMALY]


def test_two_sided_band_with_hysteresis():
    decider = engine(bundle_threshold=Threshold(rule="band", high=2.0, low=1.0), clear_ratio=0.8)
    # clear band: the band [1, 2] shrunk to 0.8 of its width around 1.5 = [1.1, 1.9]
    assert states(decider, [1.5, 0.9, 1.05, 1.3, 2.5, 1.95, 1.5]) == \
        [OK, ANOMALY, ANOMALY, OK, ANOMALY, ANOMALY, OK]


def test_crops_are_independent():
    decider = engine(names=("a", "b"))
    result = decider.decide([2.0, 0.1])
    assert [d.state for d in result] == [ANOMALY, OK]
    with pytest.raises(ValueError, match="2 crops"):
        decider.decide([0.1])


def test_overrides_global_then_per_crop_and_the_reason_is_logged(caplog):
    decider = engine(
        names=("a", "b", "c"),
        threshold=ThresholdOverride(high=3.0, reason="new lens, recalibrated by hand"),
        crops={"c": ThresholdOverride(high=5.0, low=0.5, reason="c is under the light bar")},
    )
    with caplog.at_level(logging.WARNING, logger="edge.decision"):
        decider.log_overrides()
    assert "new lens, recalibrated by hand" in caplog.text
    assert "c is under the light bar" in caplog.text
    result = decider.decide([2.0, 4.0, 0.2])
    assert [d.state for d in result] == [OK, ANOMALY, ANOMALY]
    assert {d.threshold_source for d in result} == {"config"}
    assert decider.threshold_payload("c") == {"high": 5.0, "low": 0.5, "source": "config",
                                              "rule": "config-override",
                                              "reason": "c is under the light bar"}
    plain = engine()
    assert plain.threshold_payload("a") == {"high": HIGH, "low": None, "source": "bundle",
                                            "rule": "max"}


def test_override_for_a_crop_that_is_not_scored():
    with pytest.raises(ConfigError, match="not scored crops"):
        engine(names=("a",), crops={"z": ThresholdOverride(high=1.0, reason="typo")})


def test_band_hysteresis_never_leaves_a_crop_stuck_in_anomaly() -> None:
    """Review finding: scaling each end of a narrow band (0.03..0.04 with clear_ratio 0.8) gave
    an empty clear band; the crop then stayed 'anomaly' for ever. The band now shrinks to its
    centre."""
    from edge.bundle import Threshold
    from edge.decision import ANOMALY, OK, CropRule, CropState, clear_band

    band = Threshold(rule="band", high=0.04, low=0.03)
    low, high = clear_band(band, 0.8)
    assert low is not None and high is not None and 0.03 < low < high < 0.04
    state = CropState(CropRule(band, "bundle"), k=1, n=1, clear_n=3, clear_ratio=0.8)
    assert state.update(0.05) == (OK, ANOMALY)
    for _ in range(3):
        state.update(0.035)  # the centre of the band: normal
    assert state.state == OK
