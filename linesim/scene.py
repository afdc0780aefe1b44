"""Deterministic frames of a casting tray on a production line, with labelled defects.

A tray holds ``rows × cols`` round wells on a regular pitch. Every frame is a new tray passing
under the camera: the cast metal in each well, the mould steel around it, the lighting and the
sensor noise vary the way they do on a real line, and a chosen fraction of wells carries one defect:

- ``spill``: metal run over the well's rim onto the mould (the case this product was built for);
- ``crack``: a thin dark fracture across the cast part;
- ``underfill``: the well was not filled — a smaller, darker metal surface inside the cavity;
- ``foreign``: a small foreign object (a chip of slag, a bolt head) lying in or over the well.

The same seed always gives the same frames and the same ground truth.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

DEFECTS = ("spill", "crack", "underfill", "foreign")

# Grey levels of the materials (uint8 scale) and radii as fractions of the well pitch.
MOULD_GREY = 92.0
CAVITY_GREY = 38.0
METAL_GREY = 178.0
CAVITY_RADIUS = 0.38
METAL_RADIUS = 0.32
TEXTURE_AMPLITUDE = 7.0
NOISE_SIGMA = 3.0
LIGHT_SLOPE_MAX = 0.18  # brightness change across the frame, as a fraction
BRIGHTNESS_JITTER = 0.06
TRAY_SHIFT_PX = 2  # the tray's position varies by up to this much, each axis
WELL_SHIFT_PX = 1  # and each well's casting by this much more
FRAME_STREAM, WELL_STREAM = 0, 1  # random streams: one per frame, one per well


@dataclass(frozen=True)
class SceneConfig:
    """Geometry and defect rate of the synthetic line."""

    rows: int = 4
    cols: int = 6
    pitch_px: int = 40
    margin_px: int = 20
    anomaly_rate: float = 0.08
    defects: tuple[str, ...] = DEFECTS

    def __post_init__(self) -> None:
        if self.rows < 1 or self.cols < 1:
            raise ValueError(f"a tray needs at least one well; got {self.rows}×{self.cols}")
        if self.pitch_px < 24:
            raise ValueError(f"pitch_px {self.pitch_px} is too small to draw a well (≥ 24)")
        if not 0.0 <= self.anomaly_rate <= 1.0:
            raise ValueError(f"anomaly_rate {self.anomaly_rate} is not a fraction in [0, 1]")
        unknown = set(self.defects) - set(DEFECTS)
        if unknown:
            raise ValueError(f"unknown defects {sorted(unknown)}; choose from {DEFECTS}")

    @property
    def width(self) -> int:
        return 2 * self.margin_px + self.cols * self.pitch_px

    @property
    def height(self) -> int:
        return 2 * self.margin_px + self.rows * self.pitch_px

    @property
    def region(self) -> list[int]:
        """The grid of wells as [x, y, w, h] — what a device's grid layout names."""
        return [self.margin_px, self.margin_px, self.cols * self.pitch_px,
                self.rows * self.pitch_px]

    def well_name(self, row: int, col: int) -> str:
        return f"r{row}c{col}"

    def well_box(self, row: int, col: int) -> list[int]:
        """[x, y, w, h] of one well's cell in the frame."""
        return [self.margin_px + col * self.pitch_px, self.margin_px + row * self.pitch_px,
                self.pitch_px, self.pitch_px]


@dataclass
class FrameTruth:
    """Ground truth of one frame: which wells carry which defect."""

    index: int
    anomalies: dict[str, str] = field(default_factory=dict)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell: int) -> np.ndarray:
    """Low-frequency texture: coarse random grid upsampled bilinearly, roughly unit variance."""
    coarse = rng.standard_normal((shape[0] // cell + 2, shape[1] // cell + 2))
    ys = np.arange(shape[0]) / cell
    xs = np.arange(shape[1]) / cell
    y0 = ys.astype(int)
    x0 = xs.astype(int)
    fy = (ys - y0)[:, None]
    fx = (xs - x0)[None, :]
    top = coarse[y0][:, x0] * (1 - fx) + coarse[y0][:, x0 + 1] * fx
    bottom = coarse[y0 + 1][:, x0] * (1 - fx) + coarse[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _disk(dist: np.ndarray, radius: float) -> np.ndarray:
    """Anti-aliased coverage of a disk of ``radius`` given each pixel's distance to its centre."""
    return np.clip(radius - dist + 0.5, 0.0, 1.0)


class LineScene:
    """Generates frames of the synthetic line; ``frame(i)`` is a pure function of (seed, i)."""

    def __init__(self, config: SceneConfig | None = None, seed: int = 0) -> None:
        self.config = config or SceneConfig()
        self.seed = seed
        cfg = self.config
        yy, xx = np.mgrid[0:cfg.height, 0:cfg.width].astype(np.float64)
        self._yy = yy
        self._xx = xx

    def frame(self, index: int, *, force: dict[str, str] | None = None,
              normal_only: bool = False) -> tuple[np.ndarray, FrameTruth]:
        """Render frame ``index``; ``force`` maps well names to defects to place for sure."""
        cfg = self.config
        rng = np.random.default_rng([self.seed, index, FRAME_STREAM])
        truth = FrameTruth(index=index)
        shift_y, shift_x = rng.integers(-TRAY_SHIFT_PX, TRAY_SHIFT_PX + 1, size=2)
        image = np.full((cfg.height, cfg.width), MOULD_GREY)
        image += TEXTURE_AMPLITUDE * _smooth_noise(rng, image.shape, cell=6)
        for row in range(cfg.rows):
            for col in range(cfg.cols):
                name = cfg.well_name(row, col)
                # Each well draws from its own stream, so a defect placed in one well (which
                # draws more numbers) leaves every other well and the lighting unchanged.
                well_rng = np.random.default_rng([self.seed, index, WELL_STREAM, row, col])
                defect = None
                is_defective = well_rng.random() < cfg.anomaly_rate
                kind = cfg.defects[int(well_rng.integers(len(cfg.defects)))]
                if force and name in force:
                    defect = force[name]
                elif is_defective and not normal_only:
                    defect = kind
                if defect is not None:
                    truth.anomalies[name] = defect
                self._draw_well(image, well_rng, row, col, int(shift_y), int(shift_x), defect)
        image = self._light(image, rng)
        image += rng.normal(0.0, NOISE_SIGMA, image.shape)
        return np.clip(np.round(image), 0, 255).astype(np.uint8), truth

    def _draw_well(self, image: np.ndarray, rng: np.random.Generator, row: int, col: int,
                   shift_y: int, shift_x: int, defect: str | None) -> None:
        cfg = self.config
        pitch = cfg.pitch_px
        jitter = rng.uniform(-WELL_SHIFT_PX, WELL_SHIFT_PX, size=2)
        cy = cfg.margin_px + (row + 0.5) * pitch + shift_y + jitter[0]
        cx = cfg.margin_px + (col + 0.5) * pitch + shift_x + jitter[1]
        top, left = cfg.margin_px + row * pitch, cfg.margin_px + col * pitch
        window = (slice(max(top - pitch // 2, 0), min(top + pitch + pitch // 2, cfg.height)),
                  slice(max(left - pitch // 2, 0), min(left + pitch + pitch // 2, cfg.width)))
        yy, xx = self._yy[window], self._xx[window]
        dist = np.hypot(yy - cy, xx - cx)
        patch = image[window]
        cavity_r = CAVITY_RADIUS * pitch
        metal_r = METAL_RADIUS * pitch * rng.uniform(0.97, 1.03)
        metal_grey = METAL_GREY * rng.uniform(0.95, 1.05)
        if defect == "underfill":
            metal_r *= rng.uniform(0.55, 0.7)
            metal_grey *= rng.uniform(0.75, 0.85)
        cavity = _disk(dist, cavity_r)
        patch[:] = patch * (1 - cavity) + CAVITY_GREY * cavity
        # The cast surface is domed: brighter towards a highlight up-left of centre.
        highlight = np.hypot(yy - (cy - 0.25 * metal_r), xx - (cx - 0.25 * metal_r))
        dome = 1.0 + 0.18 * np.clip(1 - highlight / (1.3 * metal_r), 0, 1)
        metal = _disk(dist, metal_r)
        patch[:] = patch * (1 - metal) + metal_grey * dome * metal
        if defect == "spill":
            # The grid cell the layout crops: a spill never reaches a neighbour labelled normal.
            cell = (yy >= top) & (yy < top + pitch) & (xx >= left) & (xx < left + pitch)
            self._draw_spill(patch, rng, yy, xx, cy, cx, cavity_r, metal_grey, cell)
        elif defect == "crack":
            self._draw_crack(patch, rng, yy, xx, cy, cx, metal_r)
        elif defect == "foreign":
            self._draw_foreign(patch, rng, yy, xx, cy, cx, cavity_r)

    @staticmethod
    def _draw_spill(patch: np.ndarray, rng: np.random.Generator, yy: np.ndarray,
                    xx: np.ndarray, cy: float, cx: float, cavity_r: float,
                    metal_grey: float, cell: np.ndarray) -> None:
        """A tongue of metal from the well across the rim onto the mould, cut off at the edge of
        the well's own cell (``cell``), so that ground truth stays per well: a tongue that ran
        on, with the tray and well shifts, reached up to 16 px into the next well."""
        angle = rng.uniform(0, 2 * np.pi)
        reach = cavity_r + rng.uniform(1.5, 3.5)
        for step in np.linspace(0.55, 1.0, 5):
            by = cy + np.sin(angle) * reach * step
            bx = cx + np.cos(angle) * reach * step
            radius = rng.uniform(2.5, 4.0) * (1.15 - 0.5 * step)
            blob = _disk(np.hypot(yy - by, xx - bx), radius) * cell
            patch[:] = patch * (1 - blob) + metal_grey * 0.95 * blob

    @staticmethod
    def _draw_crack(patch: np.ndarray, rng: np.random.Generator, yy: np.ndarray,
                    xx: np.ndarray, cy: float, cx: float, metal_r: float) -> None:
        """A jagged dark line across the metal surface."""
        angle = rng.uniform(0, np.pi)
        points = []
        for t in np.linspace(-0.9, 0.9, 6):
            offset = rng.uniform(-1.5, 1.5)
            points.append((cy + np.sin(angle) * t * metal_r + np.cos(angle) * offset,
                           cx + np.cos(angle) * t * metal_r - np.sin(angle) * offset))
        width = rng.uniform(0.9, 1.4)
        for (y0, x0), (y1, x1) in itertools.pairwise(points):
            dy, dx = y1 - y0, x1 - x0
            length2 = dy * dy + dx * dx
            t = np.clip(((yy - y0) * dy + (xx - x0) * dx) / length2, 0, 1)
            dist = np.hypot(yy - (y0 + t * dy), xx - (x0 + t * dx))
            line = np.clip(width - dist + 0.5, 0, 1)
            patch[:] = patch * (1 - line) + CAVITY_GREY * line

    @staticmethod
    def _draw_foreign(patch: np.ndarray, rng: np.random.Generator, yy: np.ndarray,
                      xx: np.ndarray, cy: float, cx: float, cavity_r: float) -> None:
        """A small dark or bright object with hard edges lying on the casting."""
        radius = rng.uniform(0, cavity_r * 0.8)
        angle = rng.uniform(0, 2 * np.pi)
        oy, ox = cy + radius * np.sin(angle), cx + radius * np.cos(angle)
        half_h, half_w = rng.uniform(2.0, 3.5, size=2)
        inside = (np.abs(yy - oy) <= half_h) & (np.abs(xx - ox) <= half_w)
        patch[inside] = rng.choice([15.0, 250.0])

    def _light(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Uneven lighting: a linear gradient of random direction, and overall brightness."""
        cfg = self.config
        angle = rng.uniform(0, 2 * np.pi)
        slope = rng.uniform(0, LIGHT_SLOPE_MAX)
        across = ((self._xx / cfg.width - 0.5) * np.cos(angle)
                  + (self._yy / cfg.height - 0.5) * np.sin(angle))
        gain = 1.0 + rng.uniform(-BRIGHTNESS_JITTER, BRIGHTNESS_JITTER) + slope * across
        return image * gain
