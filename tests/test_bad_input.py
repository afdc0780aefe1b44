"""Bad input gets a clear error of the project's own kind, never a crash or a wrong number.

Property-based (hypothesis) where the space is large — bytes that claim to be images, arrays of
any shape, config values of any type — and hand-picked cases for model files and bundle.json.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tomllib
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays
from PIL import Image

from edge.bundle import InputSpec, load_bundle
from edge.config import load_config
from edge.errors import BackendError, BundleError, ConfigError, ImageError, ProjectError
from edge.preprocess import check_frame, load_image, prepare_crop
from edge.scoring import Scorer

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "models" / "demo-wells"
SPEC = InputSpec(32, 32, 1)
FAST = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def _png_bytes(side: int = 40) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((side, side), 128, np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def scorer() -> Scorer:
    return Scorer(load_bundle(EXAMPLE))


# ----------------------------------------------------------------------------- images


@FAST
@given(data=st.binary(max_size=2048))
def test_random_bytes_are_an_image_error_naming_the_file(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "frame.png"
    path.write_bytes(data)
    try:
        image = load_image(path)
    except ImageError as exc:
        assert str(path) in str(exc)
    else:  # a few byte strings are valid tiny images; then they must be usable frames
        assert image.dtype == np.uint8 and image.ndim in (2, 3)


@FAST
@given(cut=st.integers(min_value=1, max_value=len(_png_bytes()) - 1))
def test_truncated_png_fails_clearly_or_decodes_exactly(tmp_path: Path, cut: int) -> None:
    """Cut inside the pixel data: an ImageError. Cut only in the trailer after a complete pixel
    stream (CRC, IEND): PIL decodes it, and then the pixels must be exactly the original ones —
    never silently wrong ones."""
    path = tmp_path / "truncated.png"
    path.write_bytes(_png_bytes()[:cut])
    try:
        image = load_image(path)
    except ImageError as exc:
        assert "cannot decode" in str(exc) and str(path) in str(exc)
    else:
        assert np.array_equal(image, np.full((40, 40), 128, np.uint8))


@pytest.mark.parametrize("mode", ["I;16", "I", "F"])
def test_images_with_more_than_8_bits_are_refused_not_clipped(tmp_path: Path, mode: str) -> None:
    # Pillow's convert("L") would clip a 16-bit gradient to white: scored as garbage, silently.
    path = tmp_path / ("frame.png" if mode == "I;16" else "frame.tiff")
    gradient = np.linspace(0, 65535 if mode != "F" else 1.0, 64 * 64).reshape(64, 64)
    Image.fromarray(gradient.astype({"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode])
                    ).save(path)
    with Image.open(path) as written:
        assert written.mode == mode
    with pytest.raises(ImageError, match=r"not supported; models take 8-bit images") as caught:
        load_image(path)
    assert str(path) in str(caught.value)


def _encoded(fmt: str) -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 256, (24, 32), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, fmt)
    return buffer.getvalue()


ENCODED = {fmt: _encoded(fmt) for fmt in ("PNG", "BMP", "TIFF", "JPEG")}


@FAST
@given(fmt=st.sampled_from(sorted(ENCODED)), data=st.data())
# Pillow warns about damage it reads past (corrupt EXIF, a TIFF tag beyond the end of the file);
# on the device that is a warning on stderr, not an error, so it is not one here either.
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_damaged_real_images_fail_clearly_or_decode_to_a_usable_frame(
        tmp_path: Path, fmt: str, data: st.DataObject) -> None:
    # Real files with bytes changed, headers included (sizes, bit depths, compression): the
    # decoder gets far into them, unlike random bytes, which it rejects at the magic number.
    blob = bytearray(ENCODED[fmt])
    for _ in range(data.draw(st.integers(1, 4))):
        blob[data.draw(st.integers(0, min(len(blob) - 1, 64)))] = data.draw(st.integers(0, 255))
    path = tmp_path / f"frame.{fmt.lower()}"
    path.write_bytes(bytes(blob))
    try:
        image = load_image(path)
    except ImageError as exc:
        assert str(path) in str(exc)
    else:
        assert image.dtype == np.uint8 and image.ndim in (2, 3)


def _png_header_only(width: int, height: int) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b""))


@pytest.mark.parametrize(("width", "height"), [(16000, 16000), (10000, 10000), (8000, 8000),
                                             (20000, 100)])
def test_a_file_claiming_a_huge_size_is_an_image_error_before_decoding(
        tmp_path: Path, width: int, height: int) -> None:
    # 57 bytes that claim 16000×16000 px: Pillow's decompression-bomb guard (an error past
    # 179 M pixels, only a warning from 89 M), the pixel limit and the side limit all answer
    # with an ImageError, before any decoding.
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(width, height))
    with pytest.raises(ImageError) as caught:
        load_image(path)
    assert str(path) in str(caught.value)


def test_missing_file_is_an_image_error(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="not found"):
        load_image(tmp_path / "nope.png")


@FAST
@given(array=arrays(dtype=st.sampled_from([np.uint8, np.uint16, np.float32, np.int8]),
                    shape=array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=40)))
def test_any_array_is_either_a_valid_frame_or_an_image_error(array: np.ndarray) -> None:
    try:
        frame = check_frame(array)
    except ImageError as exc:
        assert "frame" in str(exc)
        return
    assert frame.dtype == np.uint8
    assert frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 3)
    assert prepare_crop(frame, SPEC).shape == SPEC.shape


@FAST
@given(crops=arrays(np.uint8, (4, 32, 32, 1)))
def test_any_pixels_give_finite_scores_in_range(scorer: Scorer, crops: np.ndarray) -> None:
    scores = scorer.score(crops)
    assert np.all(np.isfinite(scores))
    assert np.all((scores >= 0) & (scores <= 1))


@pytest.mark.parametrize("value", [0, 255])
def test_black_and_saturated_frames_score_as_anomalous_not_nan(scorer: Scorer,
                                                               value: int) -> None:
    """A lens cap or a blown-out exposure must raise an alarm, not a NaN."""
    crops = np.full((3, 32, 32, 1), value, np.uint8)
    scores = scorer.score(crops)
    assert np.all(np.isfinite(scores))
    assert all(scorer.bundle.threshold.is_anomalous(float(s)) for s in scores)


def test_wrong_crop_batch_shape_is_a_clear_error(scorer: Scorer) -> None:
    with pytest.raises(ValueError, match="prepare_batch"):
        scorer.score(np.zeros((2, 28, 28, 1), np.uint8))


# ----------------------------------------------------------------------------- config

CONFIG_KEYS = ["scorer.num_threads", "source.fps", "layout.grid.rows", "decision.k",
               "mqtt.port", "mqtt.keepalive_s", "device_id"]
TOML_VALUES = st.one_of(
    st.integers(min_value=-10**6, max_value=10**6).map(str),
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(repr),
    st.text(alphabet="abc xyz#/", max_size=12).map(json.dumps),
    st.just("[]"), st.just("true"), st.just("{ a = 1 }"))


def _config_text(tmp_path: Path, key: str, value: str) -> str:
    values = {"scorer.num_threads": "2", "source.fps": "0", "layout.grid.rows": "4",
              "decision.k": "1", "mqtt.port": "1883", "mqtt.keepalive_s": "30",
              "device_id": '"dev-1"'}
    values[key] = value
    return (f"device_id = {values['device_id']}\nbundle = \"{EXAMPLE}\"\n"
            f"[scorer]\nnum_threads = {values['scorer.num_threads']}\n"
            f"[source]\nkind = \"folder\"\npath = \"{tmp_path}\"\nfps = {values['source.fps']}\n"
            f"[layout.grid]\nregion = [20, 20, 240, 160]\nrows = {values['layout.grid.rows']}\n"
            f"cols = 6\n[decision]\nk = {values['decision.k']}\nn = 3\n"
            f"[mqtt]\nport = {values['mqtt.port']}\nkeepalive_s = {values['mqtt.keepalive_s']}\n")


@FAST
@given(key=st.sampled_from(CONFIG_KEYS), value=TOML_VALUES)
def test_any_config_value_is_accepted_or_a_config_error_naming_the_key(
        tmp_path: Path, key: str, value: str) -> None:
    path = tmp_path / "device.toml"
    path.write_text(_config_text(tmp_path, key, value))
    try:
        config = load_config(path)
    except ConfigError as exc:
        assert key.split(".")[-1] in str(exc), str(exc)
        return
    # Accepted: then the config holds exactly the value written (a number may turn from 2.0 to
    # 2), never a boolean read as a count or a string read as a number.
    loaded: object = config
    for part in key.split("."):
        loaded = getattr(loaded, part)
    written = tomllib.loads(f"v = {value}")["v"]
    assert not isinstance(written, bool), (key, value, loaded)
    assert loaded == written, (key, value, loaded)


def test_a_boolean_for_a_number_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    for key in ("mqtt.port", "layout.grid.rows", "decision.k", "source.fps"):
        path = tmp_path / "device.toml"
        path.write_text(_config_text(tmp_path, key, "true"))
        with pytest.raises(ConfigError, match=rf"{key.split('.')[-1]} = true: expected a number"):
            load_config(path)


@FAST
@given(text=st.text(max_size=200))
def test_any_text_as_config_is_a_config_error_not_a_crash(tmp_path: Path, text: str) -> None:
    path = tmp_path / "device.toml"
    path.write_text(text)
    with pytest.raises(ConfigError):
        load_config(path)


# ----------------------------------------------------------------------------- bundles


@pytest.fixture
def bundle_copy(tmp_path: Path) -> Path:
    return Path(shutil.copytree(EXAMPLE, tmp_path / "bundle"))


def _rehash(bundle: Path) -> None:
    """Make bundle.json agree with the (damaged) model files: a corrupt but 'consistent' export."""
    document = json.loads((bundle / "bundle.json").read_text())
    for model in document["models"]:
        blob = (bundle / model["file"]).read_bytes()
        model["sha256"], model["bytes"] = hashlib.sha256(blob).hexdigest(), len(blob)
    (bundle / "bundle.json").write_text(json.dumps(document))


@pytest.mark.parametrize("keep", [0, 16, 1000, 30000])
def test_truncated_model_is_refused_by_hash_then_by_the_interpreter(bundle_copy: Path,
                                                                    keep: int) -> None:
    model = bundle_copy / "model.tflite"
    model.write_bytes(model.read_bytes()[:keep])
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(bundle_copy)
    _rehash(bundle_copy)
    with pytest.raises((BundleError, BackendError)):
        Scorer(load_bundle(bundle_copy))


def test_flipped_byte_in_model_is_refused(bundle_copy: Path) -> None:
    model = bundle_copy / "model_b24.tflite"
    blob = bytearray(model.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    model.write_bytes(bytes(blob))
    with pytest.raises(BundleError, match="modified or truncated"):
        load_bundle(bundle_copy)


@pytest.mark.parametrize("version", [0, 3, "1", None])
def test_other_format_version_is_refused_naming_both(bundle_copy: Path, version: object) -> None:
    document = json.loads((bundle_copy / "bundle.json").read_text())
    document["format_version"] = version
    (bundle_copy / "bundle.json").write_text(json.dumps(document))
    with pytest.raises(BundleError, match=r"format_version .* reads format_version 1 and 2"):
        load_bundle(bundle_copy)


@pytest.mark.parametrize("edit", [
    lambda d: d.pop("threshold"),
    lambda d: d["input"].update(channels=3),
    lambda d: d["threshold"].update(high=None, low=None),
    lambda d: d["threshold"].update(high=float("nan")),
    lambda d: d.update(models=[]),
    lambda d: d["normal_scores"].update(mean=float("nan")),
    lambda d: d["normal_scores"].update(std="abc"),
    lambda d: d["normal_scores"].update(std=-1.0),
    lambda d: d.update(normal_scores=[1, 2]),
    lambda d: d.update(score="reconstruction_mse"),
    lambda d: d["models"][0].update(batch_size="one"),
    lambda d: d["models"][0].update(bytes="12kB"),
    lambda d: d["input"].update(normalisation="x/127.5-1"),  # the scorer applies x/255 only
])
def test_damaged_bundle_json_is_a_bundle_error(bundle_copy: Path, edit) -> None:  # type: ignore[no-untyped-def]
    document = json.loads((bundle_copy / "bundle.json").read_text())
    edit(document)
    (bundle_copy / "bundle.json").write_text(json.dumps(document))
    with pytest.raises(ProjectError):
        load_bundle(bundle_copy)


def test_input_spec_that_disagrees_with_the_model_is_refused(bundle_copy: Path) -> None:
    document = json.loads((bundle_copy / "bundle.json").read_text())
    document["input"].update(height=28, width=28)
    (bundle_copy / "bundle.json").write_text(json.dumps(document))
    with pytest.raises(BundleError, match="declares"):
        Scorer(load_bundle(bundle_copy))


# ----------------------------------------------------------------------------- command line


def test_edge_score_into_a_reader_that_goes_away_ends_quietly(tmp_path: Path) -> None:
    # `edge score … | head -1`: the reader closes the pipe; a traceback there helps nobody.
    import subprocess
    import sys

    for index in range(400):  # more output than a pipe buffer and Python's own buffer
        Image.fromarray(np.full((32, 32), index % 256, np.uint8)).save(tmp_path / f"{index}.png")
    process = subprocess.Popen([sys.executable, "-m", "edge", "score", str(EXAMPLE), str(tmp_path)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.readline()
    process.stdout.close()
    with process.stderr:
        stderr = process.stderr.read().decode()
    assert process.wait(timeout=60) == 141, stderr
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr


def test_an_os_error_that_names_no_file_keeps_its_traceback() -> None:
    # A file system refusal names its path and prints as one line; an OSError without a file
    # (a bad descriptor, a reset connection) is a bug or the network, and must not be dressed up.
    import os

    from edge.errors import run_command

    def refused() -> int:
        raise PermissionError(13, "Permission denied", "/etc/edge/keys/line.pem")

    assert run_command("edge", refused) == 1
    with pytest.raises(OSError, match="Bad file descriptor"):
        run_command("edge", lambda: os.close(987654))
