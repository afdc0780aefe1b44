"""The model bundle: the one artefact that crosses from trainer to edge.

A bundle is a directory ``models/<name>/`` holding ``bundle.json`` and one int8 ``.tflite`` file per
batch size it serves (``model.tflite`` is always batch 1). ``bundle.json`` carries everything the
device needs to turn pixels into a decision; see docs/bundle.md for every field.

The edge refuses a bundle whose format version it does not know, whose model hash does not match,
or whose input spec disagrees with the model (the last is checked by the scorer, which sees the
interpreter).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.errors import BundleError

FORMAT_VERSION = 2  # written when a bundle needs this edge: a model of several members
# Versions this edge reads. A one-member bundle is still written as version 1, which older edges
# read; an older edge refuses a version-2 bundle by its version, with a message that says so.
READABLE_VERSIONS = (1, 2)
BUNDLE_FILE = "bundle.json"
SCORE_NAME = "reconstruction_mse"
SCORE_DEFINITION = (
    "mean over all pixels and channels of (x - x_hat)^2, where x is the preprocessed crop as "
    "uint8 / 255 and x_hat is the int8 model output dequantized with the output tensor's "
    "scale and zero point; a model of K members (score.members) outputs K reconstructions side "
    "by side on the channel axis, each compared with x, so the score is the mean of the K "
    "members' MSEs"
)
COLOR_MODES = ("grey", "rgb")
RESIZE_RULES = ("bilinear",)
NORMALISATIONS = ("x/255",)  # what the scorer applies; a bundle asking for another is refused


@dataclass(frozen=True)
class InputSpec:
    """What a crop must look like when it reaches the model."""

    height: int
    width: int
    channels: int
    color_mode: str = "grey"
    resize: str = "bilinear"
    normalisation: str = "x/255"

    def __post_init__(self) -> None:
        expected_channels = 1 if self.color_mode == "grey" else 3
        if self.color_mode not in COLOR_MODES:
            raise BundleError(
                f"input.color_mode is {self.color_mode!r}; expected one of {COLOR_MODES}. "
                "Re-export the bundle with a supported trainer version."
            )
        if self.channels != expected_channels:
            raise BundleError(
                f"input.channels is {self.channels} but color_mode {self.color_mode!r} needs "
                f"{expected_channels}; the bundle.json is inconsistent, re-export it."
            )
        if self.resize not in RESIZE_RULES:
            raise BundleError(
                f"input.resize is {self.resize!r}; this edge supports {RESIZE_RULES}."
            )
        if self.normalisation not in NORMALISATIONS:
            raise BundleError(
                f"input.normalisation is {self.normalisation!r}; this edge supports "
                f"{NORMALISATIONS}. Re-export the bundle with a matching trainer."
            )

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, self.channels)


@dataclass(frozen=True)
class Threshold:
    """Decision boundary on the score: anomalous when above ``high`` or below ``low``.

    One-sided rules set only ``high``; the two-sided ``band`` rule sets both.
    """

    rule: str
    high: float | None
    low: float | None = None
    params: Mapping[str, float] = field(default_factory=dict)
    chosen_on: Mapping[str, Any] = field(default_factory=dict)
    scores_from: str = "int8"

    def __post_init__(self) -> None:
        if self.high is None and self.low is None:
            raise BundleError(
                f"threshold rule {self.rule!r} has neither 'high' nor 'low'; "
                "a bundle needs at least one bound."
            )
        for name, value in (("high", self.high), ("low", self.low)):
            if value is not None and not math.isfinite(value):
                raise BundleError(f"threshold.{name} is {value!r}; it must be a finite number.")
        if self.high is not None and self.low is not None and self.low >= self.high:
            raise BundleError(
                f"threshold band is [{self.low}, {self.high}]; low must be below high."
            )

    def is_anomalous(self, score: float) -> bool:
        """True when ``score`` falls outside the normal region."""
        if self.high is not None and score > self.high:
            return True
        return self.low is not None and score < self.low

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "params": dict(self.params),
            "high": self.high,
            "low": self.low,
            "chosen_on": dict(self.chosen_on),
            "scores_from": self.scores_from,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Threshold:
        try:
            return cls(
                rule=str(data["rule"]),
                high=_optional_float(data.get("high")),
                low=_optional_float(data.get("low")),
                params=dict(data.get("params", {})),
                chosen_on=dict(data.get("chosen_on", {})),
                scores_from=str(data.get("scores_from", "int8")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"bundle.json 'threshold' is malformed ({exc}).") from exc


@dataclass(frozen=True)
class ModelFile:
    """One exported TFLite file and the batch size it was converted with."""

    file: str
    batch_size: int
    sha256: str
    bytes: int


@dataclass(frozen=True)
class Bundle:
    """A loaded, hash-verified bundle."""

    path: Path
    name: str
    input: InputSpec
    threshold: Threshold
    models: tuple[ModelFile, ...]
    normal_scores: Mapping[str, Any]
    meta: Mapping[str, Any]

    @property
    def sha256(self) -> str:
        """Hash of the batch-1 model; identifies the bundle in every published event."""
        return self.model_for_batch(1).sha256

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        return tuple(sorted(m.batch_size for m in self.models))

    @property
    def members(self) -> int:
        """Reconstructions the model outputs side by side on the channel axis (an ensemble of
        autoencoders in one model); 1 for a plain autoencoder. Checked by load_bundle."""
        return int(self.meta.get("score", {}).get("members", 1))

    def model_for_batch(self, batch_size: int) -> ModelFile:
        for model in self.models:
            if model.batch_size == batch_size:
                return model
        raise BundleError(
            f"bundle {self.name!r} has no model for batch size {batch_size}; "
            f"it serves {self.batch_sizes}."
        )

    def model_path(self, batch_size: int) -> Path:
        return self.path / self.model_for_batch(batch_size).file

    def normalised(self, score: float) -> float | None:
        """Score as a z-value against the normal scores seen at export (None if std is 0)."""
        mean = self.normal_scores.get("mean")
        std = self.normal_scores.get("std")
        if mean is None or not std:
            return None
        return (score - float(mean)) / float(std)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _read_json(path: Path) -> tuple[Path, bytes, dict[str, Any]]:
    """(the JSON file, its bytes, its object): read once, so that a signature is checked over
    exactly the bytes that are then trusted."""
    if path.is_file():
        bundle_dir = path.parent
    elif path.is_dir():
        bundle_dir = path
        path = path / BUNDLE_FILE
    else:
        raise BundleError(
            f"no bundle at {path}: expected a directory containing {BUNDLE_FILE}. "
            "Train one with 'trainer fit DATA --out models/NAME' or use models/demo-wells."
        )
    if not path.is_file():
        raise BundleError(
            f"{bundle_dir} has no {BUNDLE_FILE}; it is not a bundle (found: "
            f"{sorted(p.name for p in bundle_dir.iterdir())[:10]})."
        )
    try:
        content = path.read_bytes()
        data = json.loads(content.decode("utf-8"))
    except OSError as exc:
        raise BundleError(f"{path} cannot be read ({exc}).") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path} is not valid JSON ({exc}); re-export the bundle.") from exc
    if not isinstance(data, dict):
        raise BundleError(f"{path} holds a {type(data).__name__}, expected a JSON object.")
    return path, content, data


def load_bundle(path: str | Path, *, verify: bool = True,
                public_key: Path | None = None) -> Bundle:
    """Read ``bundle.json`` from ``path`` (the directory or the file) and verify model hashes.

    With ``public_key``, the bundle must also carry a valid Ed25519 signature by that key
    (edge/signing.py), checked before anything in it is trusted. Raises BundleError naming the
    file and the mismatch when anything is off.
    """
    json_path, content, data = _read_json(Path(path))
    bundle_dir = json_path.parent
    if public_key is not None:
        from edge.signing import verify_bundle

        # The signature covers bundle.json's bytes; checking the bytes just read (whatever the
        # file's name) means no other file, and no later change, can slip past it.
        verify_bundle(bundle_dir, public_key, content)
    version = data.get("format_version")
    if version not in READABLE_VERSIONS:
        raise BundleError(
            f"{bundle_dir}/{BUNDLE_FILE} has format_version {version!r}; this edge reads "
            f"format_version {' and '.join(map(str, READABLE_VERSIONS))}. Re-export the bundle "
            "with a matching trainer or upgrade the edge package."
        )
    try:
        spec = InputSpec(**data["input"])
        threshold = Threshold.from_json(data["threshold"])
        models = tuple(
            ModelFile(
                file=str(m["file"]),
                batch_size=int(m["batch_size"]),
                sha256=str(m["sha256"]),
                bytes=int(m["bytes"]),
            )
            for m in data["models"]
        )
        name = str(data["name"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(
            f"{bundle_dir}/{BUNDLE_FILE} lacks or mistypes a required field ({exc!r}); "
            "see docs/bundle.md for the format."
        ) from exc
    if not any(m.batch_size == 1 for m in models):
        raise BundleError(f"{bundle_dir}/{BUNDLE_FILE} lists no batch-1 model ('model.tflite').")
    score = data.get("score", {})
    score_name = score.get("name") if isinstance(score, dict) else f"a bare {score!r}"
    if score_name != SCORE_NAME:
        raise BundleError(
            f"{bundle_dir} scores with {score_name!r}; this edge computes {SCORE_NAME!r}."
        )
    members = score.get("members", 1)
    if not isinstance(members, int) or isinstance(members, bool) or members < 1:
        raise BundleError(
            f"{bundle_dir}/{BUNDLE_FILE}: score.members is {members!r}; expected a whole number "
            "≥ 1 (reconstructions the model outputs). Re-export the bundle.")
    normal_scores = _checked_normal_scores(bundle_dir, data.get("normal_scores", {}))
    if verify:
        for model in models:
            _verify_model_file(bundle_dir, model)
    return Bundle(
        path=bundle_dir,
        name=name,
        input=spec,
        threshold=threshold,
        models=models,
        normal_scores=normal_scores,
        meta=data,
    )


def _checked_normal_scores(bundle_dir: Path, stats: Any) -> dict[str, Any]:
    """Every event carries a z-score from these; a NaN or a negative spread would corrupt it."""
    if not isinstance(stats, dict):
        raise BundleError(f"{bundle_dir}/{BUNDLE_FILE}: 'normal_scores' is a "
                          f"{type(stats).__name__}, expected an object; re-export the bundle.")
    for key in ("mean", "std"):
        value = stats.get(key)
        if value is None:
            continue
        if not isinstance(value, (int, float)) or not math.isfinite(value) or (
                key == "std" and value < 0):
            raise BundleError(f"{bundle_dir}/{BUNDLE_FILE}: normal_scores.{key} is {value!r}; "
                              "expected a finite number (std ≥ 0). Re-export the bundle.")
    return dict(stats)


def _verify_model_file(bundle_dir: Path, model: ModelFile) -> None:
    model_path = bundle_dir / model.file
    if not model_path.is_file():
        raise BundleError(f"bundle {bundle_dir} lists {model.file} but the file is missing.")
    actual = sha256_file(model_path)
    if actual != model.sha256:
        raise BundleError(
            f"{model_path} has sha256 {actual[:16]}… but bundle.json expects "
            f"{model.sha256[:16]}…; the model was modified or truncated after export. "
            "Copy the bundle again from its source or re-export it."
        )


def write_bundle(
    bundle_dir: Path,
    *,
    name: str,
    input_spec: InputSpec,
    threshold: Threshold,
    models: Mapping[int, bytes],
    normal_scores: Mapping[str, Any],
    extra: Mapping[str, Any],
    members: int = 1,
) -> Path:
    """Write model files and ``bundle.json`` into ``bundle_dir``; returns the json path.

    ``models`` maps batch size to the TFLite flatbuffer; batch 1 is required and is written as
    ``model.tflite``, others as ``model_b<N>.tflite``. ``members``: reconstructions the model
    outputs (see :attr:`Bundle.members`).
    """
    if 1 not in models:
        raise BundleError("write_bundle needs a batch-1 model; got batch sizes "
                          f"{sorted(models)}.")
    bundle_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for batch_size in sorted(models):
        file_name = "model.tflite" if batch_size == 1 else f"model_b{batch_size}.tflite"
        blob = models[batch_size]
        (bundle_dir / file_name).write_bytes(blob)
        entries.append(
            {
                "file": file_name,
                "batch_size": batch_size,
                "sha256": hashlib.sha256(blob).hexdigest(),
                "bytes": len(blob),
            }
        )
    document: dict[str, Any] = {
        "format_version": FORMAT_VERSION if members > 1 else 1,
        "name": name,
        "input": {
            "height": input_spec.height,
            "width": input_spec.width,
            "channels": input_spec.channels,
            "color_mode": input_spec.color_mode,
            "resize": input_spec.resize,
            "normalisation": input_spec.normalisation,
        },
        "models": entries,
        "score": {"name": SCORE_NAME, "definition": SCORE_DEFINITION, "domain": "[0, 1]",
                  "members": members},
        "threshold": threshold.to_json(),
        "normal_scores": dict(normal_scores),
    }
    for key, value in extra.items():
        if key in document:
            raise BundleError(f"write_bundle: extra key {key!r} would overwrite a core field.")
        document[key] = value
    json_path = bundle_dir / BUNDLE_FILE
    json_path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return json_path
