"""Frame sources, one file each; :data:`SOURCES` maps a config ``kind`` to its class.

Adding a source means one new file and one line here. Modules that need an optional library
(cv2, picamera2) import it only when the source is opened.
"""

from __future__ import annotations

from typing import Any

from edge.sources.base import RetryingSource, Source
from edge.sources.folder import FolderSource
from edge.sources.opencv import OpenCVSource
from edge.sources.picamera2 import Picamera2Source

SOURCES: dict[str, type[Source]] = {
    "folder": FolderSource,
    "opencv": OpenCVSource,
    "picamera2": Picamera2Source,
}


def create_source(config: Any) -> Source:
    """The Source for a validated ``[source]`` section (its ``kind`` picks the class)."""
    return SOURCES[config.kind](config)


__all__ = ["SOURCES", "FolderSource", "OpenCVSource", "Picamera2Source", "RetryingSource",
           "Source", "create_source"]
