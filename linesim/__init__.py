"""Synthetic production line: deterministic frames of a casting tray with labelled defects.

Used by the demo, the tests and the benchmarks; needs only numpy and pillow.
"""

from linesim.scene import DEFECTS, FrameTruth, LineScene, SceneConfig
from linesim.writer import write_crops, write_scene

__all__ = ["DEFECTS", "FrameTruth", "LineScene", "SceneConfig", "write_crops", "write_scene"]
