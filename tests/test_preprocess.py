"""The batched resize reproduces the one preprocessing rule (Pillow bilinear) bit for bit.

edge.preprocess.prepare_batch resizes a frame's equal-sized crops with matrix products for speed;
it must give exactly what prepare_crop (Pillow) gives one crop at a time, or the device would score
other pixels than the trainer calibrated on.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from edge.bundle import InputSpec
from edge.preprocess import prepare_batch, prepare_crop, resize_batch


@settings(max_examples=150, deadline=None)
@given(height=st.integers(8, 140), width=st.integers(8, 140),
       out_side=st.sampled_from([16, 28, 32, 48, 64]), count=st.integers(1, 5),
       colour=st.sampled_from(["grey", "rgb"]), rgb_input=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_prepare_batch_equals_pillow_crop_by_crop(height: int, width: int, out_side: int,
                                                  count: int, colour: str, rgb_input: bool,
                                                  seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (height, width, 3) if rgb_input else (height, width)
    crops = [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(count)]
    spec = InputSpec(out_side, out_side, 1 if colour == "grey" else 3, color_mode=colour)
    expected = np.stack([prepare_crop(crop, spec) for crop in crops])
    batch = prepare_batch(crops, spec)
    assert batch.dtype == np.uint8 and batch.shape == expected.shape
    assert np.array_equal(batch, expected)


@pytest.mark.parametrize(("height", "width", "channels", "out_side"), [
    (40, 40, 1, 32), (37, 52, 1, 32), (64, 64, 1, 32), (100, 80, 1, 64), (20, 20, 1, 32),
    (40, 40, 3, 32)])
def test_the_matrix_resize_is_used_and_matches_pillow(height: int, width: int, channels: int,
                                                      out_side: int) -> None:
    # prepare_batch silently falls back to Pillow when the matrix resize disagrees with it:
    # correct, but the fast path would be dead without a test noticing. Here it must be taken.
    rng = np.random.default_rng(height * width)
    batch = rng.integers(0, 256, (4, height, width, channels), dtype=np.uint8)
    resized = resize_batch(batch, out_side, out_side)
    assert resized is not None, "the matrix resize no longer reproduces Pillow here"
    mode = "L" if channels == 1 else "RGB"
    expected = np.stack([np.asarray(Image.fromarray(c[:, :, 0] if channels == 1 else c, mode)
                                    .resize((out_side, out_side), Image.Resampling.BILINEAR))
                         .reshape(out_side, out_side, channels) for c in batch])
    assert np.array_equal(resized, expected)


def test_mixed_crop_sizes_in_one_batch_each_follow_pillow() -> None:
    rng = np.random.default_rng(1)
    sizes = ((40, 40), (37, 52), (32, 32))
    crops = [rng.integers(0, 256, (h, w), dtype=np.uint8) for h, w in sizes]
    spec = InputSpec(32, 32, 1)
    expected = np.stack([prepare_crop(crop, spec) for crop in crops])
    assert np.array_equal(prepare_batch(crops, spec), expected)
