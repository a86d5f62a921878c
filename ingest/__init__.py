"""The fieldlink ingest service: MQTT in, verified points out to InfluxDB."""

from ingest._app import create_app
from ingest._errors import IngestError, PKIError, RegistryError, RejectedMessage, SettingsError, StorageError
from ingest._pki import CertificateAuthority, Issued, write_atomic
from ingest._registry import Device, Registry
from ingest._settings import Settings, load_settings

__all__ = [
    "CertificateAuthority",
    "Device",
    "IngestError",
    "Issued",
    "PKIError",
    "Registry",
    "RegistryError",
    "RejectedMessage",
    "Settings",
    "SettingsError",
    "StorageError",
    "create_app",
    "load_settings",
    "write_atomic",
]
