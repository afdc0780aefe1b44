"""Turning images and crops into model input — the one rule, shared by trainer and edge.

The rule (documented in docs/bundle.md):

1. Colour: ``grey`` converts with PIL's ``L`` mode (ITU-R 601-2 luma); ``rgb`` drops alpha.
2. Size: any crop is resized to the model's height × width with PIL bilinear filtering
   (``Image.resize(..., BILINEAR)``); a crop already of that size is used as is.
3. Values stay uint8 until the scorer; the model sees ``uint8 / 255`` quantized with the input
   tensor's own scale and zero point.

The trainer prepares its training data with these same functions, so a crop reaches the model in
the same form on the laptop and on the device.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from edge.bundle import InputSpec
from edge.errors import ImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".pgm", ".ppm")
MIN_SIDE_PX = 8
MAX_SIDE_PX = 16384
# Pillow resamples 8-bit images in fixed point with this many fractional bits (Resample.c).
PIL_PRECISION_BITS = 22
PIL_ONE = float(1 << PIL_PRECISION_BITS)
BILINEAR_SUPPORT = 1.0  # the triangle filter's radius in input pixels, before widening
# Random crops per geometry on which the matrix resize is compared with Pillow before use.
RESIZE_PROBE_CROPS = 8
RESIZE_PROBE_SEED = 20240611
# Decoded frames above this many pixels are refused (Pillow's own guard only warns up to twice
# its MAX_IMAGE_PIXELS and decodes); far beyond any inspection camera's working size.
MAX_PIXELS = 50_000_000
# Pillow modes with more than 8 bits per sample (I;16*, 32-bit integer, float): refused.
WIDE_MODES = ("I", "F")
WIDE_MODES_TEXT = "16- or 32-bit integer or floating-point samples"


def load_image(path: str | Path) -> np.ndarray:
    """Decode an image file into a uint8 array, (H, W) for grey or (H, W, 3) for colour.

    Raises ImageError naming the file when it is missing, truncated, not an image, too large or
    not 8-bit.
    """
    path = Path(path)
    try:
        array = _decode(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # The warning is raised only where warnings are errors (tests); _decode refuses the
        # sizes Pillow merely warns about itself.
        raise ImageError(
            f"{path}: {exc} Frames this large are not decoded; replace the file or save it at the "
            f"camera's working size (at most {MAX_SIDE_PX} px a side, {MAX_PIXELS:,} pixels)."
        ) from exc
    except FileNotFoundError as exc:
        raise ImageError(f"{path}: file not found.") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(
            f"{path}: cannot decode image ({exc}). The file is corrupt, truncated or not an "
            f"image; replace or remove it (readable formats: {', '.join(IMAGE_SUFFIXES)})."
        ) from exc
    return check_frame(array, origin=str(path))


def _decode(path: Path) -> np.ndarray:
    with Image.open(path) as opened:
        # The header's size, before decoding: a file that claims a huge size costs nothing.
        width, height = opened.size
        check_size(width, height, origin=str(path))
        if width * height > MAX_PIXELS:
            raise ImageError(
                f"{path}: {width}×{height} px is more than {MAX_PIXELS:,} pixels; frames this "
                "large are not decoded. Save them at the camera's working size."
            )
        opened.load()
        image: Image.Image = opened
        if image.mode.startswith(WIDE_MODES):
            # Pillow's convert("L") clips these to 0..255 instead of scaling them, which would
            # turn a 16-bit frame white without a word.
            raise ImageError(
                f"{path}: {image.mode!r} pixels ({WIDE_MODES_TEXT}) are not supported; models "
                "take 8-bit images. Save the frames as 8-bit grey or RGB (scaled to 0..255 for "
                "the camera's bit depth) or set the camera to an 8-bit format."
            )
        if image.mode not in ("L", "RGB"):
            image = image.convert("RGB" if "A" in image.mode or image.mode in (
                "P", "CMYK", "YCbCr", "RGBA", "LA") else "L")
        return np.asarray(image, dtype=np.uint8)


def check_size(width: int, height: int, *, origin: str = "frame") -> None:
    """Raise ImageError unless both sides are within MIN_SIDE_PX..MAX_SIDE_PX."""
    if not (MIN_SIDE_PX <= height <= MAX_SIDE_PX and MIN_SIDE_PX <= width <= MAX_SIDE_PX):
        raise ImageError(
            f"{origin}: size {width}×{height} px is outside {MIN_SIDE_PX}..{MAX_SIDE_PX} px."
        )


def check_frame(array: np.ndarray, *, origin: str = "frame") -> np.ndarray:
    """Validate a decoded frame: uint8, 2-D grey or 3-D with 1, 3 or 4 channels, sane size."""
    if array.dtype != np.uint8:
        raise ImageError(f"{origin}: pixel type is {array.dtype}, expected uint8.")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    elif array.ndim == 3 and array.shape[2] == 4:
        array = array[:, :, :3]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] != 3):
        raise ImageError(
            f"{origin}: shape {array.shape} is not an image; expected (H, W) grey or (H, W, 3)."
        )
    height, width = array.shape[:2]
    check_size(width, height, origin=origin)
    return array


def to_color_mode(array: np.ndarray, color_mode: str) -> np.ndarray:
    """Convert a (H, W) or (H, W, 3) uint8 array to the bundle's colour mode, keeping 3 axes."""
    if color_mode == "grey":
        if array.ndim == 3:
            array = np.asarray(Image.fromarray(array, "RGB").convert("L"))
        return array[:, :, None]
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    return array


def prepare_crop(crop: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Colour-convert and resize one uint8 crop to ``spec``; returns (H, W, C) uint8."""
    array = to_color_mode(crop, spec.color_mode)
    if array.shape[:2] != (spec.height, spec.width):
        mode = "L" if spec.channels == 1 else "RGB"
        image = Image.fromarray(array[:, :, 0] if spec.channels == 1 else array, mode)
        image = image.resize((spec.width, spec.height), Image.Resampling.BILINEAR)
        array = np.asarray(image, dtype=np.uint8)
        if spec.channels == 1:
            array = array[:, :, None]
    return np.ascontiguousarray(array)


def prepare_batch(crops: Sequence[np.ndarray], spec: InputSpec) -> np.ndarray:
    """Stack prepared crops into one (N, H, W, C) uint8 batch.

    The same rule as :func:`prepare_crop`, applied to all crops of one size at once: crops that
    need resizing go through :func:`resize_batch` (Pillow's arithmetic in one matrix product per
    axis), which is checked against Pillow for every geometry before it is trusted.
    """
    batch = np.empty((len(crops), *spec.shape), dtype=np.uint8)
    by_size: dict[tuple[int, ...], list[int]] = {}
    converted = [to_color_mode(crop, spec.color_mode) for crop in crops]
    for index, array in enumerate(converted):
        if array.shape[:2] == (spec.height, spec.width):
            batch[index] = array
        else:
            by_size.setdefault(array.shape, []).append(index)
    for indices in by_size.values():
        resized = resize_batch(np.stack([converted[i] for i in indices]), spec.height, spec.width)
        if resized is None:  # a geometry where the fast path does not match Pillow exactly
            for i in indices:
                batch[i] = prepare_crop(crops[i], spec)
        else:
            batch[indices] = resized
    return batch


def _bilinear_weights(in_size: int, out_size: int) -> np.ndarray:
    """Pillow's fixed-point bilinear weights as a dense (out_size, in_size) float64 matrix.

    Follows Resample.c (``precompute_coeffs`` + ``normalize_coeffs_8bpc``): a triangle filter
    widened by the reduction factor, normalised per output pixel, rounded to
    ``PIL_PRECISION_BITS`` bits. The entries are integers, exact in float64.
    """
    scale = in_size / out_size
    filter_scale = max(scale, 1.0)
    support = BILINEAR_SUPPORT * filter_scale
    weights = np.zeros((out_size, in_size), dtype=np.float64)
    for out_index in range(out_size):
        center = (out_index + 0.5) * scale
        first = max(int(center - support + 0.5), 0)
        last = min(int(center + support + 0.5), in_size)
        taps = [max(0.0, 1.0 - abs((x - center + 0.5) / filter_scale))
                for x in range(first, last)]
        total = 0.0
        for tap in taps:  # summed in order, as the C loop does
            total += tap
        for offset, tap in enumerate(taps):
            unit = tap / total if total != 0.0 else tap
            weights[out_index, first + offset] = int(unit * PIL_ONE + (0.5 if unit >= 0 else -0.5))
    return weights


def _apply(weights: np.ndarray, planes: np.ndarray, axis: int) -> np.ndarray:
    """One Pillow pass along ``axis`` (-1 columns, -2 rows) of float64 planes, rounded to uint8."""
    out = planes @ weights.T if axis == -1 else weights @ planes
    out += PIL_ONE / 2
    out *= 1.0 / PIL_ONE  # a power of two: exact, so floor() is Pillow's >> PRECISION_BITS
    np.floor(out, out=out)
    return np.clip(out, 0.0, 255.0, out=out)


def _resize_planes(planes: np.ndarray, out_h: int, out_w: int, vertical_first: bool) -> np.ndarray:
    """(..., h, w) uint8 → (..., out_h, out_w) uint8 with the two passes in the given order."""
    values = planes.astype(np.float64)
    passes = [(-2, out_h), (-1, out_w)] if vertical_first else [(-1, out_w), (-2, out_h)]
    for axis, size in passes:
        if values.shape[axis] != size:
            values = _apply(_cached_weights(values.shape[axis], size), values, axis)
    return values.astype(np.uint8)


@functools.lru_cache(maxsize=64)
def _cached_weights(in_size: int, out_size: int) -> np.ndarray:
    return _bilinear_weights(in_size, out_size)


@functools.lru_cache(maxsize=64)
def _pass_order(height: int, width: int, channels: int, out_h: int, out_w: int) -> bool | None:
    """Which pass order reproduces the installed Pillow for this geometry (True: vertical
    first); None when neither does exactly (then Pillow itself is used). Pillow picks the order
    by its own cost rule, which has changed between versions, so it is measured, not assumed."""
    rng = np.random.default_rng(RESIZE_PROBE_SEED)
    probes = rng.integers(0, 256, (RESIZE_PROBE_CROPS, height, width, channels), dtype=np.uint8)
    mode = "L" if channels == 1 else "RGB"
    expected = np.stack([
        np.asarray(Image.fromarray(p[:, :, 0] if channels == 1 else p, mode).resize(
            (out_w, out_h), Image.Resampling.BILINEAR)).reshape(out_h, out_w, channels)
        for p in probes])
    planes = np.moveaxis(probes, 3, 1)
    for vertical_first in (False, True):
        got = np.moveaxis(_resize_planes(planes, out_h, out_w, vertical_first), 1, 3)
        if np.array_equal(got, expected):
            return vertical_first
    return None


def resize_batch(batch: np.ndarray, out_h: int, out_w: int) -> np.ndarray | None:
    """(N, h, w, C) uint8 → (N, out_h, out_w, C) uint8, identical to Pillow's BILINEAR resize of
    each crop; None for a geometry where that identity does not hold (use Pillow then)."""
    _, height, width, channels = batch.shape
    order = _pass_order(height, width, channels, out_h, out_w)
    if order is None:
        return None
    planes = np.moveaxis(batch, 3, 1)  # (N, C, h, w): one matrix product per axis for all crops
    return np.moveaxis(_resize_planes(planes, out_h, out_w, order), 1, 3)
