"""``edge run --config F --validate-config``: check a config without starting anything, and logging.

Validation goes as far as it can without a camera or a broker: the TOML and its types, the bundle
(hash check, and the model built once to compare its shapes with bundle.json), the layout (against
the first replay image or the picamera2 lores size when those are known), threshold overrides,
and that every secret the config names can be read. It prints ``config OK: …`` and returns 0, or
lists every problem and returns 1.

The output never contains a secret: it names environment variables and files, never their
contents.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from edge.config import (
    DeviceConfig,
    FolderSourceConfig,
    LoggingConfig,
    OpenCVSourceConfig,
    Picamera2SourceConfig,
    load_config,
)
from edge.errors import ProjectError

VALIDATE_OK = 0
VALIDATE_FAILED = 1
TEXT_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log collectors."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record), "level": record.levelname,
            "logger": record.name, "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(config: LoggingConfig) -> None:
    """Root logger at the configured level and format, on stderr."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if config.format == "json"
                         else logging.Formatter(TEXT_LOG_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.level)


def _first_frame_size(config: DeviceConfig) -> tuple[int, int, str] | None:
    """(width, height, origin) of the frames the source will deliver, where knowable offline."""
    source = config.source
    if isinstance(source, Picamera2SourceConfig):
        return source.lores_size[0], source.lores_size[1], "picamera2 lores_size"
    if isinstance(source, FolderSourceConfig) and source.path.is_dir():
        from edge.errors import ImageError
        from edge.preprocess import load_image
        from edge.sources.folder import list_images

        for path in list_images(source.path, source.recursive):
            try:
                image = load_image(path)
            except ImageError:
                continue
            return image.shape[1], image.shape[0], f"first image {path.name}"
    return None


def _source_path_problem(config: DeviceConfig) -> str | None:
    """A replay folder or video file that is not there (``edge run`` would retry it for ever,
    degraded, which suits a disk mounted late but not a typo)."""
    source = config.source
    if isinstance(source, FolderSourceConfig):
        from edge.sources.folder import list_images

        if not source.path.is_dir():
            found = "a file" if source.path.exists() else "nothing"
            return (f"source.path: {source.path} is not a folder (found {found} there); create "
                    "it, mount it or fix the path (relative paths start at the config's folder)")
        if not list_images(source.path, source.recursive):
            from edge.preprocess import IMAGE_SUFFIXES

            return (f"source.path: {source.path} holds no images "
                    f"({', '.join(IMAGE_SUFFIXES)}{', recursive' if source.recursive else ''}); "
                    "put the frames to replay there")
    if (isinstance(source, OpenCVSourceConfig) and source.path is not None
            and not source.path.is_file()):
        return (f"source.path: no video file at {source.path}; fix the path (a camera goes "
                "in index, a stream in url or url_env)")
    return None


def _check(config: DeviceConfig, problems: list[str]) -> list[str]:
    """Run every offline check; append problems; return summary lines."""
    from edge.bundle import load_bundle
    from edge.decision import resolve_rules
    from edge.layout import Layout
    from edge.publish.payloads import load_credentials, tls_files
    from edge.scoring import Scorer
    from edge.sources import create_source

    lines = [f"device {config.device_id}"]
    bundle = None
    try:
        bundle = load_bundle(config.bundle, public_key=config.bundle_public_key)
        Scorer(bundle, backend=config.scorer.backend, num_threads=config.scorer.threads())
        spec, threshold = bundle.input, bundle.threshold
        lines.append(
            f"bundle {bundle.name} at {bundle.path} (sha256 {bundle.sha256[:12]}…, input "
            f"{spec.width}×{spec.height} {spec.color_mode}, batch sizes {bundle.batch_sizes}, "
            f"threshold {threshold.rule} high={threshold.high} low={threshold.low}); "
            f"scorer {config.scorer.backend}, "
            f"{_threads(config.scorer.num_threads, config.scorer.threads())}")
    except ProjectError as exc:
        problems.append(f"bundle: {exc}")
    source = create_source(config.source)
    lines.append(f"source {source.describe()}")
    colour = None if bundle is None else source.colour_problem(bundle.input.color_mode)
    if colour is not None:
        problems.append(colour)
    source_problem = _source_path_problem(config)
    if source_problem is not None:
        problems.append(source_problem)
    if isinstance(config.source, OpenCVSourceConfig) and config.source.url_env is not None:
        import os

        if not os.environ.get(config.source.url_env):
            problems.append(f"source.url_env: ${config.source.url_env} is not set; export it "
                            "with the stream URL.")
    try:
        layout = Layout.from_config(config.layout)
        size = _first_frame_size(config)
        if size is not None:
            layout.check_frame_size(size[0], size[1])
        checked = f", checked against {size[0]}×{size[1]} px ({size[2]})" if size else ""
        lines.append(f"layout {layout.describe()}{checked}")
        if bundle is not None:
            rules = resolve_rules(layout.names, bundle, config.decision)
            overrides = sorted({f"{r.threshold.high}/{r.threshold.low} ({r.reason})"
                                for r in rules.values() if r.source == "config"})
            if overrides:
                lines.append(f"threshold overrides (high/low): {'; '.join(overrides)}")
    except ProjectError as exc:
        problems.append(str(exc))
    decision = config.decision
    clear_n = decision.clear_n if decision.clear_n is not None else decision.n
    lines.append(f"decision {decision.k} of {decision.n} frames to enter anomaly, {clear_n} "
                 f"clear frames (≤ high × {decision.clear_ratio:g}) to leave")
    mqtt = config.mqtt
    try:
        # Read (and at once forget) the secrets, so that a missing one fails here, not at 3 am.
        load_credentials(mqtt.auth, config.base_dir)
    except ProjectError as exc:
        problems.append(f"mqtt.auth: {exc}")
    try:
        if mqtt.tls is not None:
            tls_files(mqtt.tls, config.base_dir)
    except ProjectError as exc:
        problems.append(f"mqtt.tls: {exc}")
    lines.append(f"mqtt {mqtt.host}:{mqtt.port} prefix {mqtt.prefix!r}, tls "
                 f"{'on' if mqtt.tls else 'off'}, {_auth_summary(config)}, spool {mqtt.spool.path}")
    base = f"{mqtt.prefix}/{config.device_id}"
    lines.append(f"topics {base}/{{status,events,stats,warnings,crops/<crop>/state}} "
                 "(the broker's ACL must let this device write them; docs/security.md)")
    return lines


def _auth_summary(config: DeviceConfig) -> str:
    """Where credentials come from — names of variables and files only, never their values."""
    auth = config.mqtt.auth
    if auth is None:
        return "no auth"
    parts = []
    for what in ("username", "password"):
        env, file = getattr(auth, f"{what}_env"), getattr(auth, f"{what}_file")
        if env is not None:
            parts.append(f"{what} from ${env}")
        elif file is not None:
            parts.append(f"{what} from file {file}")
    return "auth: " + ", ".join(parts) if parts else "no auth"


def validate_config(path: Path) -> int:
    """Check ``path`` and everything it names; print the verdict; 0 when usable, else 1."""
    try:
        config = load_config(path)
    except ProjectError as exc:
        print(f"config INVALID: {exc}", file=sys.stderr)
        return VALIDATE_FAILED
    problems: list[str] = []
    lines = _check(config, problems)
    if problems:
        noun = "problem" if len(problems) == 1 else "problems"
        listing = "\n".join(f"  - {p}" for p in problems)
        print(f"config INVALID: {path} has {len(problems)} {noun}:\n{listing}", file=sys.stderr)
        return VALIDATE_FAILED
    print(f"config OK: {path}")
    for line in lines:
        print(f"  {line}")
    return VALIDATE_OK


def _threads(configured: int | str, resolved: int) -> str:
    """'1 thread (auto)', '3 threads' — as the operator reads it."""
    text = f"{resolved} thread{'' if resolved == 1 else 's'}"
    return f"{text} (auto)" if configured == "auto" else text
