"""CLI defaults, free of heavy imports so ``trainer --help`` answers at once.

The modules that use them (fit, model, quantize, thresholds, pipeline) import them from here.
"""

from __future__ import annotations

DEFAULT_SIZE_PX = 32             # model input side; crops are resized to it
DEFAULT_STEPS = 1500             # optimiser steps, whatever the number of normals
DEFAULT_BATCH_SIZE = 32          # training batch (crops per step)
DEFAULT_LEARNING_RATE = 1e-3     # Adam
LR_SCHEDULES = ("constant", "cosine")  # cosine: decays to 0 over the step budget
DEFAULT_PATIENCE_ROUNDS = 6      # early stopping on held-back normals; 0 turns it off
DEFAULT_VAL_FRACTION = 0.2       # normals held back for early stopping and calibration
AUGMENTATIONS = ("shift", "hflip", "vflip", "noise", "erase", "paste")
DEFAULT_FILTERS = (16, 32)       # filters per stride-2 stage
DEFAULT_LATENT_CHANNELS = 8      # bottleneck channels
MODEL_KINDS = ("ae", "vae")      # registry keys of trainer.model.MODEL_BUILDERS
DEFAULT_BATCH_SIZES = (1, 16)    # one int8 model per served batch size
DEFAULT_RULE = "quantile:0.999"  # threshold rule on int8 scores of held-back normals
