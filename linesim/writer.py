"""Writing the synthetic line to disk: a replay folder of frames with ground truth, or
MVTec-style folders of well crops for training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from linesim.scene import LineScene

TRUTH_FILE = "truth.json"


def frame_file_name(index: int) -> str:
    return f"frame_{index:06d}.png"


def write_scene(scene: LineScene, out_dir: Path, frames: int, *, start: int = 0,
                normal_only: bool = False) -> dict[str, Any]:
    """Write ``frames`` PNG frames and ``truth.json`` into ``out_dir``; returns the truth."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = scene.config
    records = []
    for index in range(start, start + frames):
        image, truth = scene.frame(index, normal_only=normal_only)
        name = frame_file_name(index)
        Image.fromarray(image).save(out_dir / name)
        records.append({"file": name, "index": index, "anomalies": truth.anomalies})
    document: dict[str, Any] = {
        "generator": "linesim",
        "seed": scene.seed,
        "frame_size": [cfg.width, cfg.height],
        "grid": {"rows": cfg.rows, "cols": cfg.cols, "region": cfg.region},
        "wells": {cfg.well_name(r, c): cfg.well_box(r, c)
                  for r in range(cfg.rows) for c in range(cfg.cols)},
        "anomaly_rate": cfg.anomaly_rate,
        "frames": records,
    }
    (out_dir / TRUTH_FILE).write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    return document


def well_crops(scene: LineScene, image: np.ndarray) -> dict[str, np.ndarray]:
    """Cut every well's cell out of a frame, keyed by well name."""
    cfg = scene.config
    crops = {}
    for row in range(cfg.rows):
        for col in range(cfg.cols):
            x, y, w, h = cfg.well_box(row, col)
            crops[cfg.well_name(row, col)] = image[y:y + h, x:x + w]
    return crops


def write_crops(scene: LineScene, out_dir: Path, *, train_frames: int, test_frames: int,
                start: int = 0) -> dict[str, int]:
    """Write an MVTec-style crop dataset: ``train/good`` from defect-free trays, ``test/good``
    and ``test/<defect>`` from trays with defects. Returns the count per folder."""
    counts: dict[str, int] = {}

    def save(folder: str, name: str, crop: np.ndarray) -> None:
        target = out_dir / folder
        target.mkdir(parents=True, exist_ok=True)
        Image.fromarray(crop).save(target / f"{name}.png")
        counts[folder] = counts.get(folder, 0) + 1

    for index in range(start, start + train_frames):
        image, _ = scene.frame(index, normal_only=True)
        for well, crop in well_crops(scene, image).items():
            save("train/good", f"f{index:06d}_{well}", crop)
    for index in range(start + train_frames, start + train_frames + test_frames):
        image, truth = scene.frame(index)
        for well, crop in well_crops(scene, image).items():
            save(f"test/{truth.anomalies.get(well, 'good')}", f"f{index:06d}_{well}", crop)
    return counts
