"""Locate the read-only benchmark data in ``../shared/data`` beside the checkout.

The data is not part of the project: a fresh clone has no ``../shared``. Benchmarks call
:func:`require_mnist` (or :func:`shared_data_dir`) and exit non-zero with a message when it is
absent, instead of failing half-way through a run.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# Override with EDGE_ANOMALY_SHARED_DATA=/path/to/data when the data lives elsewhere.
DATA_ENV = "EDGE_ANOMALY_SHARED_DATA"
DEFAULT_DATA_DIR = ROOT.parent / "shared" / "data"
MNIST_DIR = "mnist-oneclass"
MNIST_SIDE_PX = 28
DIGITS = tuple(range(10))
MISSING_EXIT_CODE = 2
TRAIN_SHARE = 0.8  # of a digit's normals, under the one-class protocol
PROTOCOL_SEED = 0


def shared_data_dir() -> Path:
    """The shared data folder (``$EDGE_ANOMALY_SHARED_DATA`` or ``../shared/data``)."""
    return Path(os.environ.get(DATA_ENV, DEFAULT_DATA_DIR))


def require_mnist() -> Path:
    """The mnist-oneclass folder, or exit with a message saying where it was looked for."""
    folder = shared_data_dir() / MNIST_DIR
    missing = [f"mnist{k}.npz" for k in DIGITS if not (folder / f"mnist{k}.npz").is_file()]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        print(f"benchmark data not found: {folder} lacks {', '.join(missing[:3])}{more}."
              "\nThis benchmark needs the read-only "
              f"mnist-oneclass data beside the checkout (../shared/data/{MNIST_DIR}) or "
              f"${DATA_ENV} pointing at a folder that holds {MNIST_DIR}/. It is not part of the "
              "repository; nothing was run.", file=sys.stderr)
        sys.exit(MISSING_EXIT_CODE)
    return folder


def load_digit(digit: int) -> tuple[np.ndarray, np.ndarray]:
    """(normals, anomalies) of ``mnist{digit}.npz`` as uint8 (n, 28, 28)."""
    with np.load(require_mnist() / f"mnist{digit}.npz", allow_pickle=False) as archive:
        x, y = archive["x"], archive["y"].reshape(-1)
    images = x.reshape(len(x), MNIST_SIDE_PX, MNIST_SIDE_PX).astype(np.uint8)
    return images[y == 0], images[y == 1]


def protocol_split(digit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The one-class protocol: (train normals, test normals, anomalies) for ``digit``.

    The digit's normals are shuffled with ``default_rng(0).permutation``; the first 80 % train,
    the remaining 20 % plus every anomaly in the file are the test set.
    """
    normals, anomalies = load_digit(digit)
    order = np.random.default_rng(PROTOCOL_SEED).permutation(len(normals))
    cut = int(len(normals) * TRAIN_SHARE)
    return normals[order[:cut]], normals[order[cut:]], anomalies


def all_normals() -> dict[int, np.ndarray]:
    """Every digit's normals (together the full MNIST set), keyed by digit."""
    return {digit: load_digit(digit)[0] for digit in DIGITS}


VALIDATION_SHARE = 0.1  # of a digit's training normals, held back to compare recipes
VALIDATION_PER_DIGIT = 150  # validation anomalies drawn from each other digit
VALIDATION_SEED = 1


def validation_split(digit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Data to choose a recipe on without touching the test set of ``digit``.

    Returns (fit normals, validation normals, validation anomalies, the digit of each anomaly).
    The validation normals are 10 % of the protocol's training normals (the model is fitted on
    the other 90 %); the anomalies are 150 training normals of each other digit, none of them
    among ``digit``'s test anomalies. So a choice made here never saw a test label.
    """
    train = protocol_split(digit)[0]
    order = np.random.default_rng(VALIDATION_SEED).permutation(len(train))
    cut = int(len(train) * VALIDATION_SHARE)
    tested = {row.tobytes() for row in protocol_split(digit)[2]}
    rng = np.random.default_rng(VALIDATION_SEED)
    anomalies, owners = [], []
    for other in DIGITS:
        if other == digit:
            continue
        pool = np.array([row for row in protocol_split(other)[0] if row.tobytes() not in tested])
        anomalies.append(pool[rng.permutation(len(pool))[:VALIDATION_PER_DIGIT]])
        owners.append(np.full(len(anomalies[-1]), other))
    return train[order[cut:]], train[order[:cut]], np.concatenate(anomalies), np.concatenate(owners)
