"""Layout: grid and named boxes, ignore regions, frame-size check, views and the batch."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from runtime_support import GRID_INSET, GRID_REGION, tray_image

from edge.bundle import InputSpec
from edge.config import GridConfig, LayoutConfig, NamedBox
from edge.errors import ConfigError
from edge.layout import Layout, covered_fraction, grid_boxes, grid_names
from edge.types import Box


def test_grid_cells_tile_the_region_with_inset():
    boxes = grid_boxes(GRID_REGION, 2, 3, inset=GRID_INSET)
    assert [b.as_list() for b in boxes[:4]] == [[12, 12, 16, 16], [32, 12, 16, 16],
                                                [52, 12, 16, 16], [12, 32, 16, 16]]


def test_grid_with_gap_and_fractional_pitch_keeps_equal_cells_inside_the_region():
    boxes = grid_boxes([0, 0, 101, 50], 1, 4, gap=(5, 0))
    assert {(b.w, b.h) for b in boxes} == {(21, 50)}
    assert boxes[0].x == 0 and boxes[-1].x + boxes[-1].w <= 101
    for left, right in itertools.pairwise(boxes):
        assert right.x - (left.x + left.w) >= 4  # the gap survives rounding (±1 px)


@given(x=st.integers(0, 50), y=st.integers(0, 50), w=st.integers(40, 400),
       h=st.integers(40, 400), rows=st.integers(1, 8), cols=st.integers(1, 8),
       gap=st.integers(0, 3), inset=st.integers(0, 2))
def test_grid_cells_never_leave_the_region_or_overlap(x, y, w, h, rows, cols, gap, inset):
    try:
        boxes = grid_boxes([x, y, w, h], rows, cols, gap=(gap, gap), inset=inset)
    except ValueError:
        # Refused only when a cell would be empty.
        assert (w - gap * (cols - 1)) // cols - 2 * inset < 1 or \
            (h - gap * (rows - 1)) // rows - 2 * inset < 1
        return
    assert len(boxes) == rows * cols
    for box in boxes:
        assert box.x >= x and box.y >= y
        assert box.x + box.w <= x + w and box.y + box.h <= y + h
    row0 = boxes[:cols]
    for left, right in itertools.pairwise(row0):
        assert right.x >= left.x + left.w


def test_grid_names_from_templates():
    assert grid_names(2, 2, "r{row}c{col}") == ["r0c0", "r0c1", "r1c0", "r1c1"]
    assert grid_names(2, 2, "well-{index}") == ["well-0", "well-1", "well-2", "well-3"]


def test_crops_are_views_and_the_batch_has_the_model_shape():
    layout = Layout.from_config(LayoutConfig(
        grid=GridConfig(region=list(GRID_REGION), rows=2, cols=3, inset=GRID_INSET)))
    image = tray_image(((0, 1),))
    layout.check_frame_size(image.shape[1], image.shape[0])
    crops = layout.cut(image)
    assert [c.name for c in crops] == ["r0c0", "r0c1", "r0c2", "r1c0", "r1c1", "r1c2"]
    assert all(np.shares_memory(c.pixels, image) for c in crops)
    assert crops[1].pixels.max() == 255 and crops[0].pixels.max() < 255
    batch = layout.batch(image, InputSpec(8, 8, 1))  # resized to the model's input
    assert batch.shape == (6, 8, 8, 1) and batch.dtype == np.uint8


def test_ignore_region_over_half_of_a_crop_skips_it():
    boxes = [("a", Box(0, 0, 10, 10)), ("b", Box(20, 0, 10, 10)), ("c", Box(40, 0, 10, 10))]
    # Covers 60 % of a, 40 % of b (not skipped), and c by two halves of 30 % each: union 60 %.
    ignore = [Box(0, 0, 6, 10), Box(26, 0, 4, 10), Box(40, 0, 3, 10), Box(47, 0, 3, 10),
              Box(43, 0, 0, 10)]
    layout = Layout(boxes, ignore)
    assert layout.skipped == ("a", "c")
    assert layout.names == ["b"]
    assert covered_fraction(Box(0, 0, 10, 10), [Box(0, 0, 5, 10)]) == 0.5
    assert layout.describe() == "1 crops scored, 2 ignored (a, c)"


def test_exactly_half_covered_is_still_scored():
    layout = Layout([("a", Box(0, 0, 10, 10))], [Box(0, 0, 5, 10)])
    assert layout.names == ["a"]


def test_ignoring_every_crop_is_a_config_error():
    with pytest.raises(ConfigError, match="nothing is left to score"):
        Layout([("a", Box(0, 0, 10, 10))], [Box(0, 0, 10, 10)])


def test_box_outside_the_frame_names_the_box_and_the_frame_size():
    layout = Layout.from_config(LayoutConfig(
        boxes=[NamedBox(name="inside", box=[0, 0, 10, 10]),
               NamedBox(name="label", box=[70, 50, 20, 20])]))
    with pytest.raises(ConfigError) as caught:
        layout.check_frame_size(80, 60)
    message = str(caught.value)
    assert "label [70, 50, 20, 20] reaches x=90, y=70" in message
    assert "80×60 px frame" in message and "inside" not in message
    layout.check_frame_size(90, 70)
    assert layout.frame_size == (90, 70)


def test_grid_and_boxes_together_grid_first():
    layout = Layout.from_config(LayoutConfig(
        grid=GridConfig(region=[0, 0, 20, 10], rows=1, cols=2),
        boxes=[NamedBox(name="extra", box=[0, 0, 5, 5])]))
    assert layout.names == ["r0c0", "r0c1", "extra"]


def test_layout_config_needs_crops_and_unique_names():
    with pytest.raises(ValueError, match="define"):
        LayoutConfig()
    with pytest.raises(ValueError, match="repeated"):
        LayoutConfig(boxes=[NamedBox(name="a", box=[0, 0, 9, 9]),
                            NamedBox(name="a", box=[9, 9, 9, 9])])
