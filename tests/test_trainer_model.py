"""The autoencoder builds for any size and converts to an int8 graph the Edge TPU accepts."""

from __future__ import annotations

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter, OpResolverType
from trainer_support import normal_images

from edge.errors import ConfigError
from trainer.model import ModelConfig, build_model
from trainer.quantize import convert_int8, parse_batch_sizes

# Ops an int8 export may contain: all quantize cleanly and are on the Coral Edge TPU list.
# PAD / STRIDED_SLICE appear only when the size is not a multiple of 2**stages.
# TFLite does not fuse ReLU into TRANSPOSE_CONV, so a separate int8 RELU follows each one.
ALLOWED_OPS = {"CONV_2D", "TRANSPOSE_CONV", "RELU", "LOGISTIC", "PAD", "STRIDED_SLICE"}
# int32 tensors TFLite requires in an otherwise int8 graph, as (op, input position):
# biases of (transposed) convolutions are int32 by the TFLite int8 spec (scale = in × weight
# scale); the output shape of TRANSPOSE_CONV, PAD's paddings and STRIDED_SLICE's begin/end/strides
# are constant int32 index tensors, not activations.
INT32_INPUTS = {("CONV_2D", 2), ("TRANSPOSE_CONV", 0), ("TRANSPOSE_CONV", 3), ("PAD", 1),
                ("STRIDED_SLICE", 1), ("STRIDED_SLICE", 2), ("STRIDED_SLICE", 3)}


def graph_report(blob: bytes) -> tuple[set[str], list[str]]:
    """(op names, problems) of a flatbuffer as the interpreter sees it without delegates."""
    interpreter = Interpreter(
        model_content=blob,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    ops = interpreter._get_ops_details()
    allowed_int32 = {op["inputs"][position] for op in ops
                     for name, position in INT32_INPUTS
                     if op["op_name"] == name and position < len(op["inputs"])}
    # Only tensors of the model graph; the interpreter's scratch buffers (im2col) are unnamed
    # and not part of what is exported.
    in_graph = {int(i) for op in ops for i in (*op["inputs"], *op["outputs"])}
    problems = []
    for tensor in interpreter.get_tensor_details():
        if tensor["index"] not in in_graph:
            continue
        dtype = np.dtype(tensor["dtype"])
        if dtype == np.int8:
            # Weights are quantized per output channel: scales live in quantization_parameters.
            if not len(tensor["quantization_parameters"]["scales"]):
                problems.append(f"int8 tensor {tensor['name']} has no scale")
        elif dtype == np.int32:
            if tensor["index"] not in allowed_int32:
                problems.append(f"unexpected int32 tensor {tensor['name']}")
        else:
            problems.append(f"{dtype} tensor {tensor['name']}")
    for kind, details in (("input", interpreter.get_input_details()[0]),
                          ("output", interpreter.get_output_details()[0])):
        if details["dtype"] != np.int8:
            problems.append(f"{kind} is {np.dtype(details['dtype'])}")
    return {op["op_name"] for op in ops}, problems


@pytest.mark.parametrize(("size", "filters"), [(16, (8, 16)), (28, (8, 16)), (30, (8, 16)),
                                               (17, (8,)), (64, (8, 16, 16))])
def test_output_shape_equals_input_for_any_size(size: int, filters: tuple[int, ...]) -> None:
    config = ModelConfig(height=size, width=size, channels=1, filters=filters, latent=4)
    model = build_model(config, batch_size=2)
    assert model.output_shape == (2, size, size, 1)
    forbidden = {"Lambda", "Dense", "Flatten"}
    assert not forbidden & {layer.__class__.__name__ for layer in model.layers}


def test_rgb_model_and_bad_configs() -> None:
    model = build_model(ModelConfig(height=20, width=24, channels=3))
    assert model.output_shape == (None, 20, 24, 3)
    with pytest.raises(ConfigError, match="fewer --filters"):
        ModelConfig(height=16, width=16, channels=1, filters=(8, 8, 8, 8))
    vae = build_model(ModelConfig(height=16, width=16, channels=1, kind="vae"))
    assert vae.output_shape == (None, 16, 16, 1)  # implemented in trainer/vae.py
    with pytest.raises(ConfigError, match="not available"):
        ModelConfig(height=16, width=16, channels=1, kind="gan")


@pytest.mark.parametrize(("size", "batch"), [(30, 1), (28, 4)])
def test_int8_export_is_fully_integer_with_fixed_batch(size: int, batch: int) -> None:
    config = ModelConfig(height=size, width=size, channels=1, filters=(8, 16), latent=4)
    model = build_model(config)
    crops = normal_images(16, size)[..., None]
    blob = convert_int8(model, config, batch, crops)
    ops, problems = graph_report(blob)
    assert problems == []
    assert ops <= ALLOWED_OPS, ops - ALLOWED_OPS  # no SHAPE / PACK from a dynamic batch
    assert ("PAD" in ops) == (size % 4 != 0)
    interpreter = Interpreter(model_content=blob)
    details = interpreter.get_input_details()[0]
    assert tuple(details["shape"]) == (batch, size, size, 1)
    # Input spans exactly [0, 1]: every uint8 pixel has its own int8 code.
    assert details["quantization"] == pytest.approx((1 / 255, -128))


def test_batch_sizes_always_include_one() -> None:
    assert parse_batch_sizes("16,4") == (1, 4, 16)
    assert parse_batch_sizes([24]) == (1, 24)
    with pytest.raises(Exception, match="comma-separated"):
        parse_batch_sizes("1;16")


def test_cli_model_choices_match_the_registry() -> None:
    from trainer.defaults import MODEL_KINDS
    from trainer.model import MODEL_BUILDERS

    assert set(MODEL_KINDS) == set(MODEL_BUILDERS)


def test_erase_blanks_one_square_per_crop_in_the_input_only() -> None:
    from trainer.fit import FitOptions, batch_stream

    images = np.full((50, 28, 30, 1), 200, np.uint8)
    options = FitOptions(batch_size=16, augment=("erase",), erase_fraction=0.3)
    noisy, clean = next(batch_stream(images, options, np.random.default_rng(0)))
    assert np.all(clean == np.float32(200 / 255))  # the target stays whole
    side = round(28 * 0.3)
    for crop in noisy[..., 0]:
        rows, cols = np.nonzero(crop == 0)
        assert len(rows) == side * side  # one square, entirely inside the crop
        assert rows.max() - rows.min() + 1 == side and cols.max() - cols.min() + 1 == side
    corners = {(int(np.argmax(c.min(axis=1) == 0)), int(np.argmax(c.min(axis=0) == 0)))
               for c in noisy[..., 0]}
    assert len(corners) > 8  # placed at random, not always in the same spot
    with pytest.raises(ConfigError, match=r"erase fraction 1\.5"):
        FitOptions(erase_fraction=1.5)


@pytest.mark.parametrize(("budget", "normals", "batch", "rounds", "per_round"), [
    (6000, 1536, 32, 120, 50),   # the demo: rounds of 50 steps (one pass is 48)
    (1500, 47968, 32, 10, 150),  # large data: still 10 rounds, not 2 × 1499 = 2998 steps
    (1500, 4800, 64, 20, 75),    # one pass is 75 steps
    (1510, 4800, 64, 20, 76),    # 1520: uneven budgets overshoot by less than a round count
    (51, 1000, 32, 1, 51),       # never rounds shorter than 50 steps (not 2 × 26)
    (501, 100, 32, 10, 51),      # 10 rounds once the budget has 500 steps (not 11 × 46)
    (300, 20, 32, 6, 50),        # tiny data: rounds of at least 50 steps
    (10, 100, 32, 1, 10),        # a budget below one round is one round
])
def test_rounds_share_the_step_budget(budget, normals, batch, rounds, per_round) -> None:
    from trainer.fit import plan_rounds

    assert plan_rounds(budget, normals, batch) == (rounds, per_round)
    assert budget <= rounds * per_round < budget + rounds
    assert per_round >= min(budget, 50)


def test_paste_puts_a_square_of_another_normal_into_the_input_only() -> None:
    from trainer.fit import FitOptions, batch_stream

    # Half the normals are black, half white: a pasted square shows in a crop of the other kind.
    images = np.concatenate([np.zeros((20, 20, 20, 1), np.uint8),
                             np.full((20, 20, 20, 1), 255, np.uint8)])
    options = FitOptions(batch_size=64, augment=("paste",), erase_fraction=0.3)
    noisy, clean = next(batch_stream(images, options, np.random.default_rng(0)))
    side = round(20 * 0.3)
    changed = noisy[..., 0] != clean[..., 0]
    assert changed.any()
    for crop in changed:  # where it differs, it is one side×side square at most
        if crop.any():
            rows, cols = np.flatnonzero(crop.any(axis=1)), np.flatnonzero(crop.any(axis=0))
            assert rows[-1] - rows[0] < side and cols[-1] - cols[0] < side
    assert set(np.unique(clean)) <= {0.0, 1.0}  # the target is untouched
