"""The variational autoencoder (``--model vae``), built from the same int8-friendly ops as the AE.

Encoder: one stride-2 3×3 Conv2D + ReLU per entry of ``filters`` (as the plain AE), then two
linear convolutions whose kernel covers the whole bottleneck map, giving the posterior mean and
log-variance as 1×1×``latent`` vectors (a Dense layer written as CONV_2D). Decoder: a transposed
convolution back to the bottleneck map, one stride-2 Conv2DTranspose + ReLU per stage in reverse,
and a 3×3 Conv2D with a sigmoid.

Training samples ``z = mean + exp(logvar / 2) · ε`` and adds the KL divergence to the loss through
``add_loss`` (so :func:`trainer.fit.fit_autoencoder` trains it unchanged: its MSE plus the KL
term). In inference (``training=False``, which is how Keras predicts and how the TFLite converter
traces) the sampling layer returns the mean, the log-variance branch feeds nothing and the
converter drops it: the exported graph is a deterministic encoder-mean → decoder made of CONV_2D,
TRANSPOSE_CONV, RELU and LOGISTIC only, so the edge scores it with the same reconstruction MSE.
"""

from __future__ import annotations

from typing import Any

from trainer.backend import keras
from trainer.model import RELU_INIT, STRIDE, ModelConfig, cropped_decoder, padded_encoder

# The reconstruction loss is a per-pixel mean; dividing the summed KL by the number of pixels
# puts both on the same per-pixel scale (β = 1 relative to a unit-variance likelihood per pixel).
KL_BETA = 1.0
# log-variance is clipped to this range (nats) before exp(): keeps early steps from overflowing.
LOGVAR_CLIP = 10.0


@keras.saving.register_keras_serializable(package="edge_anomaly")
class PosteriorSample(keras.layers.Layer):
    """``[mean, logvar]`` → a sample while training (and adds the KL loss); the mean otherwise."""

    def __init__(self, kl_weight: float = 1.0, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kl_weight = float(kl_weight)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs: list[Any], training: bool | None = None) -> Any:
        mean, logvar = inputs
        if not training:
            return mean
        ops = keras.ops
        logvar = ops.clip(logvar, -LOGVAR_CLIP, LOGVAR_CLIP)
        kl_per_sample = -0.5 * ops.sum(1.0 + logvar - ops.square(mean) - ops.exp(logvar),
                                       axis=[1, 2, 3])
        self.add_loss(self.kl_weight * ops.mean(kl_per_sample))
        noise = keras.random.normal(ops.shape(mean), seed=self.seed_generator)
        return mean + ops.exp(0.5 * logvar) * noise

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "kl_weight": self.kl_weight, "seed": self.seed}


def kl_weight_for(config: ModelConfig) -> float:
    """Weight of the summed KL term next to a per-pixel mean squared error."""
    return KL_BETA / float(config.height * config.width * config.channels)


def build_vae(config: ModelConfig, batch_size: int | None = None) -> keras.Model:
    """The ``vae`` model; ``batch_size`` None for training, an int for a fixed-batch export.

    ``config.latent`` is the length of the latent vector (e.g. 2 or 100).
    """
    inputs, x = padded_encoder(config, batch_size)
    factor = STRIDE ** len(config.filters)
    bottleneck = (config.padded_shape[0] // factor, config.padded_shape[1] // factor)
    # A kernel the size of the whole map: a fully connected layer expressed as CONV_2D.
    z_mean = keras.layers.Conv2D(config.latent, bottleneck, padding="valid",
                                 name="z_mean")(x)
    z_logvar = keras.layers.Conv2D(config.latent, bottleneck, padding="valid",
                                   kernel_initializer="zeros", name="z_logvar")(x)
    z = PosteriorSample(kl_weight=kl_weight_for(config), seed=0, name="z")([z_mean, z_logvar])
    x = keras.layers.Conv2DTranspose(config.filters[-1], bottleneck, padding="valid",
                                     activation="relu", kernel_initializer=RELU_INIT,
                                     name="project")(z)
    x = cropped_decoder(config, x)
    return keras.Model(inputs, x, name="conv_vae")
