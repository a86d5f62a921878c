"""The device lifecycle: add, revoke, rotate, remove. Used by `fieldlink device ...` and the admin API.

Revoking a device takes three steps, in this order (see docs/security.md):

1. the registry marks it revoked: the service refuses its messages from the next one on, including
   any already in flight;
2. the CA's CRL lists its certificates and the broker re-reads it (SIGHUP): it cannot connect again;
3. the broker's dynamic-security plugin disables it, which closes its live session at once.

Mosquitto 2.0 needs both 2 and 3: a CRL does not close a session that is already open, and a disabled
dynamic-security client whose identity comes from its certificate may connect again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from ingest._errors import FleetError, UnknownDevice
from ingest._pki import CertificateAuthority, Credentials, PkiLayout
from ingest._registry import Device, Registry, check_device_id
from shared.identities import ADMIN_IDENTITY

# Mosquitto's dynamic-security plugin listens under this root (`/v1` commands, `/v1/response`).
DYNSEC_TOPIC_ROOT = "$CONTROL/dynamic-security"
_CONTROL_TOPIC = DYNSEC_TOPIC_ROOT + "/v1"
# The broker's program name (/proc/PID/comm), checked before it is signalled.
BROKER_PROGRAM = "mosquitto"


@dataclass(frozen=True)
class BrokerControl:
    """How the fleet reaches the broker: the PID to signal for a CRL reload (a local broker), and an
    MQTT connection as ADMIN_IDENTITY for the dynamic-security plugin."""

    host: str
    port: int
    pki: PkiLayout
    pid_file: Path | None = None
    timeout_s: float = 5.0

    def reload_crl(self) -> bool:
        """SIGHUP the local broker so that it re-reads the CRL; False if there is none to signal."""
        if self.pid_file is None:
            return False
        try:
            pid = int(self.pid_file.read_text().strip())
            program = Path(f"/proc/{pid}/comm").read_text().strip()
        except (OSError, ValueError):
            return False
        if program != BROKER_PROGRAM:  # a stale PID file: never signal a stranger
            return False
        try:
            os.kill(pid, signal.SIGHUP)
        except OSError:
            return False
        return True

    def command(self, *commands: dict[str, Any]) -> list[dict[str, Any]]:
        """Send dynamic-security commands; returns the broker's responses (raises FleetError)."""
        context = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        try:
            context.load_cert_chain(str(self.pki.admin_cert), str(self.pki.admin_key))
        except OSError as exc:
            raise FleetError(f"no admin certificate for the broker ({exc})") from exc
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=ADMIN_IDENTITY)
        client.tls_set_context(context)
        subscribed, answered = threading.Event(), threading.Event()
        responses: list[dict[str, Any]] = []

        def on_connect(c: paho.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
            if not reason.is_failure:
                c.subscribe(_CONTROL_TOPIC + "/response", qos=1)

        def on_message(_c: Any, _u: Any, message: paho.MQTTMessage) -> None:
            with contextlib.suppress(ValueError):
                responses.extend(json.loads(message.payload).get("responses", []))
            answered.set()

        client.on_connect = on_connect
        client.on_subscribe = lambda *_: subscribed.set()
        client.on_message = on_message
        try:
            client.connect(self.host, self.port, keepalive=30)
        except OSError as exc:
            raise FleetError(f"cannot reach the broker at {self.host}:{self.port}: {exc}") from exc
        client.loop_start()
        try:
            if not subscribed.wait(self.timeout_s):
                raise FleetError("the broker did not accept the admin connection in time")
            client.publish(_CONTROL_TOPIC, json.dumps({"commands": list(commands)}), qos=1)
            if not answered.wait(self.timeout_s):
                raise FleetError("the broker's dynamic-security plugin did not answer")
        finally:
            client.disconnect()
            client.loop_stop()
        return responses

    def disable(self, device_id: str) -> None:
        """Close the device's live session now (dynsec needs the client to exist to disable it)."""
        responses = self.command(
            {"command": "createClient", "username": device_id},
            {"command": "disableClient", "username": device_id},
        )
        disabled = [r for r in responses if r.get("command") == "disableClient"]
        if not disabled:
            raise FleetError(f"the broker did not answer the request to disable {device_id!r}")
        if disabled[0].get("error"):
            raise FleetError(f"the broker did not disable {device_id!r}: {disabled[0]['error']}")

    def forget(self, device_id: str) -> None:
        """Drop the device's dynamic-security entry (after `remove`), so the id can be issued again."""
        self.command({"command": "deleteClient", "username": device_id})


@dataclass(frozen=True)
class Revocation:
    device: Device
    crl_reloaded: bool  # the broker re-read the CRL: the device cannot connect again
    session_closed: bool  # the broker closed its live session (if it had one)
    problem: str | None = None  # why a broker step did not happen


class Fleet:
    """Registry, CA and broker, kept in step. Open one per operation (or per request)."""

    def __init__(self, registry: Registry, pki: PkiLayout, broker: BrokerControl | None) -> None:
        self.registry = registry
        self.pki = pki
        self.ca = CertificateAuthority(pki.folder)
        self.broker = broker

    def add(self, device_id: str, labels: dict[str, str] | None = None) -> tuple[Device, Credentials]:
        check_device_id(device_id)
        if self.registry.get(device_id) is not None:
            raise FleetError(f"device {device_id!r} is already registered")
        credentials = self.ca.credentials(device_id)
        return self.registry.add(device_id, credentials.issued, labels), credentials

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """One fleet operation on the broker at a time, across threads and processes (the CLI and the
        admin API): the CRL is read and written whole, and the admin identity has one session."""
        self.pki.folder.mkdir(parents=True, exist_ok=True)
        with (self.pki.folder / ".fleet.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def publish_crl(self) -> bool:
        """Write the CRL from the registry and have the broker re-read it; False if no broker was
        signalled."""
        with self._exclusive():
            self.ca.write_crl(self.pki.crl, self.registry.revoked_certificates())
            return self.broker.reload_crl() if self.broker else False

    def revoke(self, device_id: str) -> Revocation:
        device = self.registry.revoke(check_device_id(device_id))
        crl_reloaded = self.publish_crl()
        problem = None if crl_reloaded else "no running broker was signalled to re-read the CRL"
        session_closed = False
        if self.broker is not None:
            try:
                with self._exclusive():
                    self.broker.disable(device_id)
                session_closed = True
            except FleetError as exc:
                problem = str(exc)
        return Revocation(device, crl_reloaded, session_closed, problem)

    def rotate(self, device_id: str) -> Credentials:
        """A new certificate for the device; the old ones stay valid until `finish_rotation`."""
        device = self._active(device_id)
        credentials = self.ca.credentials(device.id)
        self.registry.add_certificate(device.id, credentials.issued)
        return credentials

    def finish_rotation(self, device_id: str, force: bool = False) -> tuple[int, bool]:
        """Revoke every certificate of the device but the newest, once the device reports the newest
        in use (or with `force`); returns how many were revoked, and whether the broker re-read the
        CRL."""
        device = self._active(device_id)
        newest = device.valid_certificates[-1]
        if not force and device.cert_in_use != newest.sha256:
            raise FleetError(
                f"device {device_id!r} does not use its new certificate yet (its status names "
                f"{(device.cert_in_use or 'none')[:16]}, the new one is {newest.cert_id}); "
                "restart it with the new bundle, or finish with --force"
            )
        revoked = self.registry.revoke_certificates(device.id, keep=newest.sha256)
        return revoked, self.publish_crl() if revoked else True

    def remove(self, device_id: str) -> Revocation | None:
        """Revoke (if active) and forget the device; its certificates stay on the CRL. Returns the
        revocation it made, if any."""
        device = self.registry.get(check_device_id(device_id))
        if device is None:
            raise UnknownDevice(f"device {device_id!r} is not registered")
        revocation = self.revoke(device_id) if device.active else None
        self.registry.remove(device_id)
        if self.broker is not None:
            with contextlib.suppress(FleetError), self._exclusive():
                self.broker.forget(device_id)
        return revocation

    def _active(self, device_id: str) -> Device:
        device = self.registry.get(check_device_id(device_id))
        if device is None:
            raise UnknownDevice(f"device {device_id!r} is not registered")
        if not device.active:
            raise FleetError(f"device {device_id!r} is revoked")
        return device
