"""Trainer: fit a compact conv autoencoder on normal crops and export an int8 edge bundle.

The trainer imports the edge package (to prepare crops and score with the device's own code);
the edge never imports the trainer. Importing this package quiets TensorFlow's C++ start-up logs
before TensorFlow is loaded, so users see the trainer's messages and not the framework's.

Python API::

    from trainer import fit_bundle
    bundle_dir = fit_bundle("data/my_line", "models/my_line", size=32, steps=2000)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Must be set before TensorFlow is first imported: "3" hides TF's C++ INFO/WARNING lines. A
# default only: a user who exports it explicitly keeps their own value. (oneDNN stays on: it
# trains about twice as fast on CPU and gave bit-identical seeded runs here, run to run.)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

if TYPE_CHECKING:
    from trainer.data import Dataset

__all__ = ["fit_bundle"]


def fit_bundle(data: str | Path | Dataset, out_dir: str | Path, **options: Any) -> Path:
    """Train on ``data`` (a path or a :class:`trainer.data.Dataset`) and write a bundle.

    Keyword options are those of :func:`trainer.pipeline.fit_bundle`; returns the bundle
    directory. Imported lazily so ``import trainer`` does not load TensorFlow.
    """
    from trainer.pipeline import fit_bundle as _fit_bundle

    return _fit_bundle(data, out_dir, **options)
