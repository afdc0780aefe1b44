"""Float-only one-class MNIST trials: how the benchmark's recipe was chosen.

    python experiments/mnist_trials.py VARIANT DIGITS STEPS [--classes] [--validate]
    python experiments/mnist_trials.py "mask=8" 8/2/5/3 600
    python experiments/mnist_trials.py "dense=1,latent=16" 8 600

VARIANT is a comma list of key=value changes to the base model (the benchmark's 32/64/64/64
encoder, 2×2×8 bottleneck, Gaussian input noise σ 0.05, Adam 2e-3 with cosine decay, batches of 64):

- ``noise=S``: σ of the denoising noise (0 turns it off)
- ``mask=P``: blank one random P×P square of every training input (inpainting), target whole
- ``erase=P`` (with ``ep=PROB``): blank a random rectangle with sides in [P/2, P] with probability
  PROB (default 0.75)
- ``sp=F``: salt-and-pepper noise on a share F of the input pixels
- ``puzzle=PROB``: with probability PROB, the input's four quadrants are shuffled (the target stays
  whole, as in Puzzle-AE): the model must know where the parts of a normal digit go
- ``paste=P``: paste a P×P square cut from another normal image at a random place of the input
  (CutPaste-style: a local change with ink, which the model must undo)
- ``rot=PROB``: with probability PROB, the input is turned by 90, 180 or 270 degrees and the target
  stays upright (attribute restoration, as in ARNet): the model must know which way up a normal is
- ``mem=M`` (with ``ment=B``, ``shrink=L``): a memory of M items between encoder and decoder
  (MemAE): the 2×2×C code addresses the items by softmax similarity and the decoder sees only
  their weighted sum, so it can draw only blends of what normals stored; B weighs the entropy of
  the addressing in the loss (sparse addressing), L the hard shrinkage threshold (× 1/M)
- ``latent=C``, ``filters=A/B/C/D``: bottleneck channels, filters per stage
- ``dense=1``: a whole-map convolution to a 1×1×C code (a dense bottleneck) instead of 2×2×C;
  ``lact=linear|relu|sigmoid`` its activation
- ``bound=1`` and ``lnoise=S``: sigmoid-bounded latent with Gaussian noise S on it while training
- ``loss=binary_crossentropy``: the training loss (the score is always the MSE)
- ``seed=N``: the random seed of weights, batches and augmentation (run a few to see the spread)
- ``ens=K``: train K models (seeds N..N+K-1) and score each image by the mean of their MSEs (an
  ensemble: K times the device's compute); prints each member's AUROC and the ensemble's

Prints the test AUROC per digit under the shared protocol (benchmarks/shared_data.py), and per
anomaly class where ``--classes`` can tell which digit each anomaly is (by matching its pixels with
the other digits' normals). ``--validate`` fits on 90 % of the training normals and reports the
AUROC on the other 10 % against other digits' training images that are not test anomalies
(``benchmarks/shared_data.validation_split``): a choice made there never saw a test label. This
trains float Keras models only — fast to compare variants; the
benchmark (benchmarks/mnist_oneclass.py) then runs the chosen recipe through the trainer and the
int8 bundle. Needs ../shared/data/mnist-oneclass.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from shared_data import DIGITS, load_digit, protocol_split, validation_split

BASE: dict[str, Any] = {
    "filters": (32, 64, 64, 64), "latent": 8, "noise": 0.05, "lnoise": 0.0, "bound": False,
    "mask": 0, "erase": 0, "ep": 0.75, "sp": 0.0, "puzzle": 0.0, "paste": 0, "rot": 0.0,
    "mem": 0, "ment": 0.0002, "shrink": 0.0, "ens": 1, "lr": 2e-3,
    "batch": 64, "loss": "mse", "dense": 0, "lact": "relu", "seed": 0,
}
SIDE = 28
PAD = 4  # 28 → 32, a multiple of 2**4


def parse_variant(text: str) -> dict[str, Any]:
    variant = dict(BASE)
    for item in filter(None, text.split(",")):
        key, value = item.split("=")
        if key not in BASE:
            raise SystemExit(f"unknown key {key!r}; known: {', '.join(BASE)}")
        if key == "filters":
            variant[key] = tuple(int(f) for f in value.split("/"))
        elif key in ("loss", "lact"):
            variant[key] = value
        elif key == "bound":
            variant[key] = value == "1"
        elif isinstance(BASE[key], int):
            variant[key] = int(value)
        else:
            variant[key] = float(value)
    return variant


def build(v: dict[str, Any]) -> Any:
    from trainer.backend import keras

    layers = keras.layers
    inputs = keras.Input((SIDE, SIDE, 1))
    x = layers.ZeroPadding2D(((0, PAD), (0, PAD)))(inputs)
    for filters in v["filters"]:
        x = layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu",
                          kernel_initializer="he_uniform")(x)
    if v["dense"]:
        side = x.shape[1]
        x = layers.Conv2D(v["latent"], side, padding="valid",
                          activation=None if v["lact"] == "linear" else v["lact"],
                          kernel_initializer="he_uniform")(x)
        x = layers.Conv2DTranspose(v["filters"][-1], side, padding="valid", activation="relu",
                                   kernel_initializer="he_uniform")(x)
    else:
        x = layers.Conv2D(v["latent"], 1, activation="sigmoid" if v["bound"] else "relu",
                          kernel_initializer="he_uniform")(x)
    if v["lnoise"] > 0:
        x = layers.GaussianNoise(v["lnoise"])(x)
    if v["mem"]:
        x = memory_block(x, v)
    for filters in reversed(v["filters"]):
        x = layers.Conv2DTranspose(filters, 3, strides=2, padding="same", activation="relu",
                                   kernel_initializer="he_uniform")(x)
    x = layers.Conv2D(1, 3, padding="same", activation="sigmoid", name="reconstruction")(x)
    return keras.Model(inputs, layers.Cropping2D(((0, PAD), (0, PAD)))(x))


def memory_block(x: Any, v: dict[str, Any]) -> Any:
    """MemAE's memory: softmax addressing of M items by the flattened code, optional hard
    shrinkage, an entropy penalty for sparse addressing; the decoder gets the items' blend."""
    from trainer.backend import keras

    ops = keras.ops
    shape = tuple(x.shape[1:])
    items, entropy_weight, shrink = v["mem"], v["ment"], v["shrink"] / v["mem"]

    class Memory(keras.layers.Layer):
        def build(self, input_shape: Any) -> None:
            size = int(np.prod(shape))
            self.memory = self.add_weight(shape=(items, size), initializer="glorot_uniform",
                                          name="items")

        def call(self, code: Any) -> Any:
            flat = ops.reshape(code, (-1, int(np.prod(shape))))
            unit = flat / (ops.norm(flat, axis=1, keepdims=True) + 1e-6)
            keys = self.memory / (ops.norm(self.memory, axis=1, keepdims=True) + 1e-6)
            weights = ops.softmax(ops.matmul(unit, ops.transpose(keys)) * 10.0, axis=1)
            if shrink > 0:
                weights = ops.relu(weights - shrink) * weights / (ops.abs(weights - shrink) + 1e-12)
                weights = weights / (ops.sum(weights, axis=1, keepdims=True) + 1e-12)
            if entropy_weight > 0:
                self.add_loss(entropy_weight * ops.mean(
                    ops.sum(-weights * ops.log(weights + 1e-12), axis=1)))
            return ops.reshape(ops.matmul(weights, self.memory), (-1, *shape))

    return Memory()(x)


def stream(train: np.ndarray, v: dict[str, Any], rng: np.random.Generator) -> Any:
    while True:
        clean = train[rng.integers(0, len(train), v["batch"])]
        noisy = clean
        if v["noise"] > 0:
            noise = rng.normal(0, v["noise"], clean.shape).astype(np.float32)
            noisy = np.clip(clean + noise, 0, 1)
        if v["sp"] > 0:
            flip = rng.random(clean.shape) < v["sp"]
            noisy = np.where(flip, rng.integers(0, 2, clean.shape).astype(np.float32), noisy)
        noisy = noisy.copy()
        if v["mask"] > 0:
            side = v["mask"]
            for i, (y, x) in enumerate(rng.integers(0, SIDE - side, (len(noisy), 2))):
                noisy[i, y:y + side, x:x + side] = 0
        if v["paste"] > 0:
            side = v["paste"]
            donors = train[rng.integers(0, len(train), len(noisy))]
            for i, (y, x, dy, dx) in enumerate(rng.integers(0, SIDE - side, (len(noisy), 4))):
                noisy[i, y:y + side, x:x + side] = donors[i, dy:dy + side, dx:dx + side]
        if v["puzzle"] > 0:
            half = SIDE // 2
            for i in np.flatnonzero(rng.random(len(noisy)) < v["puzzle"]):
                parts = [noisy[i, r:r + half, c:c + half].copy()
                         for r in (0, half) for c in (0, half)]
                for k, j in enumerate(rng.permutation(4)):
                    r, c = divmod(k, 2)
                    noisy[i, r * half:(r + 1) * half, c * half:(c + 1) * half] = parts[j]
        if v["rot"] > 0:
            for i in np.flatnonzero(rng.random(len(noisy)) < v["rot"]):
                noisy[i] = np.rot90(noisy[i], int(rng.integers(1, 4)))
        for i in range(len(noisy) if v["erase"] > 0 else 0):
            if rng.random() < v["ep"]:
                h, w = rng.integers(v["erase"] // 2, v["erase"] + 1, 2)
                y, x = rng.integers(0, SIDE - h + 1), rng.integers(0, SIDE - w + 1)
                noisy[i, y:y + h, x:x + w] = 0
        yield noisy, clean


def anomaly_classes(digit: int) -> np.ndarray:
    """The digit each anomaly of ``mnist{digit}.npz`` shows (-1 where no normal matches)."""
    owner = {row.tobytes(): k for k in DIGITS for row in load_digit(k)[0]}
    return np.array([owner.get(row.tobytes(), -1) for row in load_digit(digit)[1]])


def trial(digit: int, v: dict[str, Any], steps: int, classes: bool, validate: bool) -> float:
    from sklearn.metrics import roc_auc_score

    from trainer.backend import keras

    if validate:  # fitted on 90 % of the training normals, judged on data disjoint from the test
        train, test_normals, anomalies, owner = validation_split(digit)
    else:
        train, test_normals, anomalies = protocol_split(digit)
    unit = np.float32(255)
    train_f = train[..., None].astype(np.float32) / unit
    test = np.concatenate([test_normals, anomalies])[..., None].astype(np.float32) / unit
    labels = np.r_[np.zeros(len(test_normals)), np.ones(len(anomalies))]
    started = time.perf_counter()
    members = []
    for seed in range(v["seed"], v["seed"] + v["ens"]):
        keras.utils.set_random_seed(seed)
        model = build(v)
        output = model.get_layer("reconstruction")
        kernel, _ = output.get_weights()
        mean = float(np.clip(train_f.mean(), 1e-3, 1 - 1e-3))
        output.set_weights([kernel, np.array([np.log(mean / (1 - mean))], np.float32)])
        schedule = keras.optimizers.schedules.CosineDecay(v["lr"], steps)
        model.compile(keras.optimizers.Adam(schedule), loss=v["loss"])
        model.fit(stream(train_f, v, np.random.default_rng(seed)), steps_per_epoch=steps,
                  epochs=1, verbose=0, shuffle=False)  # the stream is already random
        reconstruction = model.predict(test, batch_size=256, verbose=0)
        members.append(((reconstruction - test) ** 2).reshape(len(test), -1).mean(axis=1))
        if v["ens"] > 1:
            print(f"  member seed {seed}: AUROC {roc_auc_score(labels, members[-1]):.4f}",
                  flush=True)
    scores = np.mean(members, axis=0)
    auroc = float(roc_auc_score(labels, scores))
    split = "validation" if validate else "test"
    normal_mse = float(scores[:len(test_normals)].mean())
    print(f"digit {digit}: {split} AUROC {auroc:.4f}, mean MSE of the held-back normals "
          f"{normal_mse:.6f} ({time.perf_counter() - started:.0f} s)", flush=True)
    if classes:
        owner = owner if validate else anomaly_classes(digit)
        normal, odd = scores[:len(test_normals)], scores[len(test_normals):]
        per = {int(k): round(float(roc_auc_score(
            np.r_[np.zeros(len(normal)), np.ones(int((owner == k).sum()))],
            np.r_[normal, odd[owner == k]])), 3) for k in np.unique(owner)}
        print(f"  per anomaly digit: {per}", flush=True)
    return auroc


def main() -> int:
    args = [a for a in sys.argv[1:] if a not in ("--classes", "--validate")]
    if len(args) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    variant, digits, steps = parse_variant(args[0]), args[1], int(args[2])
    validate = "--validate" in sys.argv
    results = [trial(int(d), variant, steps, "--classes" in sys.argv, validate)
               for d in digits.split("/")]
    print(f"mean {np.mean(results):.4f} over digits {digits}, variant {args[0]!r}, {steps} steps"
          f"{' (validation split)' if validate else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
