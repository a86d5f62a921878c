"""The fieldlink ingest service: MQTT in, verified points out to InfluxDB."""

from ingest._app import create_app, open_spool
from ingest._errors import (
    FleetError,
    IngestError,
    InvalidDeviceId,
    PKIError,
    RegistryError,
    RejectedMessage,
    SettingsError,
    SpoolError,
    SpoolFull,
    StorageError,
    UnknownDevice,
)
from ingest._fleet import BROKER_PROGRAM, DYNSEC_TOPIC_ROOT, BrokerControl, Fleet, Revocation
from ingest._pki import CertificateAuthority, Credentials, Issued, PkiLayout, write_atomic
from ingest._registry import Certificate, Device, Registry, check_device_id, check_labels
from ingest._settings import MAX_UNACKED_MESSAGES, Settings, load_settings
from ingest._workers import WorkerPlan, WorkerPool, plan_workers, serve_with_workers

__all__ = [
    "BROKER_PROGRAM",
    "DYNSEC_TOPIC_ROOT",
    "MAX_UNACKED_MESSAGES",
    "BrokerControl",
    "Certificate",
    "CertificateAuthority",
    "Credentials",
    "Device",
    "Fleet",
    "FleetError",
    "IngestError",
    "InvalidDeviceId",
    "Issued",
    "PKIError",
    "PkiLayout",
    "Registry",
    "RegistryError",
    "RejectedMessage",
    "Revocation",
    "Settings",
    "SettingsError",
    "SpoolError",
    "SpoolFull",
    "StorageError",
    "UnknownDevice",
    "WorkerPlan",
    "WorkerPool",
    "check_device_id",
    "check_labels",
    "create_app",
    "load_settings",
    "open_spool",
    "plan_workers",
    "serve_with_workers",
    "write_atomic",
]
