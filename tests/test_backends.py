"""Inference backends and what the scorer asks of them, on the real bundle in models/demo-wells.

ai-edge-litert runs for real. The Edge TPU (no Coral, no libedgetpu here) and tflite-runtime
(its wheels need numpy < 2; this venv has numpy 2) cannot run in this environment: where a test
needs them to get past loading a model, it says which stand-in it uses and why.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge import scoring
from edge.backends import edgetpu
from edge.bundle import load_bundle
from edge.config import Picamera2SourceConfig, load_config
from edge.errors import BackendError, ConfigError
from edge.scoring import Scorer
from edge.sources import create_source

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "models" / "demo-wells"


def test_scoring_no_crops_gives_no_scores() -> None:
    scorer = Scorer(load_bundle(EXAMPLE), num_threads=1)
    shape = scorer.bundle.input.shape
    scores = scorer.score(np.zeros((0, *shape), dtype=np.uint8))
    assert scores.shape == (0,) and scores.dtype == np.float64


def test_the_edge_tpu_backend_refuses_a_model_that_was_not_compiled_for_it() -> None:
    # The bundle's plain int8 model: with the delegate loaded it would run on the CPU, the Coral
    # idle, and nothing would say so. Refused before any delegate is looked for.
    with pytest.raises(BackendError, match=r"not compiled for the Edge TPU.*backend = \"litert\""):
        edgetpu.create(EXAMPLE / "model.tflite", 1)
    with pytest.raises(BackendError, match="not compiled for the Edge TPU"):
        Scorer(load_bundle(EXAMPLE), backend="edgetpu", num_threads=1)


def test_the_edge_tpu_backend_gets_the_batch_one_model_only(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Stand-in: no Edge TPU exists here, so the interpreter the backend would build is the
    # LiteRT one on the same file; the test is about which files the scorer asks for.
    asked: list[str] = []
    real = scoring.create_interpreter

    def record(path: Path, backend: str, num_threads: int) -> Any:
        asked.append(path.name)
        return real(path, "litert", num_threads)

    monkeypatch.setattr(scoring, "create_interpreter", record)
    bundle = load_bundle(EXAMPLE)
    assert len(bundle.batch_sizes) > 1
    scorer = Scorer(bundle, backend="edgetpu", num_threads=1)
    assert asked == ["model.tflite"]
    assert scorer.plan(24) == tuple((i, 1, 1) for i in range(24))


def test_tflite_runtime_under_numpy_2_says_why_and_what_to_do(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Stand-in for tflite-runtime 2.14 beside numpy 2, which pip installs but which fails when an
    # interpreter is made, exactly so (measured in a scratch venv; docs/performance.md):
    def interpreter(**_: Any) -> Any:
        raise SystemError("<built-in method CreateWrapperFromFile of PyCapsule object> returned "
                          "a result with an exception set")

    package = types.ModuleType("tflite_runtime")
    module = types.ModuleType("tflite_runtime.interpreter")
    module.Interpreter = interpreter  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tflite_runtime", package)
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", module)
    with pytest.raises(BackendError, match=r"built for numpy 1.*numpy < 2.*backend = \"litert\""):
        Scorer(load_bundle(EXAMPLE), backend="tflite-runtime", num_threads=1)


@pytest.mark.parametrize(("source", "grey_only"), [
    ({"kind": "picamera2"}, True),
    ({"kind": "opencv", "index": 0, "grey": True}, True),
    ({"kind": "opencv", "index": 0}, False),
    ({"kind": "folder", "path": "."}, False)])
def test_a_grey_only_source_cannot_feed_a_colour_bundle(source: dict[str, Any],
                                                        grey_only: bool) -> None:
    made = create_source(load_config_section(source))
    assert made.grey_only is grey_only
    assert made.colour_problem("grey") is None
    problem = made.colour_problem("rgb")
    assert (problem is not None) is grey_only
    if problem:
        assert "delivers grey frames but the bundle was trained on rgb crops" in problem


def load_config_section(source: dict[str, Any]) -> Any:
    from pydantic import TypeAdapter

    from edge.config import SourceConfig

    return TypeAdapter(SourceConfig).validate_python(source)


@pytest.mark.parametrize("sizes", [([641, 480], [1280, 960]), ([640, 480], [1279, 960])])
def test_picamera2_sizes_must_be_even(sizes: tuple[list[int], list[int]]) -> None:
    lores, main = sizes
    with pytest.raises(ValueError, match="even widths and heights"):
        Picamera2SourceConfig(kind="picamera2", lores_size=lores, main_size=main)


def test_the_runtime_refuses_a_grey_camera_for_a_colour_bundle(tmp_path: Path,
                                                               runtime_bundle: Path) -> None:
    import json
    import shutil

    from runtime_support import config_text

    from edge.runtime import Runtime

    rgb = Path(shutil.copytree(runtime_bundle, tmp_path / "rgb"))
    document = json.loads((rgb / "bundle.json").read_text())
    document["input"].update(color_mode="rgb", channels=3)  # only what the check reads
    (rgb / "bundle.json").write_text(json.dumps(document))
    config = tmp_path / "device.toml"
    config.write_text(config_text(rgb, "frames").replace(
        'kind = "folder"\npath = "frames"', 'kind = "picamera2"'), encoding="utf-8")
    # (The edited bundle.json no longer matches its model's shape: the check must come first.)
    with pytest.raises(ConfigError, match="delivers grey frames"):
        Runtime(load_config(config))
