"""Device provisioning on this machine: the fleet lifecycle (ingest's `Fleet`) plus the bundle folder a
node reads. Every id is checked before any file is touched; a bundle is built in a temporary folder
and renamed into place, so an interrupted command never leaves half a bundle or deletes another one."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ingest import (
    BrokerControl,
    Credentials,
    Device,
    Fleet,
    IngestError,
    Issued,
    Registry,
    RegistryError,
    Revocation,
    check_device_id,
    write_atomic,
)
from shared.protocol import valid_id
from tools._config import (
    IDENTITY_FIELDS,
    Broker,
    DeviceConfig,
    Sensing,
    check_sensing,
    compile_sensing,
    device_config,
    with_overrides,
)
from tools._errors import UsageError
from tools._home import BROKER_NAMES, Home

DEFAULT_SENSORS: list[dict[str, Any]] = [
    {"name": "temperature", "type": "sim", "signal": "temperature"},
    {"name": "humidity", "type": "sim", "signal": "humidity"},
    {"name": "pressure", "type": "sim", "signal": "pressure"},
]


def default_sensing(device_id: str = "") -> Sensing:
    """Simulated sensors, every other setting at its default (tools/_config.py); each device's signals
    get seeds of their own (from its id), so that simulated nodes do not all read the same values."""
    return check_sensing(
        {
            "sensors": [
                {**spec, "seed": zlib.crc32(f"{device_id}/{spec['name']}".encode()) & 0x7FFFFFFF}
                for spec in DEFAULT_SENSORS
            ]
        }
    )


def local_broker(home: Home) -> Broker:
    """Where a node reaches this machine's stack."""
    return Broker(host="127.0.0.1", port=home.load_state().mqtt_port, server_hostname=BROKER_NAMES[0])


def _checked(device_id: str) -> str:
    try:
        return check_device_id(device_id)
    except RegistryError as exc:
        raise UsageError(str(exc)) from exc


@contextmanager
def open_fleet(home: Home, *, broker: bool = True) -> Iterator[Fleet]:
    """The fleet of this state folder; with `broker`, revocations reach the local stack's broker."""
    pki = home.pki_files
    try:
        registry = Registry(home.registry_path)
    except IngestError as exc:
        raise UsageError(str(exc)) from exc
    try:
        _fill_migrated_serials(home, registry)
        control = None
        if broker and home.state_path.is_file():
            control = BrokerControl("127.0.0.1", home.load_state().mqtt_port, pki, pid_file=home.broker_pid_path)
        yield Fleet(registry, pki, control)
    except IngestError as exc:  # registry, fleet and PKI refusals: the user asked for what cannot be
        raise UsageError(str(exc)) from exc
    finally:
        registry.close()


def _fill_migrated_serials(home: Home, registry: Registry) -> None:
    """A registry migrated from version 1 knows fingerprints only; the bundles know the serials."""
    for device_id, sha256 in registry.certificates_without_serial():
        pem = home.devices / device_id / "cert.pem"
        if valid_id(device_id) and pem.is_file():
            issued = Issued.from_pem(pem.read_bytes())
            if issued.sha256 == sha256:
                registry.set_serial(sha256, issued.serial)


def _bundle_files(credentials: Credentials) -> dict[str, tuple[bytes, int]]:
    der = credentials.der()
    return {
        "cert.pem": (credentials.cert_pem, 0o644),
        "key.pem": (credentials.key_pem, 0o600),
        "ca.pem": (credentials.ca_pem, 0o644),
        "cert.der": (der["cert.der"], 0o644),
        "key.der": (der["key.der"], 0o600),
        "ca.der": (der["ca.der"], 0o644),
    }


def _write_bundle(home: Home, device_id: str, files: dict[str, tuple[bytes, int]]) -> Path:
    """Put a complete bundle in place of the device's folder in one rename (the old one, if any, is
    kept as `<id>.old` until the new one stands)."""
    bundle = home.device_dir(device_id)
    home.devices.mkdir(parents=True, exist_ok=True)
    staging = home.devices / f".{device_id}.new"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(mode=0o700)
    for name, (data, mode) in files.items():
        write_atomic(staging / name, data, mode)
    old = home.devices / f".{device_id}.old"
    if bundle.exists():
        shutil.rmtree(old, ignore_errors=True)
        bundle.rename(old)
    staging.rename(bundle)
    shutil.rmtree(old, ignore_errors=True)
    return bundle


def add_device(
    home: Home,
    device_id: str,
    *,
    sensing: Sensing | None = None,
    labels: dict[str, str] | None = None,
    **overrides: int | None,
) -> tuple[Device, Path]:
    """Issue, register and write the bundle. `overrides` change settings of the sensing config (the
    file's or the default one) by their names in `tools._config.settings()`: `batch_max_readings`..."""
    _checked(device_id)
    home.ensure()
    with open_fleet(home, broker=False) as fleet:
        if fleet.registry.get(device_id) is not None:
            raise UsageError(f"device {device_id!r} is already registered; see `fieldlink device list`")
        sensing = with_overrides(sensing or default_sensing(device_id), **overrides)
        config = compile_sensing(device_config(device_id, local_broker(home), sensing))
        device, credentials = fleet.add(device_id, labels)
        files = _bundle_files(credentials)
        files["config.json"] = ((json.dumps(config, indent=2) + "\n").encode(), 0o644)
        try:
            return device, _write_bundle(home, device_id, files)
        except BaseException:
            # Its key is lost with the bundle: the certificate goes too. The first error is the news.
            with contextlib.suppress(Exception):
                fleet.registry.revoke(device_id)
                fleet.registry.remove(device_id)
                fleet.publish_crl()
            raise


def configure_device(home: Home, device_id: str, sensing: Sensing) -> Path:
    """Put a checked sensing config into an existing device's bundle; returns the config path."""
    path = home.device_dir(device_id) / "config.json"
    if not path.is_file():
        raise UsageError(f"no bundle for device {device_id!r}; add it first with `fieldlink device add`")
    try:
        current = json.loads(path.read_text())
        if not isinstance(current, dict):
            raise ValueError("not a JSON object")
        identity = {k: v for k, v in current.items() if k in IDENTITY_FIELDS}
        config = DeviceConfig.model_validate({**identity, **sensing.model_dump()})
    except ValueError as exc:  # pydantic's ValidationError is one too
        raise UsageError(f"{path} is damaged ({str(exc)[:300]}); add the device again or restore the file") from exc
    write_atomic(path, (json.dumps(compile_sensing(config), indent=2) + "\n").encode())
    return path


def show_device(home: Home, device_id: str) -> Device:
    with open_fleet(home, broker=False) as fleet:
        device = fleet.registry.get(_checked(device_id))
    if device is None:
        raise UsageError(f"device {device_id!r} is not registered; see `fieldlink device list`")
    return device


def revoke_device(home: Home, device_id: str) -> Revocation:
    with open_fleet(home) as fleet:
        return fleet.revoke(_checked(device_id))


def rotate_device(home: Home, device_id: str) -> tuple[Issued, Path]:
    """A new certificate into the device's bundle; the old one stays valid until `finish_rotation`."""
    bundle = home.device_dir(device_id)
    with open_fleet(home, broker=False) as fleet:
        credentials = fleet.rotate(device_id)
    files = _bundle_files(credentials)
    if not bundle.is_dir():
        return credentials.issued, _write_bundle(home, device_id, files)
    # In place: everything else in the folder is the node's own when it runs from it (the simulator:
    # its spool, sequence epoch, boot count, last good config) and must stay, even while it runs. All
    # new files are written first, then renamed over the old ones in a row, so that an error while
    # writing leaves the old key and certificate together.
    for name, (data, mode) in files.items():
        write_atomic(bundle / f".{name}.new", data, mode)
    for name in files:
        os.replace(bundle / f".{name}.new", bundle / name)
    return credentials.issued, bundle


def finish_rotation(home: Home, device_id: str, force: bool) -> tuple[int, bool]:
    with open_fleet(home) as fleet:
        return fleet.finish_rotation(_checked(device_id), force=force)


def remove_device(home: Home, device_id: str) -> Revocation | None:
    """Revoke (if active) and forget the device, and delete its bundle (its keys)."""
    bundle = home.device_dir(device_id)
    with open_fleet(home) as fleet:
        revocation = fleet.remove(device_id)
    shutil.rmtree(bundle, ignore_errors=True)
    return revocation


def list_devices(home: Home) -> list[Device]:
    if not home.registry_path.exists():
        return []
    with open_fleet(home, broker=False) as fleet:
        return fleet.registry.devices()
