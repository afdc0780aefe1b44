"""The edge package must run on a Pi without TensorFlow: importing it pulls in none of it."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN_PREFIXES = ("tensorflow", "keras", "trainer", "tf_keras", "jax", "torch")

EDGE_MODULES = [
    "edge",
    "edge.cli",
    "edge.bundle",
    "edge.preprocess",
    "edge.scoring",
    "edge.backends.litert",
    "edge.types",
    "edge.publish.settings",
]


def _modules_after_import(modules: list[str]) -> list[str]:
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, timeout=120)
    loaded: list[str] = json.loads(out.stdout)
    return loaded


def test_importing_edge_loads_no_tensorflow_keras_or_trainer() -> None:
    loaded = _modules_after_import(EDGE_MODULES + _runtime_modules())
    heavy = [m for m in loaded if m.split(".")[0] in FORBIDDEN_PREFIXES]
    assert heavy == [], f"edge imported heavy modules: {heavy[:10]}"


def test_scoring_a_bundle_loads_no_tensorflow(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Building the LiteRT interpreter and scoring must not import TensorFlow either."""
    from pathlib import Path

    bundle = Path(__file__).resolve().parents[1] / "models" / "demo-wells"
    code = (
        "import json, sys, numpy as np\n"
        "from edge.bundle import load_bundle\n"
        "from edge.scoring import Scorer\n"
        f"b = load_bundle({str(bundle)!r})\n"
        "s = Scorer(b)\n"
        "s.score(np.zeros((3, *b.input.shape), np.uint8))\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, timeout=120)
    loaded = json.loads(out.stdout)
    assert "ai_edge_litert" in {m.split(".")[0] for m in loaded}
    heavy = [m for m in loaded if m.split(".")[0] in FORBIDDEN_PREFIXES]
    assert heavy == [], f"scoring imported heavy modules: {heavy[:10]}"


def _runtime_modules() -> list[str]:
    """Runtime modules that exist in this checkout (the list grows with the runtime)."""
    import importlib.util

    candidates = ["edge.config", "edge.runtime", "edge.layout", "edge.decision",
                  "edge.sources.folder", "edge.publish.spool", "edge.publish.mqtt"]
    return [name for name in candidates if importlib.util.find_spec(name) is not None]
