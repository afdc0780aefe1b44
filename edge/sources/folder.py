"""Replay of an image folder: files in sorted name order, paced at ``fps`` or as fast as possible.

The synthetic demo line and offline checks use this source. A file that cannot be decoded is
counted, logged with its name and the reason, and skipped; the replay goes on. With ``loop`` the
folder is replayed again from the start; frame ids carry the pass number after the first pass.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

from edge.errors import ImageError, SourceError
from edge.preprocess import IMAGE_SUFFIXES, load_image
from edge.sources.base import Source
from edge.types import Frame

log = logging.getLogger(__name__)


def list_images(folder: Path, recursive: bool = False) -> list[Path]:
    """Image files in ``folder`` (by suffix), sorted by path."""
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in candidates if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


class FolderSource(Source):
    """``kind = "folder"``: images of ``path`` as frames."""

    kind = "folder"

    def __init__(self, config: object) -> None:
        super().__init__(config)
        self.path: Path = self.config.path
        self.fps: float = self.config.fps
        self.loop: bool = self.config.loop
        self._files: list[Path] = []

    @property
    def live(self) -> bool:
        return self.fps > 0

    def describe(self) -> str:
        pace = f"{self.fps:g} fps" if self.fps > 0 else "as fast as possible"
        return f"folder {self.path} ({pace}{', loop' if self.loop else ''})"

    def open(self) -> None:
        if not self.path.is_dir():
            raise SourceError(
                f"replay folder {self.path} does not exist or is not a folder; create it or fix "
                "source.path (relative paths resolve against the config file's folder)."
            )
        self._files = list_images(self.path, self.config.recursive)
        if not self._files:
            raise SourceError(
                f"replay folder {self.path} holds no images ({', '.join(IMAGE_SUFFIXES)})."
            )

    def frames(self) -> Iterator[Frame]:
        interval = 1.0 / self.fps if self.fps > 0 else 0.0
        next_due = time.monotonic() - interval  # the first frame is due at once
        replay_pass = 0
        while True:
            delivered = 0
            for path in self._files:
                if interval:
                    # Pace against a fixed schedule so that slow decoding does not add up.
                    next_due = max(next_due + interval, time.monotonic() - interval)
                    time.sleep(max(0.0, next_due - time.monotonic()))
                try:
                    image = load_image(path)
                except ImageError as exc:
                    self.corrupt_frames += 1
                    log.warning("skipping corrupt image %s: %s", path.name, exc)
                    continue
                delivered += 1
                frame_id = path.stem if replay_pass == 0 else f"{path.stem}.{replay_pass}"
                yield Frame(id=frame_id, timestamp=time.time(), image=image, source=path.name)
            if not self.loop:
                return
            if delivered == 0:
                raise SourceError(f"no image in {self.path} could be decoded; nothing to replay.")
            replay_pass += 1
