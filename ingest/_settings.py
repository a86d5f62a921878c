"""Settings from the environment (FIELDLINK_*) or a `.env` file, checked before anything starts."""

from __future__ import annotations

from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from shared.protocol import INGEST_IDENTITY

# Values a caller (the `fieldlink` CLI, from the local stack) offers when neither the environment nor
# `.env` says otherwise.
_fallbacks: ContextVar[dict[str, Any] | None] = ContextVar("fieldlink_settings_fallbacks", default=None)


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
    influx_timeout_s: float = 10.0

    registry_path: Path = Path(".fieldlink/registry.db")
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    # Readings stamped further than this in the future are refused; old ones are fine (buffered).
    max_clock_skew_s: float = 300.0
    write_retry_max_s: float = 30.0

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
        return self


def load_settings(fallbacks: dict[str, Any] | None = None) -> Settings:
    """Settings from the environment and `.env`, then `fallbacks`, then the defaults."""
    token = _fallbacks.set(dict(fallbacks or {}))
    try:
        return Settings()
    finally:
        _fallbacks.reset(token)
