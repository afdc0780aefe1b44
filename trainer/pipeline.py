"""``fit_bundle``: data → trained model → calibrated int8 bundle (CLI, demo, benchmarks)."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trainer.data import Dataset, load_dataset, make_spec, parse_shape
from trainer.defaults import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_BATCH_SIZES,
    DEFAULT_FILTERS,
    DEFAULT_LATENT_CHANNELS,
    DEFAULT_LEARNING_RATE,
    DEFAULT_PATIENCE_ROUNDS,
    DEFAULT_RULE,
    DEFAULT_SIZE_PX,
    DEFAULT_VAL_FRACTION,
)
from trainer.export import ExportResult, Reporter, check_output_dir, export_bundle
from trainer.fit import FitOptions, fit_autoencoder
from trainer.model import ModelConfig
from trainer.quantize import parse_batch_sizes
from trainer.thresholds import parse_rule, require_labels


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def fit_bundle(
    data: str | Path | Dataset,
    out_dir: str | Path,
    *,
    size: int = DEFAULT_SIZE_PX,
    channels: int = 1,
    shape: str | Sequence[int] | None = None,
    model: str = "ae",
    filters: Sequence[int] = DEFAULT_FILTERS,
    latent: int = DEFAULT_LATENT_CHANNELS,
    members: int = 1,
    steps: int | None = None,
    epochs: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    lr_schedule: str = "constant",
    patience: int = DEFAULT_PATIENCE_ROUNDS,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    augment: Sequence[str] = (),
    threshold: str = DEFAULT_RULE,
    batch_sizes: str | Sequence[int] = DEFAULT_BATCH_SIZES,
    seed: int = 0,
    keep_float: bool = False,
    name: str | None = None,
    progress: bool | None = None,
    report: Reporter = _stderr,
) -> Path:
    """Train a conv autoencoder on the normals in ``data`` and write an int8 bundle to ``out_dir``.

    ``data`` is an MVTec-style folder, a ``.npz`` (``shape`` for flat rows) or a
    :class:`~trainer.data.Dataset` (whose spec then overrides ``size``/``channels``). ``steps`` is
    the optimiser budget (default 1500); ``epochs`` replaces it with full passes over the
    training normals. ``members`` > 1 trains that many autoencoders side by side in one model and
    scores with the mean of their errors (an ensemble: that many times the device's compute).
    Messages go to ``report`` (stderr by default). Returns the bundle directory.
    Raises a ProjectError subclass (DataError, ConfigError, BundleError) with a one-line reason.
    """
    return fit_bundle_detailed(
        data, out_dir, size=size, channels=channels, shape=shape, model=model, filters=filters,
        latent=latent, steps=steps, epochs=epochs, batch_size=batch_size,
        learning_rate=learning_rate, lr_schedule=lr_schedule, patience=patience,
        val_fraction=val_fraction, augment=augment, threshold=threshold, batch_sizes=batch_sizes,
        seed=seed, keep_float=keep_float, name=name, progress=progress, report=report,
        members=members).path


def fit_bundle_detailed(data: str | Path | Dataset, out_dir: str | Path, *, size: int,
                        channels: int, shape: str | Sequence[int] | None, model: str,
                        filters: Sequence[int], latent: int, steps: int | None,
                        epochs: int | None, batch_size: int, learning_rate: float,
                        val_fraction: float, augment: Sequence[str], threshold: str,
                        batch_sizes: str | Sequence[int], seed: int, keep_float: bool,
                        name: str | None, progress: bool | None,
                        report: Reporter, lr_schedule: str = "constant",
                        patience: int = DEFAULT_PATIENCE_ROUNDS,
                        members: int = 1) -> ExportResult:
    """:func:`fit_bundle`, returning every figure of the export (for benchmarks and tests)."""
    started = time.perf_counter()
    out_path = Path(out_dir)
    rule = parse_rule(threshold)  # fail on a typo before minutes of training
    sizes = parse_batch_sizes(batch_sizes)
    check_output_dir(out_path)  # before training, not after minutes of it
    options = FitOptions(steps=steps, epochs=epochs, batch_size=batch_size,
                         learning_rate=learning_rate, val_fraction=val_fraction, seed=seed,
                         augment=tuple(augment), lr_schedule=lr_schedule,
                         patience_rounds=patience)
    if isinstance(data, Dataset):
        dataset = data
    else:
        flat_shape = parse_shape(shape) if isinstance(shape, str) else (
            tuple(shape) if shape is not None else None)
        dataset = load_dataset(data, make_spec(size, channels), shape=flat_shape)
    spec = dataset.spec
    config = ModelConfig(height=spec.height, width=spec.width, channels=spec.channels,
                         filters=tuple(int(f) for f in filters), latent=latent, kind=model,
                         members=members)
    require_labels(rule, len(dataset.test_anomalies))
    report(f"data: {dataset.summary['train_normals']} normals, "
           f"{dataset.summary['test_normals']} test normals, "
           f"{dataset.summary['test_anomalies']} anomalies from {dataset.summary['source']}")
    for note in dataset.notes:
        report(f"note: {note}")
    fit = fit_autoencoder(dataset, config, options, report=report, progress=progress)
    for warning in fit.warnings:
        report(f"warning: {warning}")
    provenance: dict[str, Any] = {
        "trainer_options": {"steps": steps, "epochs": epochs, "batch_size": batch_size,
                            "learning_rate": learning_rate, "lr_schedule": lr_schedule,
                            "patience_rounds": patience, "val_fraction": val_fraction,
                            "augment": list(augment), "threshold": str(rule),
                            "batch_sizes": list(sizes)},
    }
    result = export_bundle(fit, dataset, out_path, rule=rule, batch_sizes=sizes,
                           name=name or out_path.name, keep_float=keep_float, seed=seed,
                           provenance=provenance, report=report)
    _report_result(result, time.perf_counter() - started, report)
    return result


def _report_result(result: ExportResult, seconds: float, report: Reporter) -> None:
    t = result.threshold
    if t.low is None:
        bound = f"> {t.high:.6f}"
    elif t.high is None:
        bound = f"< {t.low:.6f}"
    else:
        bound = f"outside [{t.low:.6f}, {t.high:.6f}]"
    agreement = result.agreement
    pearson = agreement.get("pearson")
    report(f"threshold ({t.rule}, int8 scores): anomalous when score {bound}")
    report(f"normal scores (int8, held back): mean {result.normal_scores['mean']:.6f}, "
           f"std {result.normal_scores['std']:.6f}, max {result.normal_scores['max']:.6f}")
    report("float vs int8: Pearson " + ("n/a" if pearson is None else f"{pearson:.4f}")
           + (f", AUROC float {agreement['auroc_float']:.4f} / int8 {agreement['auroc_int8']:.4f}"
              if "auroc_int8" in agreement else ""))
    report(f"wrote {result.path} ({', '.join(f'{k} {v} B' for k, v in result.model_bytes.items())})"
           f" in {seconds:.1f} s")
