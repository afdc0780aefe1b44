"""Typed configuration of the MQTT connection and the spool (the ``[mqtt]`` config section).

Secrets are never values in the TOML: the config names an environment variable or a file that
holds them, and they are read only when the client connects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)


def _admits_bool(annotation: Any) -> bool:
    """Whether a field's type takes a boolean (bool, bool | None, Literal[True, …], Any)."""
    if annotation is bool or annotation is Any:
        return True
    if get_origin(annotation) is Literal:
        return any(isinstance(arg, bool) for arg in get_args(annotation))
    return any(_admits_bool(arg) for arg in get_args(annotation))


class StrictModel(BaseModel):
    """Base of every config section: unknown keys are errors, values are frozen, and a TOML
    boolean is not taken for a number (pydantic would read ``port = true`` as port 1)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _no_boolean_for_a_number(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, value in data.items():
                field = cls.model_fields.get(key)
                if (isinstance(value, bool) and field is not None
                        and not _admits_bool(field.annotation)):
                    raise ValueError(f"{key} = {str(value).lower()}: expected a number or a "
                                     "string, not a boolean")
        return data


class TlsConfig(StrictModel):
    """TLS towards the broker. Paths may be relative to the config file."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure_skip_verify: bool = False


class AuthConfig(StrictModel):
    """Username and password come from the environment or from files, never from the TOML."""

    username_env: str | None = None
    username_file: Path | None = None
    password_env: str | None = None
    password_file: Path | None = None


class SpoolConfig(StrictModel):
    """Durable store-and-forward of decided events (SQLite, WAL)."""

    path: Path = Path("spool.db")
    max_events: int = Field(default=100_000, ge=100)
    max_age_s: float = Field(default=7 * 24 * 3600.0, gt=0)


class MqttConfig(StrictModel):
    """Broker connection, topics and delivery limits (docs/mqtt.md).

    ``max_inflight``: events published but not yet acknowledged (PUBACK). ``max_payload_bytes``:
    larger events are refused with an error (the broker's message_size_limit must allow it).
    ``state_qos``: QoS of the retained crop states (0: no PUBACK per state; every state is
    re-published after each reconnect anyway — docs/mqtt.md says what 1 adds).
    """

    host: str = "localhost"
    port: int = Field(default=1883, ge=1, le=65535)
    prefix: str = Field(default="anomaly", min_length=1, pattern=r"^[^#+\s]+$")
    client_id: str | None = None
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    reconnect_min_s: float = Field(default=1.0, gt=0)
    reconnect_max_s: float = Field(default=60.0, gt=0)
    max_inflight: int = Field(default=20, ge=1, le=1000)
    stats_interval_s: float = Field(default=10.0, gt=0)
    max_payload_bytes: int = Field(default=65536, ge=512)
    state_qos: Literal[0, 1] = 0
    tls: TlsConfig | None = None
    auth: AuthConfig | None = None
    spool: SpoolConfig = SpoolConfig()

    @field_validator("host")
    @classmethod
    def _host_is_a_name_or_address(cls, host: str) -> str:
        # paho resolves it on its network thread, where a name DNS cannot take (an empty or
        # over-long label) raises UnicodeError: the thread would die and nothing be sent.
        try:
            if not host.strip():
                raise UnicodeError("it is empty")
            host.encode("idna")
        except UnicodeError as exc:
            raise ValueError(
                f"{host!r} is not a host name or IP address ({exc}); give the broker's name "
                "(e.g. broker.plant.local) or address (e.g. 192.168.1.10)") from exc
        return host

    @model_validator(mode="after")
    def _backoff_in_order(self) -> MqttConfig:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError(
                f"reconnect_max_s ({self.reconnect_max_s}) must be >= reconnect_min_s "
                f"({self.reconnect_min_s})"
            )
        return self
