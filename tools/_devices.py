"""Device provisioning: a certificate from the fleet CA, a bundle for the node, a registry entry."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ingest import CertificateAuthority, Device, Registry, RegistryError
from tools._config import Sensing, check_sensing, compile_sensing
from tools._errors import UsageError
from tools._home import Home

RESERVED_PREFIX = "fieldlink-"
DEFAULT_SENSORS: list[dict[str, Any]] = [
    {"name": "temperature", "type": "sim", "signal": "temperature"},
    {"name": "humidity", "type": "sim", "signal": "humidity"},
    {"name": "pressure", "type": "sim", "signal": "pressure"},
]


def default_sensing(sample_interval_ms: int, batch_max_readings: int, batch_max_age_ms: int) -> Sensing:
    return check_sensing(
        {
            "sample_interval_ms": sample_interval_ms,
            "batch": {"max_readings": batch_max_readings, "max_age_ms": batch_max_age_ms},
            "sensors": DEFAULT_SENSORS,
        }
    )


def device_config(home: Home, device_id: str, sensing: Sensing) -> dict[str, Any]:
    state = home.load_state()
    return {
        "device_id": device_id,
        "broker": {
            "host": "127.0.0.1",
            "port": state.mqtt_port,
            "server_hostname": "localhost",
            "keepalive_s": 30,
        },
        "tls": {"ca": "ca.der", "cert": "cert.der", "key": "key.der"},
        **compile_sensing(sensing),
    }


def configure_device(home: Home, device_id: str, sensing: Sensing) -> Path:
    """Put a checked sensing config into an existing device's bundle; returns the config path."""
    path = home.device_dir(device_id) / "config.json"
    if not path.is_file():
        raise UsageError(f"no bundle for device {device_id!r}; add it first with `fieldlink device add`")
    config = json.loads(path.read_text())
    for key in ("sample_interval_ms", "batch", "outbox", "buses", "sensors"):
        config.pop(key, None)
    config.update(compile_sensing(sensing))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(config, indent=2) + "\n")
    tmp.replace(path)
    return path


def _write_der(pem_path: Path, der_path: Path, private: bool) -> None:
    # mbedTLS in MicroPython parses DER only; the PEM files stay for OpenSSL-based tools.
    pem = pem_path.read_bytes()
    if private:
        key = serialization.load_pem_private_key(pem, password=None)
        der = key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        fd = os.open(der_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(der)
    else:
        der_path.write_bytes(x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER))


def add_device(
    home: Home,
    device_id: str,
    *,
    sample_interval_ms: int = 1000,
    batch_max_readings: int = 60,
    batch_max_age_ms: int = 5000,
    sensing: Sensing | None = None,
) -> tuple[Device, Path]:
    if device_id.startswith(RESERVED_PREFIX):
        raise UsageError(f"device ids starting with {RESERVED_PREFIX!r} are reserved for fieldlink's services")
    ca = CertificateAuthority(home.pki)
    registry = Registry(home.registry_path)
    try:
        if registry.get(device_id) is not None:
            raise UsageError(f"device {device_id!r} is already registered; see `fieldlink device list`")
        home.ensure()
        bundle = home.device_dir(device_id)
        if bundle.exists():
            shutil.rmtree(bundle)  # a leftover of an interrupted add: never reuse its key
        bundle.mkdir(parents=True)
        try:
            fingerprint = ca.issue(device_id, bundle / "cert.pem", bundle / "key.pem")
            _write_der(bundle / "cert.pem", bundle / "cert.der", private=False)
            _write_der(bundle / "key.pem", bundle / "key.der", private=True)
            shutil.copyfile(ca.cert_path, bundle / "ca.pem")
            _write_der(ca.cert_path, bundle / "ca.der", private=False)
            if sensing is None:
                sensing = default_sensing(sample_interval_ms, batch_max_readings, batch_max_age_ms)
            config = device_config(home, device_id, sensing)
            (bundle / "config.json").write_text(json.dumps(config, indent=2) + "\n")
            device = registry.add(device_id, fingerprint)
        except BaseException:
            shutil.rmtree(bundle, ignore_errors=True)
            raise
        return device, bundle
    except RegistryError as exc:
        raise UsageError(str(exc)) from exc
    finally:
        registry.close()


def list_devices(home: Home) -> list[Device]:
    if not home.registry_path.exists():
        return []
    registry = Registry(home.registry_path)
    try:
        return registry.list()
    finally:
        registry.close()
