"""The admin API: the device lifecycle over HTTP, behind the admin bearer token.

Each request opens its own registry connection and runs in a worker thread: revoking talks to the
broker (CRL reload, dynamic security), which must not hold up the MQTT consumer's event loop.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Response, status

from ingest._errors import FleetError, InvalidDeviceId, InvalidLabels, PKIError, RegistryError, UnknownDevice
from ingest._fleet import BrokerControl, Fleet
from ingest._pki import PkiLayout
from ingest._registry import Registry
from ingest._settings import Settings
from ingest.routers._deps import AdminOnly, SettingsDep
from ingest.routers._models import (
    BundleOut,
    DeviceOut,
    DeviceWithBundle,
    NewDeviceIn,
    RevocationOut,
    RotationDone,
)

router = APIRouter(prefix="/api/admin/devices", tags=["admin"], dependencies=AdminOnly)


@contextmanager
def _open_fleet(settings: Settings) -> Iterator[Fleet]:
    if settings.fleet_pki_dir is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "this service holds no fleet CA: set FIELDLINK_FLEET_PKI_DIR"
        )
    pki = PkiLayout(settings.fleet_pki_dir)
    broker = BrokerControl(settings.mqtt_host, settings.mqtt_port, pki, pid_file=settings.broker_pid_file)
    registry = Registry(settings.registry_path)
    try:
        yield Fleet(registry, pki, broker)
    except UnknownDevice as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    except (InvalidDeviceId, InvalidLabels) as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from exc
    except (RegistryError, FleetError) as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    except PKIError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc
    finally:
        registry.close()


def _fleet(settings: SettingsDep) -> Iterator[Fleet]:
    with _open_fleet(settings) as fleet:
        yield fleet


FleetDep = Annotated[Fleet, Depends(_fleet)]


@router.post("", status_code=status.HTTP_201_CREATED)
def add_device(body: NewDeviceIn, fleet: FleetDep) -> DeviceWithBundle:
    """Register a device and issue its certificate; the key is in this response and nowhere else."""
    device, credentials = fleet.add(body.id, body.labels)
    return DeviceWithBundle(device=DeviceOut.of(device), bundle=BundleOut.of(credentials))


@router.get("/{device_id}")
def show_device(device_id: str, fleet: FleetDep) -> DeviceOut:
    device = fleet.registry.get(device_id)
    if device is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"device {device_id[:80]!r} is not registered")
    return DeviceOut.of(device)


@router.post("/{device_id}/revoke")
def revoke_device(device_id: str, fleet: FleetDep) -> RevocationOut:
    """Refuse the device's data from now on, make the broker refuse its certificates and close its session."""
    return RevocationOut.of(fleet.revoke(device_id))


@router.post("/{device_id}/rotate", status_code=status.HTTP_201_CREATED)
def rotate_device(device_id: str, fleet: FleetDep) -> DeviceWithBundle:
    """A new certificate and key; the old certificate stays valid until the rotation is finished."""
    credentials = fleet.rotate(device_id)
    device = fleet.registry.get(device_id)
    if device is None:  # removed between the two steps
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"device {device_id[:80]!r} is not registered")
    return DeviceWithBundle(device=DeviceOut.of(device), bundle=BundleOut.of(credentials))


@router.post("/{device_id}/rotate/finish")
def finish_rotation(device_id: str, fleet: FleetDep, force: bool = False) -> RotationDone:
    """Revoke the old certificate(s) once the device's status names the new one (or with force)."""
    revoked, crl_reloaded = fleet.finish_rotation(device_id, force=force)
    device = fleet.registry.get(device_id)
    if device is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"device {device_id[:80]!r} is not registered")
    return RotationDone(device=DeviceOut.of(device), revoked=revoked, crl_reloaded=crl_reloaded)


@router.delete("/{device_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_device(device_id: str, fleet: FleetDep) -> Response:
    """Revoke (if active) and forget the device; its certificates stay on the CRL."""
    fleet.remove(device_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
