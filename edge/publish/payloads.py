"""Topic names, payload builders and secret loading for the MQTT publisher (docs/mqtt.md).

Kept apart from the client so that the wire format can be read (and tested against the JSON
Schemas in ``edge/schemas``) without a broker.
"""

from __future__ import annotations

import json
import logging
import math
import os
import ssl
import time
from importlib import resources
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from edge.errors import PublishError
from edge.publish.settings import AuthConfig, MqttConfig, TlsConfig
from edge.types import UNENCODABLE, Event, encode_json, utc_iso

log = logging.getLogger(__name__)

STATE_SCHEMA = "anomaly-state/1"
STATUS_SCHEMA = "anomaly-status/1"
STATS_SCHEMA = "anomaly-stats/1"
WARNING_SCHEMA = "anomaly-warning/1"

STATUS_ONLINE = "online"
STATUS_DEGRADED = "degraded"
STATUS_OFFLINE = "offline"
STATUSES = (STATUS_ONLINE, STATUS_DEGRADED, STATUS_OFFLINE)

# Largest seq an event can carry in a payload-size check made before the spool assigns one.
SEQ_SIZE_BOUND = 10**15


class Topics:
    """All topics of one device, under ``<prefix>/<device_id>``."""

    def __init__(self, prefix: str, device_id: str) -> None:
        if not device_id or any(ch in device_id for ch in "#+/ "):
            raise PublishError(
                f"device id {device_id!r} cannot be used in an MQTT topic: it must be non-empty "
                "and contain no '#', '+', '/' or spaces. Fix the device id in the config."
            )
        self.base = f"{prefix}/{device_id}"
        self.events = f"{self.base}/events"
        self.status = f"{self.base}/status"
        self.stats = f"{self.base}/stats"
        self.warnings = f"{self.base}/warnings"

    def crop_state(self, crop: str) -> str:
        """Retained state topic of one crop."""
        if not crop or any(ch in crop for ch in "#+/"):
            raise ValueError(f"crop name {crop!r} cannot be an MQTT topic level (no '#', '+', '/')")
        return f"{self.base}/crops/{crop}/state"


encode = encode_json  # every payload is written the same way


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    return value


def encode_lenient(payload: dict[str, Any]) -> bytes:
    """Like :func:`encode`, but NaN / infinity become null: for informational payloads (state,
    stats) where one odd figure must not stop the message, unlike an event."""
    try:
        return encode(payload)  # the usual case, without walking the payload first
    except ValueError:  # NaN or infinity somewhere
        return encode(_finite_or_none(payload))


def status_payload(
    device_id: str, status: str, reason: str | None, bundle: dict[str, str],
    timestamp: float | None = None,
) -> dict[str, Any]:
    """Retained ``…/status`` payload. For the Last Will the timestamp is when it was registered."""
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
    return {
        "schema": STATUS_SCHEMA,
        "device_id": device_id,
        "status": status,
        "reason": reason,
        "timestamp": utc_iso(time.time() if timestamp is None else timestamp),
        "bundle": dict(bundle),
    }


def state_payload(device_id: str, crop: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Retained ``…/crops/<crop>/state`` payload: the caller's fields plus identification."""
    if "state" not in payload:
        raise ValueError(
            f"crop state payload for {crop!r} needs a 'state' key, got keys {sorted(payload)}"
        )
    body: dict[str, Any] = {"schema": STATE_SCHEMA, "device_id": device_id, "crop": crop,
                            "timestamp": utc_iso(time.time())}
    body.update(payload)
    return body


def warning_payload(device_id: str, code: str, message: str, **details: Any) -> dict[str, Any]:
    """``…/warnings`` payload: something the operator must know (e.g. events dropped)."""
    return {"schema": WARNING_SCHEMA, "device_id": device_id, "timestamp": utc_iso(time.time()),
            "code": code, "message": message, **details}


def drop_warning(device_id: str, unreadable: bool, count: int, first_seq: int, last_seq: int,
                 spool: str) -> dict[str, Any]:
    """The ``…/warnings`` payload that explains a seq gap: events dropped by the spool limits
    (``spool_overflow``) or stored rows that could not be read (``spool_unreadable``)."""
    seqs = f"seq {first_seq}..{last_seq}"
    if unreadable:
        code, message = "spool_unreadable", (
            f"{count} stored {'event' if count == 1 else 'events'}, {seqs}, could not be read "
            f"back from the event spool (damaged, or written by an incompatible build) and "
            f"{'is' if count == 1 else 'are'} not sent; moved to the 'rejected' table of "
            f"{spool}")
    else:
        code, message = "spool_overflow", (
            f"the event spool reached its limits (max_events / max_age_s) and dropped {count} "
            f"oldest events, {seqs}")
    return warning_payload(device_id, code, message, dropped=count, first_seq=first_seq,
                           last_seq=last_seq)


def load_schema(name: str) -> dict[str, Any]:
    """The JSON Schema shipped in ``edge/schemas/<name>.json`` (event, state, status, stats,
    warning)."""
    text = resources.files("edge").joinpath("schemas", f"{name}.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def _resolve(path: Path, base_dir: Path) -> Path:
    return path if path.is_absolute() else base_dir / path


def _read_secret(env: str | None, file: Path | None, base_dir: Path, what: str) -> str | None:
    if env is not None:
        value = os.environ.get(env)
        if value is None:
            raise PublishError(
                f"MQTT {what}: environment variable {env!r} (named by [mqtt.auth] {what}_env) is "
                "not set. Export it in the service environment or use a file instead."
            )
        return value
    if file is not None:
        resolved = _resolve(file, base_dir)
        try:
            return resolved.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as err:
            raise PublishError(
                f"MQTT {what}: cannot read '{resolved}' (named by [mqtt.auth] {what}_file): "
                f"{err.strerror}. Create it (mode 600) or fix the path."
            ) from err
    return None


def load_credentials(auth: AuthConfig | None, base_dir: Path) -> tuple[str | None, str | None]:
    """(username, password) from the environment or files; never logged by the caller."""
    if auth is None:
        return None, None
    username = _read_secret(auth.username_env, auth.username_file, base_dir, "username")
    password = _read_secret(auth.password_env, auth.password_file, base_dir, "password")
    if password is not None and username is None:
        raise PublishError(
            "MQTT auth: a password is configured but no username; MQTT sends a password only "
            "with a username. Set [mqtt.auth] username_env or username_file."
        )
    return username, password


def tls_files(tls: TlsConfig, base_dir: Path) -> tuple[str | None, str | None, str | None]:
    """Resolved (ca, cert, key) paths; each one given must exist."""
    resolved: list[str | None] = []
    for name in ("ca_file", "cert_file", "key_file"):
        value: Path | None = getattr(tls, name)
        if value is None:
            resolved.append(None)
            continue
        path = _resolve(value, base_dir)
        if not path.is_file():
            raise PublishError(
                f"MQTT TLS: [mqtt.tls] {name} '{path}' does not exist or is not a file. "
                "Fix the path (relative paths are relative to the config file)."
            )
        resolved.append(str(path))
    if (resolved[1] is None) != (resolved[2] is None):
        raise PublishError("MQTT TLS: cert_file and key_file must be given together.")
    return resolved[0], resolved[1], resolved[2]


def configure_security(client: mqtt.Client, config: MqttConfig, base_dir: Path) -> None:
    """Credentials and TLS on a paho client, before connect. Secrets are not logged."""
    username, password = load_credentials(config.auth, base_dir)
    if username is not None:
        client.username_pw_set(username, password)
    if config.tls is None:
        return
    ca, cert, key = tls_files(config.tls, base_dir)
    try:
        client.tls_set(ca_certs=ca, certfile=cert, keyfile=key)
    except (ssl.SSLError, OSError, ValueError) as err:
        raise PublishError(
            f"MQTT TLS: cannot load ca_file={ca}, cert_file={cert}, key_file={key}: {err}. "
            "They must be PEM files, and the key must match the certificate."
        ) from err
    if config.tls.insecure_skip_verify:
        log.warning("MQTT TLS certificate verification is OFF (insecure_skip_verify)")
        client.tls_insecure_set(True)


def client_id_for(config: MqttConfig, device_id: str) -> str:
    """The configured client id, or one derived from the device id (stable across restarts)."""
    return config.client_id or f"edge-{device_id}"


def event_problem(fields: dict[str, Any], max_payload_bytes: int,
                  spool_path: object) -> tuple[str | None, int]:
    """(why this event cannot be sent or None, its encoded size in bytes; 0 if not encodable)."""
    probe = Event(event_id="0" * 36, seq=SEQ_SIZE_BOUND, **fields)
    try:
        size = len(probe.encoded())
    except UNENCODABLE as err:
        return (f"event for crop {fields.get('crop')!r} cannot be encoded as JSON: {err}. "
                "Scores and thresholds must be finite numbers (no NaN or infinity) and extra "
                "fields plain JSON values."), 0
    if size > max_payload_bytes:
        return (f"event for crop {fields.get('crop')!r} is {size} bytes as JSON, more than "
                f"[mqtt] max_payload_bytes = {max_payload_bytes}. It was kept in the spool's "
                f"rejected table ({spool_path}), not sent. Shrink the 'extra' fields or raise "
                "max_payload_bytes (the broker's message_size_limit must allow it)."), size
    return None, size
