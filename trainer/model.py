"""The compact convolutional autoencoder, built only from ops that quantize to full int8.

Encoder: one stride-2 3×3 Conv2D + ReLU per entry of ``filters``, then a 1×1 Conv2D + ReLU down to
``latent`` channels. Decoder: a stride-2 Conv2DTranspose + ReLU per stage in reverse, then a 3×3
Conv2D with a sigmoid so the output lives in [0, 1] like the input. Every op (CONV_2D,
TRANSPOSE_CONV, LOGISTIC, and PAD / STRIDED_SLICE for odd sizes) converts to int8 TFLite and is on
the Coral Edge TPU's supported list; there is no Lambda, Dense or Flatten.

The model is built with a FIXED batch dimension (``keras.Input(..., batch_size=B)``) for export:
a dynamic batch leaves SHAPE / STRIDED_SLICE / PACK ops around each transposed convolution
(docs in DESIGN.md). Training uses the same graph with a free batch; weights are copied across.

Sizes that do not divide by 2**stages (e.g. 30 with two stages) are zero-padded up to the next
multiple at the input and cropped back at the output, so any size works with any stage count.

``members`` > 1 builds that many independent autoencoders on the same input, their
reconstructions concatenated on the channel axis (CONCATENATION, int8 and Edge TPU too): an
ensemble in one model, whose score is the mean of the members' MSEs (edge.scoring). Trained with
:func:`member_loss`, each member learns on its own from its own initial weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from edge.errors import ConfigError
from trainer.backend import keras
from trainer.defaults import DEFAULT_FILTERS, DEFAULT_LATENT_CHANNELS

KERNEL_SIZE = 3
STRIDE = 2
# Smallest spatial side the bottleneck may reach (px); deeper stages would only blur.
MIN_BOTTLENECK_SIDE_PX = 2
# He initialisation for the ReLU layers: with Keras' default (Glorot) the signal shrinks at every
# ReLU stage, and a 3–4 stage model on sparse crops (MNIST "1") starts with an output that does
# not depend on its input and never leaves it.
RELU_INIT = "he_uniform"
OUTPUT_LAYER = "reconstruction"  # the sigmoid layer every model kind (and member) ends with


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild the network; stored in bundle.json provenance."""

    height: int
    width: int
    channels: int
    filters: tuple[int, ...] = DEFAULT_FILTERS
    latent: int = DEFAULT_LATENT_CHANNELS
    kind: str = "ae"
    members: int = 1

    def __post_init__(self) -> None:
        if self.kind not in MODEL_BUILDERS:
            raise ConfigError(
                f"--model {self.kind!r} is not available; choose one of "
                f"{sorted(k for k in MODEL_BUILDERS if k not in PLANNED_KINDS)}."
            )
        if (not isinstance(self.members, int) or isinstance(self.members, bool)
                or self.members < 1 or (self.members > 1 and self.kind != "ae")):
            raise ConfigError(
                f"--members {self.members!r} is not possible for --model {self.kind}: members "
                "must be a whole number ≥ 1, and only the plain autoencoder ('ae') can have more "
                "than one.")
        if not self.filters or min(self.filters) < 1 or self.latent < 1:
            raise ConfigError(
                f"filters {self.filters} / latent {self.latent} must be positive, with at least "
                "one stage (e.g. --filters 16,32 --latent 8)."
            )
        side = min(self.height, self.width)
        if math.ceil(side / STRIDE ** len(self.filters)) < MIN_BOTTLENECK_SIDE_PX:
            raise ConfigError(
                f"{len(self.filters)} stride-2 stages shrink a {side} px input below "
                f"{MIN_BOTTLENECK_SIDE_PX} px; use fewer --filters entries or a larger --size."
            )

    @property
    def padded_shape(self) -> tuple[int, int]:
        """(height, width) rounded up to a multiple of 2**stages."""
        factor = STRIDE ** len(self.filters)
        return (math.ceil(self.height / factor) * factor, math.ceil(self.width / factor) * factor)

    @property
    def bottleneck_values(self) -> int:
        """Numbers per sample at the bottleneck (its capacity)."""
        factor = STRIDE ** len(self.filters)
        padded_h, padded_w = self.padded_shape
        return (padded_h // factor) * (padded_w // factor) * self.latent

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["filters"] = list(self.filters)
        return data


def padded_input(config: ModelConfig, batch_size: int | None) -> tuple[Any, Any]:
    """The input, zero-padded to a multiple of 2**stages; returns (inputs, padded)."""
    inputs = keras.Input(shape=(config.height, config.width, config.channels),
                         batch_size=batch_size, name="crop")
    pad_h = config.padded_shape[0] - config.height
    pad_w = config.padded_shape[1] - config.width
    x = inputs
    if pad_h or pad_w:
        # Bottom/right zero padding: PAD quantizes exactly (pads with the zero point).
        x = keras.layers.ZeroPadding2D(((0, pad_h), (0, pad_w)), name="pad")(x)
    return inputs, x


def encoder_stages(config: ModelConfig, x: Any, suffix: str = "") -> Any:
    """The stride-2 encoder stages; ``suffix`` tells one member's layers from another's."""
    for stage, filters in enumerate(config.filters):
        x = keras.layers.Conv2D(filters, KERNEL_SIZE, strides=STRIDE, padding="same",
                                activation="relu", kernel_initializer=RELU_INIT,
                                name=f"encode_{stage}{suffix}")(x)
    return x


def padded_encoder(config: ModelConfig, batch_size: int | None) -> tuple[Any, Any]:
    """The input and the stride-2 encoder stages (after zero padding to a multiple of 2**stages);
    returns (inputs, features). Shared by every model kind so they export the same op set."""
    inputs, x = padded_input(config, batch_size)
    return inputs, encoder_stages(config, x)


def cropped_decoder(config: ModelConfig, x: Any, suffix: str = "") -> Any:
    """The stride-2 decoder stages, the sigmoid reconstruction, and the crop back to the input
    size; the mirror of :func:`padded_encoder`."""
    for stage, filters in reversed(list(enumerate(config.filters))):
        x = keras.layers.Conv2DTranspose(filters, KERNEL_SIZE, strides=STRIDE, padding="same",
                                         activation="relu", kernel_initializer=RELU_INIT,
                                         name=f"decode_{stage}{suffix}")(x)
    x = keras.layers.Conv2D(config.channels, KERNEL_SIZE, padding="same", activation="sigmoid",
                            name=f"{OUTPUT_LAYER}{suffix}")(x)
    pad_h = config.padded_shape[0] - config.height
    pad_w = config.padded_shape[1] - config.width
    if pad_h or pad_w:
        x = keras.layers.Cropping2D(((0, pad_h), (0, pad_w)), name=f"crop_back{suffix}")(x)
    return x


def member_suffix(member: int) -> str:
    """Layer-name suffix of one member; none for the first, so a one-member model keeps the
    plain autoencoder's names (and its exported file, byte for byte)."""
    return "" if member == 0 else f"_m{member}"


def build_conv_autoencoder(config: ModelConfig, batch_size: int | None = None) -> keras.Model:
    """The default ``ae`` model; ``batch_size`` None for training, an int for export."""
    inputs, padded = padded_input(config, batch_size)
    outputs = []
    for member in range(config.members):
        suffix = member_suffix(member)
        # Layers draw their initial weights' seeds when constructed: keep the order encoder,
        # latent, decoder (a one-member model then starts from the plain autoencoder's weights).
        features = encoder_stages(config, padded, suffix)
        x = keras.layers.Conv2D(config.latent, 1, activation="relu", kernel_initializer=RELU_INIT,
                                name=f"latent{suffix}")(features)
        outputs.append(cropped_decoder(config, x, suffix))
    if len(outputs) == 1:
        return keras.Model(inputs, outputs[0], name="conv_autoencoder")
    members = keras.layers.Concatenate(axis=-1, name="members")(outputs)
    return keras.Model(inputs, members, name="conv_autoencoder_ensemble")


@keras.saving.register_keras_serializable(package="trainer")
class MembersMSE(keras.losses.Loss):
    """The mean of K members' MSEs against one target (repeated K times on the channel axis), so
    every member learns from its own error only. Registered, so a saved model loads compiled."""

    def __init__(self, members: int, name: str = "members_mse", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.members = members

    def call(self, y_true: Any, y_pred: Any) -> Any:
        ops = keras.ops
        return ops.mean(ops.square(y_pred - ops.tile(y_true, [1, 1, 1, self.members])), axis=-1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "members": self.members}


def member_loss(members: int) -> Any:
    """The training loss: "mse" for one member, :class:`MembersMSE` for several."""
    return "mse" if members == 1 else MembersMSE(members)


def _build_vae(config: ModelConfig, batch_size: int | None = None) -> keras.Model:
    # Lives in trainer/vae.py (imported here lazily: it builds on this module's ModelConfig).
    from trainer.vae import build_vae

    return build_vae(config, batch_size)


ModelBuilder = Callable[[ModelConfig, "int | None"], keras.Model]

# One registry line per model kind; the CLI's --model choices come from here.
MODEL_BUILDERS: dict[str, ModelBuilder] = {
    "ae": build_conv_autoencoder,
    "vae": _build_vae,
}
PLANNED_KINDS: frozenset[str] = frozenset()


def build_model(config: ModelConfig, batch_size: int | None = None) -> keras.Model:
    """Build the network ``config.kind`` describes, with a free or a fixed batch dimension."""
    return MODEL_BUILDERS[config.kind](config, batch_size)


def clone_with_batch(model: keras.Model, config: ModelConfig, batch_size: int) -> keras.Model:
    """A fixed-batch copy of a trained model (same layers, same weights)."""
    fixed = build_model(config, batch_size)
    fixed.set_weights(model.get_weights())
    return fixed


@dataclass(frozen=True)
class ModelSummary:
    """Sizes reported to the user and recorded in provenance."""

    parameters: int
    bottleneck_values: int
    layers: list[str] = field(default_factory=list)


def summarize(model: keras.Model, config: ModelConfig) -> ModelSummary:
    return ModelSummary(parameters=int(model.count_params()),
                        bottleneck_values=config.bottleneck_values,
                        layers=[layer.__class__.__name__ for layer in model.layers])
