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

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from edge.bundle import InputSpec
from edge.errors import ImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".pgm", ".ppm")
MIN_SIDE_PX = 8
MAX_SIDE_PX = 16384


def load_image(path: str | Path) -> np.ndarray:
    """Decode an image file into a uint8 array, (H, W) for grey or (H, W, 3) for colour.

    Raises ImageError naming the file when it is missing, truncated or not an image.
    """
    path = Path(path)
    try:
        with Image.open(path) as opened:
            opened.load()
            image: Image.Image = opened
            if image.mode not in ("L", "RGB"):
                image = image.convert("RGB" if "A" in image.mode or image.mode in ("P", "CMYK",
                                      "YCbCr", "RGBA", "LA") else "L")
            array = np.asarray(image, dtype=np.uint8)
    except FileNotFoundError as exc:
        raise ImageError(f"{path}: file not found.") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(
            f"{path}: cannot decode image ({exc}). The file is corrupt, truncated or not an "
            f"image; replace or remove it (readable formats: {', '.join(IMAGE_SUFFIXES)})."
        ) from exc
    return check_frame(array, origin=str(path))


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
    if not (MIN_SIDE_PX <= height <= MAX_SIDE_PX and MIN_SIDE_PX <= width <= MAX_SIDE_PX):
        raise ImageError(
            f"{origin}: size {width}×{height} px is outside {MIN_SIDE_PX}..{MAX_SIDE_PX} px."
        )
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
    """Stack prepared crops into one (N, H, W, C) uint8 batch."""
    batch = np.empty((len(crops), *spec.shape), dtype=np.uint8)
    for index, crop in enumerate(crops):
        batch[index] = prepare_crop(crop, spec)
    return batch
