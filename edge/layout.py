"""Layout: which parts of a frame are scored, and under which names.

A layout is a list of named boxes in frame pixels, from two places in ``[layout]``:

- ``[layout.grid]``: ``rows`` × ``cols`` equal cells inside ``region = [x, y, w, h]``. Adjacent
  cells are ``gap = [gx, gy]`` px apart; each crop is its cell shrunk by ``inset`` px on every side
  (keeps a well's rim out of the crop). The pitch may be fractional: cells start at rounded
  positions and all have the same size, ``floor((w - gx·(cols-1)) / cols) - 2·inset`` wide.
  Names come from ``name_template`` (``r{row}c{col}`` by default; ``{index}`` is row-major).
- ``[[layout.boxes]]``: explicit ``name`` + ``box`` entries, scored after the grid cells.

Ignore regions (``[[layout.ignore]]``): a crop is **not scored** when more than half of its area
(``IGNORE_COVER_FRACTION``) lies inside the union of the ignore regions — e.g. a clamp that covers a
well. Crops covered less than that are scored whole; an ignore region never masks pixels.

Boxes are checked against the first frame's size before anything is scored; a box that reaches
outside the frame is a ConfigError naming the box and the frame size. Crops are numpy views of the
frame (no copy); :meth:`Layout.batch` prepares them into one (N, H, W, C) uint8 batch.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from edge.bundle import InputSpec
from edge.errors import ConfigError
from edge.preprocess import prepare_batch
from edge.types import Box, Crop

if TYPE_CHECKING:
    from edge.config import LayoutConfig

log = logging.getLogger(__name__)

# A crop more than this fraction covered by ignore regions is left out of scoring.
IGNORE_COVER_FRACTION = 0.5
MAX_LISTED = 5  # problems listed in one error message before "and N more"


def grid_names(rows: int, cols: int, template: str) -> list[str]:
    """Row-major crop names of a grid, e.g. ``r0c0, r0c1, …`` for ``r{row}c{col}``."""
    return [template.format(row=r, col=c, index=r * cols + c)
            for r in range(rows) for c in range(cols)]


def grid_boxes(region: Sequence[int], rows: int, cols: int, gap: Sequence[int] = (0, 0),
               inset: int = 0) -> list[Box]:
    """Row-major boxes of a rows × cols grid inside ``region``; ValueError if cells vanish."""
    x, y, w, h = region
    gap_x, gap_y = gap
    pitch_x = (w - gap_x * (cols - 1)) / cols
    pitch_y = (h - gap_y * (rows - 1)) / rows
    cell_w = math.floor(pitch_x) - 2 * inset
    cell_h = math.floor(pitch_y) - 2 * inset
    if cell_w < 1 or cell_h < 1:
        raise ValueError(
            f"a {rows}×{cols} grid in region {list(region)} with gap {list(gap)} and inset "
            f"{inset} leaves cells of {cell_w}×{cell_h} px; enlarge the region or reduce "
            "rows/cols, gap or inset"
        )
    return [
        Box(x + round(c * (pitch_x + gap_x)) + inset, y + round(r * (pitch_y + gap_y)) + inset,
            cell_w, cell_h)
        for r in range(rows) for c in range(cols)
    ]


def covered_fraction(box: Box, regions: Sequence[Box]) -> float:
    """Fraction of ``box``'s area inside the union of ``regions`` (overlaps counted once)."""
    if not regions:
        return 0.0
    mask = np.zeros((box.h, box.w), dtype=bool)
    for region in regions:
        left, top = max(region.x - box.x, 0), max(region.y - box.y, 0)
        right = min(region.x + region.w - box.x, box.w)
        bottom = min(region.y + region.h - box.y, box.h)
        if right > left and bottom > top:
            mask[top:bottom, left:right] = True
    return float(mask.mean())


class Layout:
    """Named boxes to cut from every frame; ignore regions already applied."""

    def __init__(self, boxes: Sequence[tuple[str, Box]], ignore: Sequence[Box] = ()) -> None:
        self.ignore = tuple(ignore)
        self.all_boxes = tuple(boxes)
        self.skipped: tuple[str, ...] = tuple(
            name for name, box in boxes
            if covered_fraction(box, self.ignore) > IGNORE_COVER_FRACTION
        )
        self.boxes = tuple((n, b) for n, b in boxes if n not in self.skipped)
        if not self.boxes:
            raise ConfigError(
                f"layout: all {len(self.all_boxes)} crops are more than "
                f"{IGNORE_COVER_FRACTION:.0%} covered by [[layout.ignore]] regions; nothing is "
                "left to score. Shrink or remove the ignore regions."
            )
        self.frame_size: tuple[int, int] | None = None

    @classmethod
    def from_config(cls, config: LayoutConfig) -> Layout:
        """Build the layout of a validated ``[layout]`` section."""
        boxes: list[tuple[str, Box]] = []
        if config.grid is not None:
            grid = config.grid
            try:
                cells = grid_boxes(grid.region, grid.rows, grid.cols, grid.gap, grid.inset)
            except ValueError as exc:
                raise ConfigError(f"layout.grid: {exc}.") from None
            boxes.extend(zip(grid_names(grid.rows, grid.cols, grid.name_template), cells,
                             strict=True))
        boxes.extend((b.name, Box(*b.box)) for b in config.boxes)
        return cls(boxes, [Box(*b.box) for b in config.ignore])

    @property
    def names(self) -> list[str]:
        """Names of the scored crops, in batch order."""
        return [name for name, _ in self.boxes]

    def check_frame_size(self, width: int, height: int) -> None:
        """Raise ConfigError listing every box (scored or ignore) that leaves the frame."""
        outside = [
            (name, box) for name, box in (*self.all_boxes, *(("ignore", b) for b in self.ignore))
            if box.x + box.w > width or box.y + box.h > height
        ]
        if outside:
            listed = "; ".join(
                f"{name} {box.as_list()} reaches x={box.x + box.w}, y={box.y + box.h}"
                for name, box in outside[:MAX_LISTED]
            )
            more = f" and {len(outside) - MAX_LISTED} more" if len(outside) > MAX_LISTED else ""
            raise ConfigError(
                f"layout: {len(outside)} box(es) lie outside the {width}×{height} px frame: "
                f"{listed}{more}. Boxes are [x, y, w, h] in frame pixels; fix [layout] for this "
                "camera's resolution."
            )
        self.frame_size = (width, height)

    def cut(self, image: np.ndarray) -> list[Crop]:
        """The scored crops of ``image`` as views (no pixel copies)."""
        return [Crop(name, box, box.cut(image)) for name, box in self.boxes]

    def batch(self, image: np.ndarray, spec: InputSpec) -> np.ndarray:
        """All scored crops of ``image`` prepared into one (N, H, W, C) uint8 batch."""
        return prepare_batch([box.cut(image) for _, box in self.boxes], spec)

    def describe(self) -> str:
        """One line for the startup log."""
        if not self.skipped:
            return f"{len(self.boxes)} crops scored"
        skipped = f", {len(self.skipped)} ignored ({', '.join(self.skipped)})"
        return f"{len(self.boxes)} crops scored{skipped}"
