"""Synthetic data for the trainer tests: smooth blobs and stripes are normal; bright or dark
squares and thin scratches are anomalies. Written as real PNG files or a real .npz."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

NORMAL_LEVEL_MIN = 0.1   # fraction of full scale; normals never reach black or white
SCRATCH_WIDTH_PX = 1


def normal_images(count: int, size: int = 20, *, seed: int = 0, rgb: bool = False) -> np.ndarray:
    """uint8 (count, size, size[, 3]): a soft blob over a faint sine stripe, slightly noisy."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    images = []
    for _ in range(count):
        cx, cy = rng.uniform(0.35, 0.65, 2)
        sigma = rng.uniform(0.18, 0.28)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma * sigma))
        stripe = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(1.5, 2.5) * xx + rng.uniform(0, 6))
        image = NORMAL_LEVEL_MIN + 0.55 * blob + 0.2 * stripe + rng.normal(0, 0.01, blob.shape)
        image = np.clip(image * 255, 0, 255).astype(np.uint8)
        if rgb:
            tint = np.array([1.0, 0.9, 0.8])
            image = np.clip(image[:, :, None] * tint, 0, 255).astype(np.uint8)
        images.append(image)
    return np.stack(images)


def anomaly_images(count: int, size: int = 20, *, seed: int = 1, rgb: bool = False) -> np.ndarray:
    """Normals with a saturated square (white or black) or a bright diagonal scratch."""
    rng = np.random.default_rng(seed)
    images = normal_images(count, size, seed=seed + 1000, rgb=rgb)
    side = max(3, size // 4)
    for index, image in enumerate(images):
        if index % 2 == 0:
            x, y = rng.integers(1, size - side - 1, 2)
            image[y:y + side, x:x + side] = 255 if rng.random() < 0.5 else 0
        else:
            offset = int(rng.integers(-size // 4, size // 4))
            for i in range(size):
                j = i + offset
                if 0 <= j < size:
                    image[i, j:j + SCRATCH_WIDTH_PX] = 255
    return images


def write_pngs(folder: Path, images: np.ndarray, prefix: str = "img") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, image in enumerate(images):
        path = folder / f"{prefix}_{index:04d}.png"
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths


def write_mvtec(root: Path, *, train: int = 200, test_good: int = 30, per_defect: int = 20,
                size: int = 20, rgb: bool = False) -> Path:
    """An MVTec-AD style tree: train/good, test/good, test/square_or_scratch."""
    write_pngs(root / "train" / "good", normal_images(train, size, seed=0, rgb=rgb))
    if test_good:
        write_pngs(root / "test" / "good", normal_images(test_good, size, seed=7, rgb=rgb))
    write_pngs(root / "test" / "defect", anomaly_images(per_defect, size, seed=3, rgb=rgb))
    return root
