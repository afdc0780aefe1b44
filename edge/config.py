"""The device config: one TOML file (``firmware_config/*.toml``) validated into typed models.

Every model forbids unknown keys, so a typo is an error that names its path
(``layout.grid.rowz: unknown key``). All problems of a file are reported at once in one
:class:`~edge.errors.ConfigError`. Relative paths (the bundle, a replay folder, a video file)
resolve against the directory of the config file, so a config works from any working directory.

Secrets never live in the TOML: ``[mqtt.auth]`` names environment variables or files
(:mod:`edge.publish.settings`), and an RTSP URL with a password is refused in favour of ``url_env``.
See docs/config.md for every key.
"""

from __future__ import annotations

import difflib
import os
import re
import string
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from edge.errors import ConfigError
from edge.layout import grid_boxes, grid_names
from edge.publish.settings import MqttConfig, StrictModel

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (Ubuntu 22.04, older Pi images): the same parser, from PyPI as 'tomli'
    import tomli as tomllib

STALL_TIMEOUT_S = 2.0
QUEUE_FRAMES = 8
RETRY_INITIAL_S = 0.5
RETRY_MAX_S = 30.0
MAX_THREADS = 64
AUTO_THREADS_MAX = 4  # "auto" never asks for more: a model this small gains nothing beyond it
# Crop names become MQTT topic levels (…/crops/<name>/state): no '/', '+', '#' or spaces.
CROP_NAME_PATTERN = r"^[A-Za-z0-9_.-]*$"
CROP_NAME = re.compile(CROP_NAME_PATTERN)
# An unknown key containing one of these gets a hint on how secrets are supplied instead.
SECRET_WORDS = ("password", "secret", "token", "passwd")


def _resolve_path(value: Path, info: ValidationInfo) -> Path:
    """Relative paths resolve against the config file's directory (passed as context)."""
    base = (info.context or {}).get("base_dir")
    value = value.expanduser()
    if base is not None and not value.is_absolute():
        value = Path(base) / value
    return value


ConfigPath = Annotated[Path, AfterValidator(_resolve_path)]


def _box_has_area(box: list[int]) -> list[int]:
    if box[2] < 1 or box[3] < 1:
        raise ValueError(f"box {box} is [x, y, width, height] with a zero width or height; "
                         "a crop needs at least 1×1 px")
    return box


# [x, y, width, height] in frame pixels; an empty box would be scored as black for ever.
PixelBox = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=4, max_length=4),
                     AfterValidator(_box_has_area)]
Size = Annotated[list[Annotated[int, Field(ge=8, le=16384)]], Field(min_length=2, max_length=2)]


def _thread_count(value: Any) -> int | Literal["auto"]:
    """``num_threads``: "auto" or a whole number 1..MAX_THREADS (one message, not one per type)."""
    if value == "auto":
        return "auto"
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_THREADS:
        return value
    raise ValueError(f'must be "auto" or a whole number from 1 to {MAX_THREADS} (found {value!r})')


class ScorerConfig(StrictModel):
    """``[scorer]``: which inference backend runs the bundle's int8 model."""

    # The same names as edge.backends.BACKENDS; a test keeps the two lists in step.
    backend: Literal["litert", "tflite-runtime", "edgetpu"] = "litert"
    # "auto": one core fewer than this process may use (capture, decisions and MQTT need one).
    num_threads: Annotated[int | Literal["auto"], PlainValidator(_thread_count)] = "auto"

    def threads(self) -> int:
        """``num_threads`` as a number: "auto" resolved on this machine."""
        if self.num_threads != "auto":
            return self.num_threads
        return auto_threads()


def auto_threads() -> int:
    """Interpreter threads for ``num_threads = "auto"``: the cores this process may run on
    (its CPU affinity, so a container's or a ``taskset`` limit counts), minus one for the
    capture, decision and MQTT threads, at least 1 and at most AUTO_THREADS_MAX.
    A Raspberry Pi 4 or 5 (4 cores) gets 3; a 2-core machine gets 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(AUTO_THREADS_MAX, cores - 1))


class _SourceCommon(StrictModel):
    """Keys every source kind shares: queueing, stall detection and retry backoff."""

    queue_frames: int = Field(default=QUEUE_FRAMES, ge=1, le=1024)
    stall_timeout_s: float = Field(default=STALL_TIMEOUT_S, gt=0)
    retry_initial_s: float = Field(default=RETRY_INITIAL_S, gt=0)
    retry_max_s: float = Field(default=RETRY_MAX_S, gt=0)

    @model_validator(mode="after")
    def _retry_order(self) -> _SourceCommon:
        if self.retry_max_s < self.retry_initial_s:
            raise ValueError(
                f"retry_max_s ({self.retry_max_s}) is below retry_initial_s "
                f"({self.retry_initial_s}); make retry_max_s the larger one"
            )
        return self


class FolderSourceConfig(_SourceCommon):
    """``kind = "folder"``: replay of the image files in a folder, in sorted name order."""

    kind: Literal["folder"]
    path: ConfigPath
    fps: float = Field(default=0.0, ge=0, description="0 = as fast as the pipeline takes them")
    loop: bool = False
    recursive: bool = False


class OpenCVSourceConfig(_SourceCommon):
    """``kind = "opencv"``: a video file, a USB camera index or a stream URL, through cv2."""

    kind: Literal["opencv"]
    path: ConfigPath | None = None
    index: int | None = Field(default=None, ge=0)
    url: str | None = None
    url_env: str | None = None
    fps: float = Field(default=0.0, ge=0)
    loop: bool = False
    width: int | None = Field(default=None, ge=8)
    height: int | None = Field(default=None, ge=8)
    grey: bool = False

    @model_validator(mode="after")
    def _exactly_one_input(self) -> OpenCVSourceConfig:
        given = [k for k in ("path", "index", "url", "url_env") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"set exactly one of path, index, url, url_env (found {given or 'none'})"
            )
        if self.url is not None and (urlsplit(self.url).password or urlsplit(self.url).query):
            raise ValueError(
                "url contains a password or a query string (tokens live there); secrets never "
                "go in the TOML. Put the whole URL in "
                "an environment variable and name it with url_env"
            )
        return self


class Picamera2SourceConfig(_SourceCommon):
    """``kind = "picamera2"``: a Raspberry Pi camera; inference reads the grey 'lores' stream."""

    kind: Literal["picamera2"]
    camera_num: int = Field(default=0, ge=0)
    main_size: Size = Field(default_factory=lambda: [1280, 960])
    lores_size: Size = Field(default_factory=lambda: [640, 480])
    fps: float = Field(default=10.0, gt=0, le=120)

    @model_validator(mode="after")
    def _camera_sizes(self) -> Picamera2SourceConfig:
        # picamera2 refuses these at configure() time, which would make every start attempt fail.
        odd = [f"{name} {size}" for name, size in (("main_size", self.main_size),
                                                   ("lores_size", self.lores_size))
               if any(side % 2 for side in size)]
        if odd:
            raise ValueError(f"{' and '.join(odd)}: the camera's streams need even widths and "
                             "heights (YUV420); use e.g. [640, 480]")
        if any(lo > main for lo, main in zip(self.lores_size, self.main_size, strict=True)):
            raise ValueError(
                f"lores_size {self.lores_size} is larger than main_size {self.main_size} in "
                "width or height; the camera's low-resolution stream may not exceed the main "
                "stream. Make lores_size smaller or main_size larger."
            )
        return self


SourceConfig = Annotated[
    FolderSourceConfig | OpenCVSourceConfig | Picamera2SourceConfig,
    Field(discriminator="kind"),
]
SOURCE_MODELS: dict[str, type[_SourceCommon]] = {
    "folder": FolderSourceConfig,
    "opencv": OpenCVSourceConfig,
    "picamera2": Picamera2SourceConfig,
}
SOURCE_KINDS = tuple(SOURCE_MODELS)


class GridConfig(StrictModel):
    """``[layout.grid]``: rows × cols equal cells inside ``region``; see edge/layout.py."""

    region: PixelBox
    rows: int = Field(ge=1, le=256)
    cols: int = Field(ge=1, le=256)
    gap: Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=2, max_length=2)] = (
        Field(default_factory=lambda: [0, 0])
    )
    inset: int = Field(default=0, ge=0)
    name_template: str = "r{row}c{col}"

    @model_validator(mode="after")
    def _template_fields(self) -> GridConfig:
        allowed = {"row", "col", "index"}
        try:
            # An empty field ("{}") is a positional one: no value would fill it.
            fields = {f for _, f, _, _ in string.Formatter().parse(self.name_template)
                      if f is not None}
        except ValueError as exc:
            raise ValueError(f"name_template {self.name_template!r} is malformed ({exc})") from exc
        if not fields & {"row", "col", "index"} or fields - allowed:
            found = ", ".join("{" + f + "}" for f in sorted(fields)) or "none"
            raise ValueError(
                f"name_template {self.name_template!r} must use {{row}} and {{col}} or {{index}} "
                f"and nothing else (found {found})"
            )
        try:
            names = grid_names(1, 1, self.name_template)
        except (ValueError, IndexError, KeyError) as exc:  # e.g. a format spec for strings
            raise ValueError(f"name_template {self.name_template!r} cannot be filled in with "
                             f"row, col and index numbers ({exc})") from exc
        bad = [n for n in names if not CROP_NAME.fullmatch(n)]
        if bad:
            raise ValueError(
                f"name_template {self.name_template!r} gives names like {bad[0]!r}; crop names "
                "are MQTT topic levels and may use only letters, digits, '_', '.' and '-'"
            )
        grid_boxes(self.region, self.rows, self.cols, self.gap, self.inset)  # cells not empty
        return self


class NamedBox(StrictModel):
    """One ``[[layout.boxes]]`` or ``[[layout.ignore]]`` entry: a name and [x, y, w, h] px."""

    name: str = Field(default="", pattern=CROP_NAME_PATTERN)
    box: PixelBox


class LayoutConfig(StrictModel):
    """``[layout]``: which parts of a frame are scored, as a grid and/or named boxes."""

    grid: GridConfig | None = None
    boxes: list[NamedBox] = Field(default_factory=list)
    ignore: list[NamedBox] = Field(default_factory=list)

    @model_validator(mode="after")
    def _some_crops_unique_names(self) -> LayoutConfig:
        names = self.crop_names()
        if not names:
            raise ValueError("define [layout.grid] or at least one [[layout.boxes]] entry")
        if any(not b.name for b in self.boxes):
            raise ValueError("every [[layout.boxes]] entry needs a name")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"crop names must be unique; repeated: {duplicates}")
        return self

    def crop_names(self) -> list[str]:
        """Names of all scored crops, grid first (row-major), then boxes in file order."""
        names: list[str] = []
        if self.grid is not None:
            names.extend(grid_names(self.grid.rows, self.grid.cols, self.grid.name_template))
        names.extend(b.name for b in self.boxes)
        return names


class ThresholdOverride(StrictModel):
    """A threshold set in the config instead of the bundle's; ``reason`` is logged at startup."""

    high: float | None = Field(default=None, ge=0)
    low: float | None = Field(default=None, ge=0)
    reason: str = Field(min_length=3)

    @model_validator(mode="after")
    def _bounds(self) -> ThresholdOverride:
        if self.high is None and self.low is None:
            raise ValueError("a threshold override needs 'high', 'low' or both")
        if self.high is not None and self.low is not None and self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self


class DecisionConfig(StrictModel):
    """``[decision]``: debounce (k of the last n frames) and hysteresis; see edge/decision.py."""

    k: int = Field(default=1, ge=1)
    n: int = Field(default=1, ge=1, le=1000)
    clear_n: int | None = Field(default=None, ge=1, le=1000)
    clear_ratio: float = Field(default=1.0, gt=0, le=1)
    threshold: ThresholdOverride | None = None
    crops: dict[str, ThresholdOverride] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _k_within_n(self) -> DecisionConfig:
        if self.k > self.n:
            raise ValueError(f"k ({self.k}) cannot exceed n ({self.n}); k of the last n frames")
        return self


class LoggingConfig(StrictModel):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


class DeviceConfig(StrictModel):
    """The whole device config file."""

    device_id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    bundle: ConfigPath
    bundle_public_key: ConfigPath | None = None  # when set, only bundles signed by it run
    scorer: ScorerConfig = ScorerConfig()
    source: SourceConfig
    layout: LayoutConfig
    decision: DecisionConfig = DecisionConfig()
    mqtt: MqttConfig = MqttConfig()
    logging: LoggingConfig = LoggingConfig()
    # Set by load_config, not by the file: the directory relative paths resolve against.
    base_dir: Path = Field(default=Path("."), exclude=True)

    @field_validator("bundle")
    @classmethod
    def _bundle_exists(cls, value: Path) -> Path:
        if not (value.is_dir() or value.is_file()):
            raise ValueError(
                f"no bundle at {value} (relative paths resolve against the config file's "
                "folder); train one with 'trainer fit' or point 'bundle' at models/NAME"
            )
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> DeviceConfig:
        unknown = sorted(set(self.decision.crops) - set(self.layout.crop_names()))
        if unknown:
            raise ValueError(
                f"decision.crops: names {unknown}, which are not crops of the layout "
                f"(crops: {self.layout.crop_names()[:8]}…); fix the names"
            )
        return self


def load_config(path: str | Path) -> DeviceConfig:
    """Read and validate a device config; raises ConfigError listing every problem."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} not found; pass an existing TOML file.") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read ({exc}).") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}.") from exc
    if "base_dir" in raw:
        raise ConfigError(f"config {path}: base_dir: unknown key; remove it.")
    base_dir = path.resolve().parent
    try:
        return DeviceConfig.model_validate({**raw, "base_dir": base_dir},
                                           context={"base_dir": base_dir})
    except ValidationError as exc:
        problems = [_describe(error, raw) for error in exc.errors()]
        noun = "problem" if len(problems) == 1 else "problems"
        listing = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(f"config {path} has {len(problems)} {noun}:\n{listing}") from None


def _describe(error: Any, raw: dict[str, Any]) -> str:
    """One pydantic error → 'path: what is wrong (found X); how to fix'."""
    loc = _clean_loc(error["loc"])
    where = ".".join(str(part) for part in loc) or "(top level)"
    kind = error["type"]
    if kind == "extra_forbidden":
        known = _known_keys(loc[:-1], raw)
        hint = difflib.get_close_matches(str(loc[-1]), known, n=1)
        fix = f"did you mean {hint[0]!r}?" if hint else f"known keys here: {', '.join(known)}"
        if any(word in str(loc[-1]).lower() for word in SECRET_WORDS):
            fix += (" Secrets never go in the TOML: name an environment variable or a file "
                    "(e.g. password_env / password_file in [mqtt.auth]); see docs/config.md")
        return f"{where}: unknown key; remove it or fix the spelling — {fix}"
    if kind == "missing":
        return f"{where}: required key is missing; add it (see docs/config.md)"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        found = error["input"].get("kind") if isinstance(error["input"], dict) else None
        return (f"{where}.kind: must be one of {', '.join(SOURCE_KINDS)} "
                f"({'missing' if found is None else f'found {found!r}'})")
    message = str(error["msg"]).removeprefix("Value error, ")
    found = error.get("input")
    if not loc:
        return message
    if kind.startswith("value_error") or isinstance(found, dict):
        return f"{where}: {message}"
    return f"{where}: {message} (found {found!r})"


def _clean_loc(loc: Sequence[Any]) -> list[Any]:
    """Drop the discriminator tag pydantic inserts for the source union (source.folder.x)."""
    parts = list(loc)
    if len(parts) >= 2 and parts[0] == "source" and parts[1] in SOURCE_KINDS:
        del parts[1]
    return parts


def _known_keys(loc: Sequence[Any], raw: dict[str, Any]) -> list[str]:
    """The keys the table at ``loc`` accepts, for the 'did you mean' hint (best effort)."""
    annotation: Any = DeviceConfig
    for position, part in enumerate(loc):
        if position == 0 and part == "source":
            section = raw.get("source")
            kind = section.get("kind") if isinstance(section, dict) else None
            annotation = SOURCE_MODELS.get(str(kind))
            continue
        if isinstance(part, int):
            continue  # a list index: the element model is found below
        if get_origin(annotation) is dict:
            annotation = get_args(annotation)[1]  # a free-form key such as decision.crops.NAME
            continue
        model = _model_of(annotation)
        if model is None:
            return []
        field = model.model_fields.get(part)
        annotation = field.annotation if field is not None else None
    model = _model_of(annotation)
    if model is None:
        return []
    return sorted(k for k in model.model_fields if k != "base_dir")


def _model_of(annotation: Any) -> Any:
    """The first pydantic model inside an annotation (Optional[X], list[X], Annotated[...])."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) is dict:
        return _model_of(get_args(annotation)[1])
    for arg in get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None
