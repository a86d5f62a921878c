"""Settings from the environment (FIELDLINK_*) or a `.env` file, checked before anything starts."""

from __future__ import annotations

import re
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from shared.identities import INGEST_IDENTITY

# Values a caller (the `fieldlink` CLI, from the local stack) offers when neither the environment nor
# `.env` says otherwise.
_fallbacks: ContextVar[dict[str, Any] | None] = ContextVar("fieldlink_settings_fallbacks", default=None)


_MIN_TOKEN_LENGTH = 16

# Messages the consumer holds read but not yet acknowledged. The local broker's
# `max_inflight_messages` (tools/_stack.py) is set from this number: the broker sends no more
# unacknowledged QoS 1 messages than the consumer would hold, and holds back no fewer.
# 1,000: with 100, one reading per message made batches of 100 points and the broker waited on each
# write before sending more (make bench: 12.9k -> 15.6k msg/s, 0.8x the bare subscriber, at 1,000).
MAX_UNACKED_MESSAGES = 1000


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FIELDLINK_", env_file=".env", extra="ignore")

    env: Literal["development", "production"] = "development"

    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 8883
    mqtt_tls: bool = True
    mqtt_ca: Path | None = None
    mqtt_cert: Path | None = None
    mqtt_key: Path | None = None
    # The broker replaces a client id with the certificate's CN (use_username_as_clientid), so this
    # must equal the CN of mqtt_cert for the persistent session to be found again.
    mqtt_client_id: str = INGEST_IDENTITY
    mqtt_keepalive_s: int = 30
    # With a group, workers share the subscription ($share/<group>/...); each message goes to one.
    mqtt_shared_group: str | None = None

    influx_url: str = "http://127.0.0.1:8086"
    influx_api: Literal["v1", "v2"] = "v2"
    influx_database: str = "fieldlink"
    influx_org: str = "fieldlink"
    influx_bucket: str = "fieldlink"
    influx_token: SecretStr | None = None
    # The v1 API's user (HTTP basic auth); the local stack's is a write-only user.
    influx_username: str | None = None
    influx_password: SecretStr | None = None
    influx_timeout_s: float = 10.0
    # Reading back (the API's latest readings and charts, the dashboard): InfluxQL on `/query`, which
    # 1.x, 2.x (its v1 compatibility API, with a DBRP mapping) and 3.x answer. A read-only user for 1.x
    # (basic auth), or a read token for 2.x/3.x (default: `influx_token`); none: nothing is read back,
    # and the API shows what this process stored since it started. `influx_query_database`: the
    # database /query names (default: `influx_database` with v1, `influx_bucket` with v2).
    influx_read_username: str | None = None
    influx_read_password: SecretStr | None = None
    influx_read_token: SecretStr | None = None
    influx_query_database: str | None = None

    registry_path: Path = Path(".fieldlink/registry.db")
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    # Host names the HTTP API answers to (the Host header); anything else gets 400 (DNS rebinding).
    allowed_hosts: list[str] = ["127.0.0.1", "localhost"]
    # The admin API (device lifecycle, /api/admin/...) takes `Authorization: Bearer <admin_token>`;
    # with no token it refuses every request, and production refuses to start that way.
    admin_api: bool = True
    admin_token: SecretStr | None = None
    # With a read token, the read endpoints (/api/devices...) need it (or the admin token).
    read_token: SecretStr | None = None
    # The fleet PKI folder (ca.pem, ca.key, crl.pem, admin.pem, admin.key) the admin API issues and
    # revokes with; and the local broker's PID file, signalled to re-read the CRL.
    fleet_pki_dir: Path | None = None
    broker_pid_file: Path | None = None
    # Readings stamped further than this in the future are refused (`clock_skew`).
    max_clock_skew_s: float = 300.0
    # Readings older than this are refused (`too_old`; a t0 of 0 is 1970). 30 days: far longer than
    # the longest outage a device's flash spool holds (1 MiB by default, about 4.4 hours of readings).
    max_reading_age_s: float = 30 * 24 * 3600.0
    # Distinct sensor names a device may ever use (its InfluxDB series), kept in the registry.
    max_sensors_per_device: int = 128
    write_retry_max_s: float = 30.0
    # A write batch leaves when it holds this many points, or when its first message is this old, or
    # when the window of unacknowledged messages is full.
    write_batch_points: int = Field(default=5000, ge=1)
    write_batch_ms: int = Field(default=200, ge=1)
    # Whether this process stores the devices' statuses as points of the `health` measurement. Every
    # worker receives every status (status is not shared); of several, the first alone stores them.
    store_health: bool = True
    # Messages read but not yet acknowledged (they are acknowledged once their batch is stored); keep
    # it equal to the broker's `max_inflight_messages`.
    max_unacked_messages: int = Field(default=MAX_UNACKED_MESSAGES, ge=1)
    # When InfluxDB fails a write or does not answer within `spool_after_s`, batches go to the spool
    # (checksummed, fsynced records) and are acknowledged; they are written back once InfluxDB answers
    # again, and on start-up. Each process spools into `spool_dir/<its MQTT client id>` (`spool_path`),
    # so workers never share one. At `spool_max_bytes` the messages wait unacknowledged at the broker
    # instead; 0 turns the spool off.
    spool_dir: Path = Path(".fieldlink/spool")
    spool_max_bytes: int = Field(default=1024**3, ge=0)
    spool_after_s: float = Field(default=2.0, gt=0)

    @property
    def spool_path(self) -> Path:
        """This process's spool folder: one per MQTT identity, as one process holds each identity."""
        return self.spool_dir / re.sub(r"[^A-Za-z0-9._-]", "_", self.mqtt_client_id)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        fallback = InitSettingsSource(settings_cls, init_kwargs=_fallbacks.get() or {})
        return init_settings, env_settings, dotenv_settings, file_secret_settings, fallback

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.mqtt_tls:
            for name in ("mqtt_ca", "mqtt_cert", "mqtt_key"):
                path = getattr(self, name)
                if path is None:
                    raise ValueError(f"FIELDLINK_{name.upper()} is required with TLS")
                if not Path(path).is_file():
                    raise ValueError(f"FIELDLINK_{name.upper()}={path} is not a readable file")
        if self.env == "production":
            if not self.mqtt_tls:
                raise ValueError("production needs FIELDLINK_MQTT_TLS=true: devices and data travel over TLS")
            if self.influx_api == "v2" and self.influx_token is None:
                raise ValueError("production with the v2 API needs FIELDLINK_INFLUX_TOKEN")
            if self.admin_api and self.admin_token is None:
                raise ValueError(
                    "production with the admin API needs FIELDLINK_ADMIN_TOKEN (or FIELDLINK_ADMIN_API=false)"
                )
            if "*" in self.allowed_hosts:
                raise ValueError("production needs FIELDLINK_ALLOWED_HOSTS to name the API's host names, not '*'")
        for name in ("admin_token", "read_token"):
            token = getattr(self, name)
            if token is not None and len(token.get_secret_value()) < _MIN_TOKEN_LENGTH:
                raise ValueError(f"FIELDLINK_{name.upper()} must be at least {_MIN_TOKEN_LENGTH} characters")
        return self


def load_settings(fallbacks: dict[str, Any] | None = None) -> Settings:
    """Settings from the environment and `.env`, then `fallbacks`, then the defaults."""
    token = _fallbacks.set(dict(fallbacks or {}))
    try:
        return Settings()
    finally:
        _fallbacks.reset(token)
