"""The HTTP API's response and request bodies."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from ingest._fleet import Revocation
from ingest._pki import Credentials
from ingest._registry import Device


def _ms(epoch_s: float | None) -> int | None:
    return None if epoch_s is None else round(epoch_s * 1000)


class CertificateOut(BaseModel):
    id: str = Field(description="the first 16 hex digits of the SHA-256, as a device reports it")
    sha256: str
    serial: str | None
    issued_ms: int = Field(description="epoch ms")
    not_after_ms: int | None = Field(description="epoch ms")
    revoked_ms: int | None = Field(description="epoch ms")
    in_use: bool = Field(description="the device's status named this certificate last")


class DeviceOut(BaseModel):
    id: str
    status: str = Field(description="active or revoked")
    created_ms: int = Field(description="epoch ms")
    revoked_ms: int | None = Field(description="epoch ms")
    last_seen_ms: int | None = Field(description="the device's own timestamp of its newest stored reading, epoch ms")
    labels: dict[str, str]
    certificates: list[CertificateOut]

    @classmethod
    def of(cls, d: Device) -> DeviceOut:
        return cls(
            id=d.id,
            status=d.status,
            created_ms=round(d.created_at * 1000),
            revoked_ms=_ms(d.revoked_at),
            last_seen_ms=d.last_seen_ms,
            labels=d.labels,
            certificates=[
                CertificateOut(
                    id=c.cert_id,
                    sha256=c.sha256,
                    serial=c.serial,
                    issued_ms=round(c.issued_at * 1000),
                    not_after_ms=_ms(c.not_after),
                    revoked_ms=_ms(c.revoked_at),
                    in_use=c.sha256 == d.cert_in_use,
                )
                for c in d.certificates
            ],
        )


class DeviceHealth(BaseModel):
    """What the node reports of itself, when it does (docs/protocol.md, "Status payload")."""

    uptime_s: int | None = None
    heap_free: int | None = Field(default=None, description="free MicroPython heap, bytes")
    heap_largest: int | None = Field(default=None, description="largest free block, bytes")
    boot_count: int | None = None
    rssi_dbm: int | None = Field(default=None, description="Wi-Fi signal, dBm")
    reset_cause: str | None = None
    ntp: str | None = Field(default=None, description="synced or unsynced")
    fw: str | None = Field(default=None, description="firmware version")


class DeviceReport(BaseModel):
    """The device's newest status message (retained at the broker, so a restarted service has it again)."""

    online: bool = Field(description="false: its last will, or a clean stop")
    time_ms: int | None = Field(description="when the device made it, its own clock (epoch ms); none before NTP")
    counters: dict[str, int] = Field(description="queued, dropped, reconnects, read_errors, ...")
    health: DeviceHealth
    error: str | None = Field(description="why the node runs on its last good config, if it does")
    cert: str | None = Field(description="the certificate the node connected with")

    @classmethod
    def of(cls, report: dict[str, Any] | None) -> DeviceReport | None:
        if report is None:
            return None
        return cls(
            online=bool(report.get("online")),
            time_ms=report.get("t"),
            counters=dict(report.get("counters") or {}),
            health=DeviceHealth(**(report.get("health") or {})),
            error=report.get("error"),
            cert=report.get("cert"),
        )


class DeviceSummary(BaseModel):
    id: str
    status: str = Field(description="active or revoked")
    created_ms: int = Field(description="epoch ms")
    last_seen_ms: int | None = Field(description="the device's own timestamp of its newest stored reading, epoch ms")
    labels: dict[str, str]
    report: DeviceReport | None = Field(description="the device's own retained status; none before its first")


class Reading(BaseModel):
    time_ms: int = Field(description="the device's own timestamp, epoch ms")
    value: float


class LatestOut(BaseModel):
    device: str
    readings: dict[str, Reading] = Field(description="each sensor's newest stored reading")
    source: Literal["database", "memory"] = Field(
        description="database: read from InfluxDB (with anything newer this process stored since); memory: "
        "InfluxDB could not be asked, so what this process stored since it started"
    )


class SeriesOut(BaseModel):
    device: str
    since_ms: int
    until_ms: int
    interval_ms: int = Field(description="each point is the mean of the readings of one interval")
    sensors: dict[str, list[tuple[int, float]]] = Field(description="sensor: [[time_ms, value], ...], oldest first")


class SpoolOut(BaseModel):
    enabled: bool
    influx_outage: bool = Field(description="InfluxDB takes no writes: batches go to the spool")
    records: int | None = None
    bytes: int | None = None
    max_bytes: int | None = None
    full: bool | None = None


class WorkerOut(BaseModel):
    worker: int
    identity: str
    pid: int | None
    restarts: int
    state: str = Field(description="running, down, retiring or retired")
    mqtt_connected: bool | None = Field(
        default=None, description="as the worker last reported; None while it runs no process that reported"
    )
    counters: dict[str, int] = Field(
        default_factory=dict, description="this worker's part of the service's counters, over all its processes"
    )
    report_age_ms: int | None = Field(
        default=None, description="milliseconds since its last report (once a second); None for worker 1, this process"
    )


class HealthOut(BaseModel):
    status: Literal["ok", "unavailable"]
    mqtt_connected: bool = Field(description="with --workers N: every running worker is connected")
    consumer_running: bool
    problems: list[str]
    counters: dict[str, int] = Field(description="with --workers N: the sums over every worker")
    spool: SpoolOut | None = Field(description="with --workers N: every running worker's spool together")
    workers: list[WorkerOut] | None = Field(default=None, description="with --workers N: worker 1 (this process) first")


class WriteLatency(BaseModel):
    count: int = Field(description="write requests to InfluxDB since the start")
    mean_ms: float | None
    p99_ms: float | None = Field(description="upper bound of the bucket holding the 99th percentile")


class ServiceOut(BaseModel):
    """The service at a glance, for the dashboard (the numbers of /healthz and /metrics)."""

    time_ms: int = Field(description="the service's clock, epoch ms")
    health: HealthOut
    rejections: dict[str, int] = Field(description="messages refused, by reason")
    queue_messages: int = Field(description="received, not yet taken by the pipeline")
    unacked_messages: int = Field(description="read, not yet acknowledged to the broker")
    write_latency: WriteLatency
    devices_active: int
    devices_online: int


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
