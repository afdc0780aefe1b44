"""Loading a user's data into the exact uint8 crops the device will see.

Two inputs are understood:

* an MVTec-AD style folder: ``train/good/*`` (normals for training), optionally ``test/good/*``
  (held-out normals) and ``test/<defect>/*`` (anomalies); a plain folder of images is read as
  normals only;
* a ``.npz`` file with ``x`` shaped (n, H, W), (n, H, W, C) or (n, H*W) (the last needs
  ``shape=(H, W)``), optional ``y`` (0 normal, 1 anomaly) and optional ``x_test`` / ``y_test``.

Every image goes through :func:`edge.preprocess.prepare_crop`, the one colour and resize rule the
edge applies, so training sees what the device sees.
"""

from __future__ import annotations

import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.bundle import InputSpec
from edge.errors import DataError, ImageError
from edge.preprocess import IMAGE_SUFFIXES, check_frame, load_image, prepare_crop

MIN_MODEL_SIDE_PX = 8
MAX_MODEL_SIDE_PX = 256
PIXEL_MAX = 255
# Float arrays whose maximum is at most this are taken as [0, 1] images, otherwise as [0, 255].
UNIT_RANGE_MAX = 1.0
NORMAL_DIR = "good"


@dataclass(frozen=True)
class Dataset:
    """Prepared crops, all uint8 (n, H, W, C) matching ``spec``."""

    spec: InputSpec
    train_normals: np.ndarray
    test_normals: np.ndarray
    test_anomalies: np.ndarray
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def notes(self) -> list[str]:
        """Things the user should know about the data (resized images, label counts, ...)."""
        return list(self.summary.get("notes", []))


def make_spec(size: int | tuple[int, int], channels: int) -> InputSpec:
    """Input spec for a model of ``size`` (side or (height, width)) and 1 or 3 channels."""
    height, width = (size, size) if isinstance(size, int) else size
    for side in (height, width):
        if not MIN_MODEL_SIDE_PX <= side <= MAX_MODEL_SIDE_PX:
            raise DataError(
                f"model input size {height}×{width} px is outside "
                f"{MIN_MODEL_SIDE_PX}..{MAX_MODEL_SIDE_PX} px; choose --size in that range."
            )
    if channels not in (1, 3):
        raise DataError(f"--channels is {channels}; use 1 (grey) or 3 (RGB).")
    return InputSpec(height=height, width=width, channels=channels,
                     color_mode="grey" if channels == 1 else "rgb")


def from_arrays(spec: InputSpec, train_normals: np.ndarray,
                test_normals: np.ndarray | None = None,
                test_anomalies: np.ndarray | None = None, *, source: str = "arrays") -> Dataset:
    """Build a Dataset from in-memory uint8 images of any size (each list is resized to spec)."""
    notes: list[str] = []
    groups = (train_normals, test_normals, test_anomalies)
    sizes = Counter(np.asarray(image).shape for group in groups if group is not None
                    for image in group)
    _note_sizes(sizes, spec, source, notes)
    train = _prepare_all(list(train_normals), spec, f"{source}: train normals")
    test_n = _prepare_all(list(test_normals if test_normals is not None else []), spec,
                          f"{source}: test normals")
    test_a = _prepare_all(list(test_anomalies if test_anomalies is not None else []), spec,
                          f"{source}: test anomalies")
    return _finish(spec, train, test_n, test_a, source=source, kind="arrays", notes=notes)


def load_dataset(path: str | Path, spec: InputSpec, *,
                 shape: tuple[int, ...] | None = None) -> Dataset:
    """Read a folder or ``.npz`` at ``path`` and prepare every image to ``spec``.

    Raises DataError naming the file or folder and what to do when the data cannot be used.
    """
    path = Path(path)
    if path.is_dir():
        return _load_folder(path, spec)
    if path.suffix.lower() == ".npz" and path.is_file():
        return _load_npz(path, spec, shape)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder. Give an MVTec-style folder "
                        "(train/good/...) or a .npz file with an 'x' array.")
    raise DataError(f"{path}: not a folder or a .npz file; give an MVTec-style folder "
                    "(train/good/...) or a .npz file with an 'x' array.")


def parse_shape(text: str) -> tuple[int, ...]:
    """``"28,28"`` or ``"28,28,3"`` → tuple of ints, for flat npz rows."""
    try:
        dims = tuple(int(part) for part in text.replace("x", ",").split(","))
    except ValueError as exc:
        raise DataError(f"--shape {text!r} is not H,W or H,W,C (e.g. 28,28).") from exc
    if len(dims) not in (2, 3) or min(dims) < 1:
        raise DataError(f"--shape {text!r} must be H,W or H,W,C with positive sizes.")
    return dims


# --- folders -------------------------------------------------------------------------------------

def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _load_folder(root: Path, spec: InputSpec) -> Dataset:
    train_dir = root / "train" / NORMAL_DIR
    notes: list[str] = []
    if train_dir.is_dir():
        train_files = _images_in(train_dir)
        if not train_files:
            raise DataError(
                f"{train_dir} holds no images ({_found(train_dir)}); put the normal training "
                f"crops there as {', '.join(IMAGE_SUFFIXES[:3])} files."
            )
        test_dir = root / "test"
        test_normal_files: list[Path] = []
        anomaly_files: list[Path] = []
        defects: dict[str, int] = {}
        if test_dir.is_dir():
            for sub in sorted(p for p in test_dir.iterdir() if p.is_dir()):
                files = _images_in(sub)
                if sub.name == NORMAL_DIR:
                    test_normal_files = files
                else:
                    anomaly_files.extend(files)
                    defects[sub.name] = len(files)
        kind = "mvtec-folder"
    else:
        train_files = _images_in(root)
        if not train_files:
            raise DataError(
                f"{root} has no train/{NORMAL_DIR}/ folder and no images of its own "
                f"({_found(root)}); use the MVTec layout train/good/*.png "
                "(+ optional test/good, test/<defect>) or a folder of normal images."
            )
        test_normal_files, anomaly_files, defects = [], [], {}
        kind = "image-folder"
        notes.append(f"{root}: no train/good/ folder; all {len(train_files)} images are taken "
                     "as normals.")
    sizes: Counter[tuple[int, ...]] = Counter()
    train = _read_files(train_files, spec, sizes)
    test_n = _read_files(test_normal_files, spec, sizes)
    test_a = _read_files(anomaly_files, spec, sizes)
    _note_sizes(sizes, spec, str(root), notes)
    folders = [train_files[0].parent, *{f.parent for f in test_normal_files + anomaly_files}]
    _note_skipped(sorted(set(folders)), notes)
    dataset = _finish(spec, train, test_n, test_a, source=str(root), kind=kind, notes=notes)
    dataset.summary["defects"] = defects
    return dataset


def _found(folder: Path) -> str:
    names = sorted(p.name for p in folder.iterdir())
    if not names:
        return "it is empty"
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    return f"found: {shown}"


def _read_files(files: list[Path], spec: InputSpec,
                sizes: Counter[tuple[int, ...]]) -> np.ndarray:
    batch = np.empty((len(files), *spec.shape), dtype=np.uint8)
    for index, file in enumerate(files):
        image = load_image(file)  # ImageError (a DataError) names the file and the fix
        sizes[image.shape] += 1
        batch[index] = prepare_crop(image, spec)
    return batch


def _note_sizes(shapes: Counter[tuple[int, ...]], spec: InputSpec, origin: str,
                notes: list[str]) -> None:
    """Notes on what preparing the images changed: their size, and their colour."""
    sizes: Counter[tuple[int, ...]] = Counter()
    for shape, n in shapes.items():
        sizes[shape[:2]] += n
    other = {size: n for size, n in sizes.items() if size != (spec.height, spec.width)}
    if len(sizes) > 1:
        listed = ", ".join(f"{s[1]}×{s[0]} ({n})" for s, n in sizes.most_common(5))
        notes.append(f"{origin}: images come in {len(sizes)} sizes ({listed}); each is resized "
                     f"to {spec.width}×{spec.height} with the bilinear rule the edge uses.")
    elif other:
        (size, _), = other.items()
        notes.append(f"{origin}: images are {size[1]}×{size[0]} px, resized to "
                     f"{spec.width}×{spec.height} (bilinear, as on the edge).")
    # Colour is 3 or 4 channels; (H, W, 1) is grey, as prepare_crop reads it.
    converted = sum(n for shape, n in shapes.items()
                    if (len(shape) == 3 and shape[2] in (3, 4)) != (spec.color_mode == "rgb"))
    if converted:
        change = "made grey (luma)" if spec.color_mode == "grey" else "grey, copied to R, G and B"
        notes.append(f"{origin}: {converted} of {sum(shapes.values())} images are "
                     f"{'colour' if spec.color_mode == 'grey' else 'grey'} and were {change} "
                     f"for the bundle's {spec.color_mode} input.")


def _note_skipped(folders: list[Path], notes: list[str]) -> None:
    """Files that are not images by their suffix are left out: say so, naming a few."""
    images = {p for folder in folders for p in _images_in(folder)}
    skipped = sorted(p for folder in folders for p in folder.iterdir()
                     if p.is_file() and not p.name.startswith(".") and p not in images)
    if skipped:
        shown = ", ".join(str(p) for p in skipped[:3]) + (", ..." if len(skipped) > 3 else "")
        notes.append(f"{len(skipped)} file(s) skipped, not one of {', '.join(IMAGE_SUFFIXES)}: "
                     f"{shown}")


# --- npz -----------------------------------------------------------------------------------------

def _load_npz(path: Path, spec: InputSpec, shape: tuple[int, ...] | None) -> Dataset:
    try:
        # allow_pickle=False: a user's file must never run code when it is read. The file is
        # opened here so that it is closed even when numpy fails on it (a truncated zip).
        with path.open("rb") as handle:
            loaded = np.load(handle, allow_pickle=False)
            if isinstance(loaded, np.ndarray):  # a .npy: one array, taken as x
                arrays = {"x": loaded}
            else:
                with loaded as archive:
                    arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:  # not an npz, truncated
        raise DataError(f"{path}: cannot read as .npz ({exc}); it is damaged, truncated or not "
                        "a numpy .npz file. Save the images with numpy.savez(path, x=..., y=...) "
                        "(object arrays are not accepted).") from exc
    if "x" not in arrays:
        raise DataError(f"{path} has no array 'x' (found keys: {sorted(arrays)}); save the images "
                        "as x=... (and optional labels y=..., 0 normal / 1 anomaly).")
    notes: list[str] = []
    images = _npz_images(arrays["x"], shape, f"{path}['x']")
    labels = _npz_labels(arrays.get("y"), len(images), f"{path}['y']")
    normals, anomalies = images[labels == 0], images[labels == 1]
    if len(normals) == 0:
        raise DataError(f"{path}: all {len(images)} samples are labelled 1 (anomaly) in 'y'; "
                        "training needs normal samples labelled 0.")
    test_normals = np.empty((0, *spec.shape), dtype=np.uint8)
    # Each array is resized on its own: x and x_test may differ in size or channels.
    test_a = _prepare_all(list(anomalies), spec, f"{path}['x']")
    if "x_test" in arrays:
        test_images = _npz_images(arrays["x_test"], shape, f"{path}['x_test']")
        test_labels = _npz_labels(arrays.get("y_test"), len(test_images), f"{path}['y_test']")
        test_normals = _prepare_all(list(test_images[test_labels == 0]), spec,
                                    f"{path}['x_test']")
        test_a = np.concatenate([test_a, _prepare_all(list(test_images[test_labels == 1]), spec,
                                                      f"{path}['x_test']")])
        if test_images.shape[1:3] != (spec.height, spec.width):
            notes.append(f"{path}: x_test images are {test_images.shape[2]}×"
                         f"{test_images.shape[1]} px, resized to {spec.width}×{spec.height} "
                         "(bilinear, as on the edge).")
    if images.shape[1:3] != (spec.height, spec.width):
        notes.append(f"{path}: images are {images.shape[2]}×{images.shape[1]} px, resized to "
                     f"{spec.width}×{spec.height} (bilinear, as on the edge).")
    train = _prepare_all(list(normals), spec, f"{path}['x']")
    if "y" in arrays:
        notes.append(f"{path}: {len(normals)} normals (y=0) train the model; {len(test_a)} "
                     "anomalies (y=1) are used only for threshold choice and evaluation.")
    return _finish(spec, train, test_normals, test_a, source=str(path), kind="npz", notes=notes)


def _npz_images(x: np.ndarray, shape: tuple[int, ...] | None, origin: str) -> np.ndarray:
    """Any accepted layout of ``x`` → uint8 (n, H, W) or (n, H, W, C)."""
    if x.ndim == 2:
        if shape is None:
            raise DataError(f"{origin} has shape {x.shape} (flat rows); give the image shape, "
                            "e.g. --shape 28,28 (or 28,28,3 for colour).")
        if int(np.prod(shape)) != x.shape[1]:
            raise DataError(f"{origin} rows have {x.shape[1]} values but --shape "
                            f"{','.join(map(str, shape))} needs {int(np.prod(shape))}; "
                            "check the height and width (and channels).")
        x = x.reshape(len(x), *shape)
    elif shape is not None and tuple(x.shape[1:1 + len(shape)]) != tuple(shape):
        raise DataError(f"{origin} has images of shape {x.shape[1:]} but --shape "
                        f"{','.join(map(str, shape))} was given; drop --shape or correct it.")
    if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[3] not in (1, 3, 4)):
        raise DataError(f"{origin} has shape {x.shape}; expected (n, H, W), (n, H, W, C) with C "
                        "in 1/3/4, or (n, H*W) with --shape H,W.")
    if len(x) == 0:
        raise DataError(f"{origin} holds no samples.")
    return _to_uint8(x, origin)


def _to_uint8(x: np.ndarray, origin: str) -> np.ndarray:
    if x.dtype == np.uint8:
        return x
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise DataError(f"{origin} has dtype {x.dtype}; expected uint8 or a numeric type.")
    values = x.astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise DataError(f"{origin} contains NaN or infinite values; clean the data first.")
    low, high = float(values.min()), float(values.max())
    if low < 0 or high > PIXEL_MAX:
        raise DataError(f"{origin} values span [{low:g}, {high:g}]; expected pixels in [0, 255] "
                        "or [0, 1].")
    if np.issubdtype(x.dtype, np.floating) and high <= UNIT_RANGE_MAX:
        values = values * PIXEL_MAX
    return np.round(values).astype(np.uint8)


def _npz_labels(y: np.ndarray | None, count: int, origin: str) -> np.ndarray:
    if y is None:
        return np.zeros(count, dtype=np.int64)
    y = np.asarray(y).reshape(-1)
    if len(y) != count:
        raise DataError(f"{origin} has {len(y)} labels for {count} images; they must match.")
    values = set(np.unique(y).tolist())
    if not values <= {0, 1}:
        raise DataError(f"{origin} holds labels {sorted(values)}; use 0 (normal) and 1 (anomaly).")
    return y.astype(np.int64)


# --- shared --------------------------------------------------------------------------------------

def _prepare_all(images: list[np.ndarray], spec: InputSpec, origin: str) -> np.ndarray:
    batch = np.empty((len(images), *spec.shape), dtype=np.uint8)
    for index, image in enumerate(images):
        try:
            frame = check_frame(np.asarray(image), origin=f"{origin} sample {index}")
        except ImageError as exc:
            raise DataError(str(exc)) from exc
        batch[index] = prepare_crop(frame, spec)
    return batch


def _finish(spec: InputSpec, train: np.ndarray, test_normals: np.ndarray,
            test_anomalies: np.ndarray, *, source: str, kind: str, notes: list[str]) -> Dataset:
    if len(train) == 0:
        raise DataError(f"{source}: no normal images to train on; add normal crops.")
    summary: dict[str, Any] = {
        "source": source,
        "kind": kind,
        "train_normals": len(train),
        "test_normals": len(test_normals),
        "test_anomalies": len(test_anomalies),
        "input": {"height": spec.height, "width": spec.width, "channels": spec.channels,
                  "color_mode": spec.color_mode},
        "notes": notes,
    }
    return Dataset(spec, train, test_normals, test_anomalies, summary)
