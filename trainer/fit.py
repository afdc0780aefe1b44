"""Training on normals only, with a budget in optimiser steps rather than epochs.

A line that has just been set up has a few hundred normal crops; sizing the budget in steps makes
200 normals train as long as 20,000 (the user may still ask for epochs, converted to steps). Keras
sees "rounds" of ``steps_per_round`` steps drawn from an endless shuffled stream, so early stopping
and the per-round summary line work the same for any data size.

A slice of the normals is held back for validation: early stopping watches it, the best weights
are restored, and a PCA reconstruction baseline is fitted on the training normals and scored on it,
so the user is told plainly when the autoencoder learned nothing a linear model could not.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.decomposition import PCA

from edge.errors import ConfigError, DataError
from edge.scoring import declared_members, reconstruction_mse
from trainer.backend import keras
from trainer.data import Dataset
from trainer.defaults import (
    AUGMENTATIONS,
    DEFAULT_BATCH_SIZE,
    DEFAULT_LEARNING_RATE,
    DEFAULT_PATIENCE_ROUNDS,
    DEFAULT_STEPS,
    DEFAULT_VAL_FRACTION,
    LR_SCHEDULES,
)
from trainer.model import OUTPUT_LAYER, ModelConfig, build_model, member_loss, member_suffix

Reporter = Callable[[str], None]

# Keras "epochs" are rounds of at least this many steps, so small data sets do not spend their
# time in per-epoch overhead (validation, callbacks) instead of training.
MIN_STEPS_PER_ROUND = 50
MIN_ROUNDS = 10  # a budget of at least 10 × MIN_STEPS_PER_ROUND is split into 10 rounds or more
MIN_NORMALS = 10          # below this no split is meaningful: refuse
FEW_NORMALS_WARNING = 50  # below this, warn that thresholds will be rough
MIN_VAL_NORMALS = 2
PCA_VARIANCE = 0.90       # components the linear baseline keeps: this share of train variance
PCA_MAX_SAMPLES = 2000    # training normals the baseline is fitted on, at most
PIXEL_MAX = 255.0
DEFAULT_SHIFT_PX = 2
DEFAULT_NOISE_STD = 0.05  # denoising noise, in [0, 1] pixel units
# Inpainting: the side of the square blanked in the model's input, as a share of the crop's
# smaller side (8 px of MNIST's 28). Chosen on one-class MNIST (docs/results.md): 0.2–0.35 did
# best there, half the side did worse.
DEFAULT_ERASE_FRACTION = 0.3
OUTPUT_MEAN_FLOOR = 1e-3  # keeps the initial output logit finite for all-black/white data


@dataclass(frozen=True)
class FitOptions:
    """How to train. ``epochs`` (when given) overrides ``steps``: steps = epochs × batches/epoch."""

    steps: int | None = None
    epochs: int | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    learning_rate: float = DEFAULT_LEARNING_RATE
    val_fraction: float = DEFAULT_VAL_FRACTION
    seed: int = 0
    augment: tuple[str, ...] = ()
    shift_px: int = DEFAULT_SHIFT_PX
    noise_std: float = DEFAULT_NOISE_STD
    erase_fraction: float = DEFAULT_ERASE_FRACTION
    patience_rounds: int = DEFAULT_PATIENCE_ROUNDS  # 0: no early stopping, keep the last weights
    lr_schedule: str = "constant"

    def __post_init__(self) -> None:
        unknown = sorted(set(self.augment) - set(AUGMENTATIONS))
        if unknown:
            raise ConfigError(f"--augment {','.join(unknown)} is unknown; choose from "
                              f"{','.join(AUGMENTATIONS)}.")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"--lr-schedule {self.lr_schedule!r} is unknown; choose from "
                              f"{', '.join(LR_SCHEDULES)}.")
        if self.patience_rounds < 0:
            raise ConfigError(f"--patience {self.patience_rounds} must be 0 (off) or more rounds.")
        if not 0.0 < self.erase_fraction < 1.0:
            raise ConfigError(f"erase fraction {self.erase_fraction} must be between 0 and 1 "
                              "(share of the crop's side that is blanked).")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"--val-fraction {self.val_fraction} must be between 0 and 1.")
        for name in ("steps", "epochs"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"--{name} {value} must be at least 1.")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size {self.batch_size} must be at least 1.")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ConfigError(f"--learning-rate {self.learning_rate} must be a positive number "
                              f"(default {DEFAULT_LEARNING_RATE:g}).")


@dataclass
class FitResult:
    """A trained float model and what the export and the report need to know about it."""

    model: keras.Model
    config: ModelConfig
    train_normals: np.ndarray
    val_normals: np.ndarray
    history: list[dict[str, float]]
    steps_run: int
    steps_budget: int
    steps_per_round: int
    best_round: int
    baseline: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    batch_size: int = DEFAULT_BATCH_SIZE

    @property
    def epochs_equivalent(self) -> float:
        """Passes over the training normals that the steps run amount to."""
        return self.steps_run * self.batch_size / max(len(self.train_normals), 1)


def split_normals(normals: np.ndarray, val_fraction: float,
                  seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded shuffle of the normals into (train, validation)."""
    if len(normals) < MIN_NORMALS:
        raise DataError(f"only {len(normals)} normal crops; at least {MIN_NORMALS} are needed to "
                        f"train and hold some back (a few hundred is a good start).")
    order = np.random.default_rng(seed).permutation(len(normals))
    n_val = max(MIN_VAL_NORMALS, round(len(normals) * val_fraction))
    return normals[order[n_val:]], normals[order[:n_val]]


def batch_stream(images_u8: np.ndarray, options: FitOptions,
                 rng: np.random.Generator) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Endless (input, target) float32 batches in [0, 1], augmented as configured."""
    count = len(images_u8)
    while True:
        index = rng.integers(0, count, size=options.batch_size)
        clean = images_u8[index].astype(np.float32) / np.float32(PIXEL_MAX)
        clean = augment_batch(clean, options, rng)
        noisy = clean
        if "noise" in options.augment:
            # Denoising: the model sees a noisy crop and must return the clean one.
            noise = rng.normal(0.0, options.noise_std, size=clean.shape).astype(np.float32)
            noisy = np.clip(clean + noise, 0.0, 1.0)
        if "erase" in options.augment:
            noisy = erase_squares(noisy, options.erase_fraction, rng)
        if "paste" in options.augment:
            donors = images_u8[rng.integers(0, count, size=options.batch_size)]
            noisy = paste_squares(noisy, donors.astype(np.float32) / np.float32(PIXEL_MAX),
                                  options.erase_fraction, rng)
        yield noisy, clean


def paste_squares(batch: np.ndarray, donors: np.ndarray, fraction: float,
                  rng: np.random.Generator) -> np.ndarray:
    """CutPaste-style input: each crop gets a square of ``fraction`` of its smaller side cut from
    a random place of another normal crop (``donors``, same shape), pasted at a random place; the
    target stays whole.

    Where erasing teaches the model to add what a normal crop must have, pasting teaches it to
    remove what a normal crop must not have there — a stroke, an edge, a blob in the wrong place —
    so it leans on what it learned of normal crops, not on copying its input.
    """
    count, height, width = batch.shape[:3]
    side = max(1, round(min(height, width) * fraction))
    out = batch.copy()
    spots = rng.integers(0, [height - side + 1, width - side + 1] * 2, size=(count, 4))
    for i, (top, left, from_top, from_left) in enumerate(spots):
        out[i, top:top + side, left:left + side] = donors[i, from_top:from_top + side,
                                                          from_left:from_left + side]
    return out


def erase_squares(batch: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Inpainting input: each crop with one square of ``fraction`` of its smaller side set to 0
    at a random place (the target stays whole).

    The model learns to fill in what a normal crop must have there, so a crop that lacks normal
    structure — a thin "1" where an "8" belongs, a missing feature on a part — is "repaired" into
    a normal one, and its reconstruction error grows.
    """
    count, height, width = batch.shape[:3]
    side = max(1, round(min(height, width) * fraction))
    top = rng.integers(0, height - side + 1, size=count)
    left = rng.integers(0, width - side + 1, size=count)
    rows = np.arange(height)[None, :]
    cols = np.arange(width)[None, :]
    inside_rows = (rows >= top[:, None]) & (rows < top[:, None] + side)
    inside_cols = (cols >= left[:, None]) & (cols < left[:, None] + side)
    square = inside_rows[:, :, None] & inside_cols[:, None, :]  # (count, height, width)
    return np.where(square[..., None], np.float32(0.0), batch)


def augment_batch(batch: np.ndarray, options: FitOptions, rng: np.random.Generator) -> np.ndarray:
    """Geometric augmentations that keep a normal crop normal (only those configured)."""
    out = batch.copy()
    if "hflip" in options.augment:
        flip = rng.random(len(out)) < 0.5
        out[flip] = out[flip, :, ::-1]
    if "vflip" in options.augment:
        flip = rng.random(len(out)) < 0.5
        out[flip] = out[flip, ::-1]
    if "shift" in options.augment and options.shift_px > 0:
        s = options.shift_px
        # Edge-replicating padding: a shifted crop does not get a black border it never has.
        padded = np.pad(out, ((0, 0), (s, s), (s, s), (0, 0)), mode="edge")
        height, width = out.shape[1:3]
        for i, (dy, dx) in enumerate(rng.integers(0, 2 * s + 1, size=(len(out), 2))):
            out[i] = padded[i, dy:dy + height, dx:dx + width]
    return out


def _steps_budget(options: FitOptions, n_train: int) -> int:
    if options.epochs is not None:
        return options.epochs * math.ceil(n_train / options.batch_size)
    return options.steps if options.steps is not None else DEFAULT_STEPS


def plan_rounds(budget: int, n_train: int, batch_size: int) -> tuple[int, int]:
    """(rounds, steps per round) for a budget of optimiser steps.

    A round is about one pass over the training normals, at least MIN_STEPS_PER_ROUND steps, and
    at most a MIN_ROUNDS-th of the budget — so a large data set still gets a progress line and an
    early-stopping check every tenth of the run. The rounds share the budget evenly: the total is
    the budget, or at most ``rounds - 1`` steps more when it does not divide (Keras rounds are all
    the same length).
    """
    one_pass = max(MIN_STEPS_PER_ROUND, math.ceil(n_train / batch_size))
    target = min(budget, one_pass, max(MIN_STEPS_PER_ROUND, budget // MIN_ROUNDS))
    rounds = max(1, budget // max(1, target))  # rounding down keeps every round >= target
    return rounds, math.ceil(budget / rounds)


class _RoundLine(keras.callbacks.Callback):
    """One line per round when output is not a terminal (logs, CI): no progress-bar noise."""

    def __init__(self, rounds: int, steps_per_round: int, report: Reporter) -> None:
        super().__init__()
        self.rounds, self.steps_per_round, self.report = rounds, steps_per_round, report

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        self.report(f"round {epoch + 1}/{self.rounds} (steps {(epoch + 1) * self.steps_per_round})"
                    f": loss {logs.get('loss', float('nan')):.6f} "
                    f"val_loss {logs.get('val_loss', float('nan')):.6f}")


def init_output_bias(model: keras.Model, train_u8: np.ndarray, members: int = 1) -> None:
    """Start the sigmoid output (of every member) at the training normals' mean pixel value, per
    channel.

    From the default bias 0 the output starts at 0.5; on dark, sparse crops (MNIST "1") the first
    steps then push every ReLU below zero to darken it, and the model ends up returning black
    whatever the input. Starting at the data's mean takes that push away.
    """
    layers = [model.get_layer(OUTPUT_LAYER + member_suffix(m)) for m in range(members)]
    channels = layers[0].get_weights()[1].shape[0]
    mean = np.clip(to_unit(train_u8).reshape(-1, channels).mean(axis=0),
                   OUTPUT_MEAN_FLOOR, 1.0 - OUTPUT_MEAN_FLOOR)
    logit = np.log(mean / (1.0 - mean))  # computed once: the same start for every member
    for layer in layers:
        kernel, bias = layer.get_weights()
        layer.set_weights([kernel, logit.astype(bias.dtype)])


def to_unit(images_u8: np.ndarray) -> np.ndarray:
    return images_u8.astype(np.float32) / np.float32(PIXEL_MAX)


def float_scores(model: keras.Model, images_u8: np.ndarray) -> np.ndarray:
    """Reconstruction MSE of the float Keras model, the same definition the edge uses."""
    unit = to_unit(images_u8)
    reconstruction = model.predict(unit, batch_size=DEFAULT_BATCH_SIZE, verbose=0)
    members = declared_members(model.input_shape, model.output_shape)
    return reconstruction_mse(unit, np.asarray(reconstruction), members)


def pca_baseline(train_u8: np.ndarray, val_u8: np.ndarray, seed: int) -> dict[str, Any]:
    """Mean reconstruction MSE on the validation normals of a PCA fitted on training normals."""
    if len(train_u8) > PCA_MAX_SAMPLES:  # a baseline, not a model: a sample is enough
        rng = np.random.default_rng(seed)
        train_u8 = train_u8[rng.choice(len(train_u8), PCA_MAX_SAMPLES, replace=False)]
    train = to_unit(train_u8).reshape(len(train_u8), -1)
    val = to_unit(val_u8).reshape(len(val_u8), -1)
    limit = min(len(train) - 1, train.shape[1])
    # One fit with every component; the first k of an exact PCA are the k-component PCA.
    pca = PCA(n_components=limit, svd_solver="full").fit(train)
    cumulative = np.cumsum(pca.explained_variance_ratio_)
    components = min(limit, int(np.searchsorted(cumulative, PCA_VARIANCE)) + 1)
    basis = pca.components_[:components]
    reconstruction = (val - pca.mean_) @ basis.T @ basis + pca.mean_
    mse = reconstruction_mse(val, reconstruction)
    return {"method": f"PCA keeping {PCA_VARIANCE:.0%} of training variance",
            "components": components, "val_mse": float(np.mean(mse))}


def fit_autoencoder(dataset: Dataset, config: ModelConfig, options: FitOptions, *,
                    report: Reporter = print, progress: bool | None = None) -> FitResult:
    """Train ``config``'s model on ``dataset.train_normals``; returns the best-val-loss weights.

    ``progress``: Keras progress bar when True, one line per round when False; None picks the
    bar only when stderr is a terminal.
    """
    keras.utils.set_random_seed(options.seed)
    warnings: list[str] = []
    train, val = split_normals(dataset.train_normals, options.val_fraction, options.seed)
    if len(dataset.train_normals) < FEW_NORMALS_WARNING:
        warnings.append(
            f"only {len(dataset.train_normals)} normal crops (fewer than {FEW_NORMALS_WARNING}); "
            f"the threshold rests on {len(val)} held-back crops and will be rough. Collect more "
            "normals before trusting this model on a line.")
    budget = _steps_budget(options, len(train))
    rounds, steps_per_round = plan_rounds(budget, len(train), options.batch_size)

    model = build_model(config)
    init_output_bias(model, train, config.members)
    learning_rate: Any = options.learning_rate
    if options.lr_schedule == "cosine":
        learning_rate = keras.optimizers.schedules.CosineDecay(options.learning_rate,
                                                               rounds * steps_per_round)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=member_loss(config.members))
    val_unit = to_unit(val)
    callbacks: list[keras.callbacks.Callback] = []
    stopper = None
    if options.patience_rounds:
        # Any improvement counts (min_delta 0): the step budget already bounds the run, and late
        # improvements are small in absolute terms yet still tighten the normal-score spread.
        stopper = keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=options.patience_rounds, restore_best_weights=True)
        callbacks.append(stopper)
    show_bar = sys.stderr.isatty() if progress is None else progress
    if not show_bar:
        callbacks.append(_RoundLine(rounds, steps_per_round, report))
    report(f"training on {len(train)} normals ({len(val)} held back): "
           f"{rounds * steps_per_round} steps of "
           f"{options.batch_size} in {rounds} rounds, seed {options.seed}, learning rate "
           f"{options.learning_rate:g} ({options.lr_schedule})"
           + (f", early stopping after {options.patience_rounds} rounds without improvement"
              if options.patience_rounds else ", no early stopping")
           + (f", augment {','.join(options.augment)}" if options.augment else ""))
    stream = batch_stream(train, options, np.random.default_rng(options.seed))
    keras_history = model.fit(stream, steps_per_epoch=steps_per_round, epochs=rounds,
                              validation_data=(val_unit, val_unit),
                              callbacks=callbacks, verbose=1 if show_bar else 0,
                              shuffle=False)  # the stream is already random
    history = [
        {"round": i + 1, "steps": (i + 1) * steps_per_round,
         "epoch": round((i + 1) * steps_per_round * options.batch_size / len(train), 3),
         "loss": float(keras_history.history["loss"][i]),
         "val_loss": float(keras_history.history["val_loss"][i])}
        for i in range(len(keras_history.history["loss"]))
    ]
    if stopper is None:  # no early stopping: the last round's weights are kept
        best_round = len(history)
    else:  # the round whose weights EarlyStopping restored (it counts epochs from 0)
        best_round = 1 + int(getattr(stopper, "best_epoch",
                                     np.argmin([h["val_loss"] for h in history])))
    kept = history[best_round - 1]
    # Only the kept round matters: a run that diverged after its best round exports that round.
    if not (math.isfinite(kept["loss"]) and math.isfinite(kept["val_loss"])):
        raise DataError(
            f"training diverged: the loss of the round whose weights would be kept (round "
            f"{best_round}) is {kept['loss']}; nothing was exported. Lower --learning-rate (it "
            f"was {options.learning_rate:g}) or check the data for constant or extreme images.")

    report(f"fitting the linear baseline (PCA) on {min(len(train), PCA_MAX_SAMPLES)} training "
           "normals, to check that the autoencoder learned more than it")
    baseline = pca_baseline(train, val, options.seed)
    baseline["ae_val_mse"] = float(np.mean(float_scores(model, val)))
    if baseline["ae_val_mse"] >= baseline["val_mse"]:
        warnings.append(
            f"the autoencoder reconstructs held-back normals no better than a linear baseline "
            f"(MSE {baseline['ae_val_mse']:.6f} vs {baseline['val_mse']:.6f} for PCA with "
            f"{baseline['components']} components, {PCA_VARIANCE:.0%} of training variance); it "
            "may not have learned. Train longer (--steps), widen it (--filters/--latent) or add "
            "normals.")
    return FitResult(model=model, config=config, train_normals=train, val_normals=val,
                     history=history, steps_run=len(history) * steps_per_round,
                     steps_budget=budget, steps_per_round=steps_per_round,
                     best_round=best_round, baseline=baseline, warnings=warnings,
                     batch_size=options.batch_size)
