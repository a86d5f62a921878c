"""The fieldlink ingest service: MQTT in, verified points out to InfluxDB."""

from ingest._app import create_app
from ingest._errors import IngestError, RegistryError, RejectedMessage, SettingsError, StorageError
from ingest._registry import Device, Registry
from ingest._settings import Settings, load_settings

__all__ = [
    "Device",
    "IngestError",
    "Registry",
    "RegistryError",
    "RejectedMessage",
    "Settings",
    "SettingsError",
    "StorageError",
    "create_app",
    "load_settings",
]
