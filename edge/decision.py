"""Decision: score → state (``ok`` / ``anomaly``) per crop, with debounce and hysteresis.

Rules, per crop, evaluated on every frame:

- **Threshold.** A score is *out* when it is above ``high`` or below ``low`` (bundle's
  threshold, or an override from ``[decision.threshold]`` / ``[decision.crops.NAME]``).
- **Enter anomaly (debounce).** From ``ok``, the crop becomes ``anomaly`` when at least ``k`` of
  its last ``n`` scores are out (fewer than ``n`` scores seen: counted over those seen).
- **Leave anomaly (hysteresis).** From ``anomaly``, the crop returns to ``ok`` only when each of
  its last ``clear_n`` scores (default ``n``) lies inside the *clear band*: at most
  ``high × clear_ratio`` and at least ``low / clear_ratio``. A score that wobbles just under the
  threshold therefore does not flap the state. On leaving, the debounce window starts empty.

Defaults ``k = n = 1``, ``clear_ratio = 1`` decide every frame on its own — right for a conveyor,
where each frame shows a new tray. For a fixed scene (a camera watching one machine) something
like ``k = 3, n = 5, clear_ratio = 0.8`` suppresses single-frame glitches.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edge.bundle import Bundle, Threshold
from edge.errors import ConfigError
from edge.types import Box, Decision

if TYPE_CHECKING:
    from edge.config import DecisionConfig, ThresholdOverride

log = logging.getLogger(__name__)

OK = "ok"
ANOMALY = "anomaly"
OVERRIDE_RULE = "config-override"


@dataclass(frozen=True)
class CropRule:
    """The threshold one crop is judged by, and where it came from."""

    threshold: Threshold
    source: str  # "bundle" | "config"
    reason: str | None = None


class CropState:
    """Debounce/hysteresis state machine of one crop."""

    def __init__(self, rule: CropRule, k: int, n: int, clear_n: int, clear_ratio: float) -> None:
        self.rule = rule
        self.k, self.n, self.clear_n = k, n, clear_n
        self.state = OK
        self.clear_low, self.clear_high = clear_band(rule.threshold, clear_ratio)
        self._out: deque[bool] = deque(maxlen=n)
        self._clear: deque[bool] = deque(maxlen=clear_n)

    def _inside_clear_band(self, score: float) -> bool:
        if self.clear_high is not None and score > self.clear_high:
            return False
        return not (self.clear_low is not None and score < self.clear_low)

    def update(self, score: float) -> tuple[str, str]:
        """Feed one score; returns (previous_state, new_state)."""
        self._out.append(self.rule.threshold.is_anomalous(score))
        self._clear.append(self._inside_clear_band(score))
        previous = self.state
        if previous == OK and sum(self._out) >= self.k:
            self.state = ANOMALY
        elif previous == ANOMALY and all(self._clear):
            # An out score is never inside the clear band, so "all clear" means the last
            # clear_n scores were clear. The debounce window starts afresh: re-entering needs
            # k new out scores, not old ones still in the window.
            self.state = OK
            self._out.clear()
        return previous, self.state


def clear_band(threshold: Threshold, clear_ratio: float) -> tuple[float | None, float | None]:
    """The (low, high) a score must stay within to count towards leaving ``anomaly``.

    One-sided: ``high × clear_ratio`` (or ``low / clear_ratio``). Two-sided band: the band shrunk
    towards its centre to ``clear_ratio`` of its width — scaling each end separately could make
    ``low / r`` pass ``high × r`` and leave a crop stuck in ``anomaly`` for good.
    """
    low, high = threshold.low, threshold.high
    if low is not None and high is not None:
        centre, half_width = (low + high) / 2.0, (high - low) / 2.0 * clear_ratio
        return centre - half_width, centre + half_width
    return (None if low is None else low / clear_ratio,
            None if high is None else high * clear_ratio)


def _override_threshold(override: ThresholdOverride) -> Threshold:
    return Threshold(rule=OVERRIDE_RULE, high=override.high, low=override.low,
                     params={}, chosen_on={"reason": override.reason})


def resolve_rules(names: Sequence[str], bundle: Bundle,
                  config: DecisionConfig) -> dict[str, CropRule]:
    """Threshold per crop: per-crop override, else global override, else the bundle's."""
    unknown = sorted(set(config.crops) - set(names))
    if unknown:
        raise ConfigError(
            f"decision.crops: {unknown} are not scored crops of this layout "
            f"(scored: {list(names)[:8]}…); fix the names or remove the overrides."
        )
    default = CropRule(bundle.threshold, "bundle")
    if config.threshold is not None:
        default = CropRule(_override_threshold(config.threshold), "config",
                           config.threshold.reason)
    rules = {name: default for name in names}
    for name, override in config.crops.items():
        rules[name] = CropRule(_override_threshold(override), "config", override.reason)
    return rules


class DecisionEngine:
    """Per-crop states of one layout; one :meth:`decide` call per frame."""

    def __init__(self, names: Sequence[str], boxes: Mapping[str, Box], bundle: Bundle,
                 config: DecisionConfig) -> None:
        self.bundle = bundle
        self.boxes = dict(boxes)
        self.names = list(names)
        clear_n = config.clear_n if config.clear_n is not None else config.n
        self.rules = resolve_rules(self.names, bundle, config)
        self.crops = {
            name: CropState(self.rules[name], config.k, config.n, clear_n, config.clear_ratio)
            for name in self.names
        }

    def log_overrides(self) -> None:
        """Log every threshold that does not come from the bundle, with its reason."""
        for name, rule in self.rules.items():
            if rule.source == "config":
                log.warning("threshold override for crop %s: high=%s low=%s (bundle: high=%s "
                            "low=%s); reason: %s", name, rule.threshold.high, rule.threshold.low,
                            self.bundle.threshold.high, self.bundle.threshold.low, rule.reason)

    def decide(self, scores: Sequence[float]) -> list[Decision]:
        """Scores in layout order → one Decision per crop."""
        if len(scores) != len(self.names):
            raise ValueError(f"got {len(scores)} scores for {len(self.names)} crops")
        decisions = []
        for name, score in zip(self.names, scores, strict=True):
            crop = self.crops[name]
            value = float(score)
            previous, state = crop.update(value)
            threshold = crop.rule.threshold
            decisions.append(Decision(
                crop=name, box=self.boxes[name], score=value, state=state,
                previous_state=previous, threshold_high=threshold.high,
                threshold_low=threshold.low, threshold_source=crop.rule.source,
                score_z=self.bundle.normalised(value),
            ))
        return decisions

    def threshold_payload(self, name: str) -> dict[str, object]:
        """The ``threshold`` object of an event for crop ``name``."""
        rule = self.rules[name]
        payload: dict[str, object] = {
            "high": rule.threshold.high, "low": rule.threshold.low, "source": rule.source,
            "rule": self.bundle.threshold.rule if rule.source == "bundle" else OVERRIDE_RULE,
        }
        if rule.reason:
            payload["reason"] = rule.reason
        return payload
