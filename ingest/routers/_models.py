"""The HTTP API's response and request bodies."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from ingest._fleet import Revocation
from ingest._pki import Credentials
from ingest._registry import Device


class CertificateOut(BaseModel):
    id: str = Field(description="the first 16 hex digits of the SHA-256, as a device reports it")
    sha256: str
    serial: str | None
    issued_at: float
    not_after: float | None
    revoked_at: float | None
    in_use: bool = Field(description="the device's status named this certificate last")


class DeviceOut(BaseModel):
    id: str
    status: str
    created_at: float
    revoked_at: float | None
    last_seen_ms: int | None = Field(description="the device's own timestamp of its newest stored reading")
    labels: dict[str, str]
    certificates: list[CertificateOut]

    @classmethod
    def of(cls, d: Device) -> DeviceOut:
        return cls(
            id=d.id,
            status=d.status,
            created_at=d.created_at,
            revoked_at=d.revoked_at,
            last_seen_ms=d.last_seen_ms,
            labels=d.labels,
            certificates=[
                CertificateOut(
                    id=c.cert_id,
                    sha256=c.sha256,
                    serial=c.serial,
                    issued_at=c.issued_at,
                    not_after=c.not_after,
                    revoked_at=c.revoked_at,
                    in_use=c.sha256 == d.cert_in_use,
                )
                for c in d.certificates
            ],
        )


class DeviceSummary(BaseModel):
    id: str
    status: str
    created_at: float
    last_seen_ms: int | None
    labels: dict[str, str]
    report: dict[str, Any] | None = Field(
        description="the device's own retained status: online, health counters, a config error"
    )


class LatestOut(BaseModel):
    device: str
    readings: dict[str, dict[str, Any]]


class BundleOut(BaseModel):
    """PEM files for the device; the service keeps no copy of the key: it is returned this once."""

    ca_pem: str
    cert_pem: str
    key_pem: str

    @classmethod
    def of(cls, c: Credentials) -> BundleOut:
        return cls(ca_pem=c.ca_pem.decode(), cert_pem=c.cert_pem.decode(), key_pem=c.key_pem.decode())


class NewDeviceIn(BaseModel):
    id: str = Field(description="the device id: also its certificate's CN and a level of its topics")
    labels: dict[str, str] = Field(default_factory=dict, description="the operator's notes (site, floor), bounded")


class DeviceWithBundle(BaseModel):
    device: DeviceOut
    bundle: BundleOut


class RevocationOut(BaseModel):
    device: DeviceOut
    crl_reloaded: bool = Field(description="the broker re-read the CRL: the device cannot connect again")
    session_closed: bool = Field(description="the broker closed the device's live session")
    problem: str | None

    @classmethod
    def of(cls, r: Revocation) -> RevocationOut:
        return cls(
            device=DeviceOut.of(r.device),
            crl_reloaded=r.crl_reloaded,
            session_closed=r.session_closed,
            problem=r.problem,
        )


class RotationDone(BaseModel):
    device: DeviceOut
    revoked: int = Field(description="how many older certificates were revoked")
    crl_reloaded: bool = Field(description="the broker re-read the CRL: the old certificates cannot connect")
