"""The demo's verdict (scripts/demo.py): per-well TPR / TNR from received events, and only when
the device's own stats say it scored every replayed frame."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("demo_script", REPO / "scripts" / "demo.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


TRUTH: dict[str, Any] = {
    "wells": ["r0c0", "r0c1"],
    "frames": [{"file": "frames/frame_000.png", "anomalies": {"r0c0": "spill"}},
               {"file": "frames/frame_001.png", "anomalies": {}}],
}
EVENTS = [{"frame_id": "frame_000", "crop": "r0c0", "state": "anomaly"}]
ALL_SCORED = {"frames": 2, "dropped_frames": 0, "corrupt_frames": 0, "frame_size_errors": 0,
              "fps": 100.0, "latency_ms": {}}


def test_every_frame_scored_and_every_well_right_is_met(demo: ModuleType, capsys) -> None:
    assert demo.summarise(EVENTS, TRUTH, ALL_SCORED) is True
    assert "TP 1  FN 0  TN 3  FP 0" in capsys.readouterr().out


@pytest.mark.parametrize("stats", [
    {**ALL_SCORED, "frames": 1, "dropped_frames": 1},   # a live source dropped one
    {**ALL_SCORED, "frames": 1, "corrupt_frames": 1},   # a corrupt image was skipped
    None])                                              # no stats arrived at all
def test_frames_the_edge_never_scored_are_not_counted_as_correct(demo: ModuleType, capsys,
                                                                 stats) -> None:
    # The rates alone look perfect: the unscored frame's normal wells count as true negatives.
    assert demo.summarise(EVENTS, TRUTH, stats) is False
    out = capsys.readouterr().out
    assert "NOT met" in out and "NOT every frame was scored" in out
