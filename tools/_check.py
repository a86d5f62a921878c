"""`fieldlink ingest --check-config`: the settings checked and each dependency reached, nothing started,
nothing stored. Each check gives one line and, when it fails, the exit code of its kind of problem: 2 a
setting is wrong, 3 a file or folder is missing or in use, 4 a service does not answer."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
import socket
import sqlite3
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.x509.oid import NameOID

from ingest import Settings
from tools._errors import EnvironmentProblem, ServiceFailed, UsageError

_TIMEOUT_S = 5.0
_CONNACK_CODES = {
    1: "unacceptable protocol version",
    2: "client id rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    exit_code: int = 0  # of the problem, when not ok


def _problem(name: str, kind: type[UsageError | EnvironmentProblem | ServiceFailed], detail: str) -> Check:
    return Check(name, False, detail, kind.exit_code)


def _mqtt_connect_packet(client_id: str, keepalive_s: int) -> bytes:
    """MQTT 3.1.1 CONNECT without a clean session (the service's own session is resumed, never thrown
    away), no will, no user name (the broker takes the certificate's)."""
    ident = client_id.encode()
    body = b"\x00\x04MQTT\x04\x00" + keepalive_s.to_bytes(2, "big") + len(ident).to_bytes(2, "big") + ident
    length, encoded = len(body), b""
    while True:
        byte, length = length % 128, length // 128
        encoded += bytes([byte | (0x80 if length else 0)])
        if not length:
            break
    return b"\x10" + encoded + body


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the broker closed the connection")
        data += chunk
    return data


def check_broker(settings: Settings) -> list[Check]:
    """The client certificate and key as a pair, the certificate's CN against the client id, then a TLS
    handshake and an MQTT CONNECT as the service (answered by CONNACK, then DISCONNECT)."""
    checks: list[Check] = []
    where = f"{'mqtts' if settings.mqtt_tls else 'mqtt'}://{settings.mqtt_host}:{settings.mqtt_port}"
    context: ssl.SSLContext | None = None
    if settings.mqtt_tls:
        assert settings.mqtt_ca and settings.mqtt_cert and settings.mqtt_key  # the settings' own check
        try:
            context = ssl.create_default_context(cafile=str(settings.mqtt_ca))
            context.load_cert_chain(str(settings.mqtt_cert), str(settings.mqtt_key))
        except (OSError, ssl.SSLError) as exc:
            return [
                _problem(
                    "broker",
                    UsageError,
                    f"FIELDLINK_MQTT_CA/CERT/KEY cannot be used together ({exc}): the CA must be PEM, and the "
                    "key must be the certificate's",
                )
            ]
        try:
            cert = x509.load_pem_x509_certificate(settings.mqtt_cert.read_bytes())
            names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            cn = str(names[0].value) if names else None
        except (OSError, ValueError):
            cn = None
        if cn != settings.mqtt_client_id:
            checks.append(
                _problem(
                    "identity",
                    UsageError,
                    f"the certificate {settings.mqtt_cert} names {cn!r}, FIELDLINK_MQTT_CLIENT_ID is "
                    f"{settings.mqtt_client_id!r}: the broker takes the certificate's name as the client id, so "
                    "the two must be equal for the service to find its session again",
                )
            )
    try:
        with (
            socket.create_connection((settings.mqtt_host, settings.mqtt_port), timeout=_TIMEOUT_S) as raw,
            (
                context.wrap_socket(raw, server_hostname=settings.mqtt_host)
                if context is not None
                else contextlib.nullcontext(raw)
            ) as sock,
        ):
            sock.sendall(_mqtt_connect_packet(settings.mqtt_client_id, settings.mqtt_keepalive_s))
            connack = _recv_exactly(sock, 4)
            if connack[0] != 0x20:
                raise ConnectionError(f"the broker answered CONNECT with packet type {connack[0] >> 4}")
            if connack[3] != 0:
                reason = _CONNACK_CODES.get(connack[3], f"code {connack[3]}")
                checks.append(
                    _problem(
                        "broker",
                        UsageError,
                        f"{where} refused CONNECT as {settings.mqtt_client_id}: {reason} (its ACL or "
                        "its users do not know this identity)",
                    )
                )
                return checks
            with contextlib.suppress(OSError):
                sock.sendall(b"\xe0\x00")  # DISCONNECT: the session stays, nothing was acknowledged
    except ssl.SSLCertVerificationError as exc:
        checks.append(
            _problem(
                "broker",
                UsageError,
                f"{where}: its certificate is not trusted by FIELDLINK_MQTT_CA or does not name "
                f"{settings.mqtt_host} ({exc.verify_message})",
            )
        )
        return checks
    except (OSError, ssl.SSLError, ConnectionError) as exc:
        checks.append(
            _problem(
                "broker",
                ServiceFailed,
                f"{where} did not complete a TLS handshake and MQTT CONNECT within {_TIMEOUT_S:g} s: "
                f"{type(exc).__name__}: {exc} (a refused client certificate also ends here)",
            )
        )
        return checks
    tls = "TLS handshake, " if settings.mqtt_tls else ""
    checks.append(Check("broker", True, f"{where}: {tls}MQTT CONNECT as {settings.mqtt_client_id} accepted"))
    return checks


def _auth_headers(username: str | None, password: str | None, token: str | None) -> dict[str, str]:
    if token:
        return {"Authorization": f"Token {token}"}
    if username:
        login = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
        return {"Authorization": f"Basic {login}"}
    return {}


def check_influx(settings: Settings) -> list[Check]:
    """A ping; then an empty write (the server checks the credentials and the database or bucket, and
    stores nothing); then, with read credentials, an InfluxQL `SHOW MEASUREMENTS LIMIT 1`."""
    base = settings.influx_url.rstrip("/")
    if urlsplit(base).scheme not in ("http", "https"):
        return [_problem("influxdb", UsageError, f"FIELDLINK_INFLUX_URL={base} is not an http(s) URL")]
    try:
        ping = httpx.get(f"{base}/ping", timeout=_TIMEOUT_S)
    except httpx.HTTPError as exc:
        return [_problem("influxdb", ServiceFailed, f"{base}/ping: no answer within {_TIMEOUT_S:g} s ({exc!r})")]
    if ping.status_code not in (200, 204):
        return [_problem("influxdb", ServiceFailed, f"{base}/ping answered HTTP {ping.status_code}")]
    version = ping.headers.get("x-influxdb-version", "version not given")
    token = settings.influx_token.get_secret_value() if settings.influx_token else None
    password = settings.influx_password.get_secret_value() if settings.influx_password else None
    if settings.influx_api == "v1":
        target = f"database {settings.influx_database}"
        url, params = f"{base}/write", {"db": settings.influx_database, "precision": "ms"}
        headers = _auth_headers(settings.influx_username, password, token)
    else:
        target = f"bucket {settings.influx_bucket} of org {settings.influx_org}"
        url = f"{base}/api/v2/write"
        params = {"org": settings.influx_org, "bucket": settings.influx_bucket, "precision": "ms"}
        headers = _auth_headers(None, None, token)
    checks = [Check("influxdb", True, f"{base}/ping answered ({version})")]
    try:
        write = httpx.post(url, params=params, content=b"", headers=headers, timeout=_TIMEOUT_S)
    except httpx.HTTPError as exc:
        return [*checks, _problem("influxdb write", ServiceFailed, f"an empty write to {target}: {exc!r}")]
    said = write.text[:200].strip()
    # 400: a server that refuses an empty body (credentials and target were accepted before that).
    if write.status_code in (200, 204, 400):
        checks.append(Check("influxdb write", True, f"{target}: writing allowed (an empty write, nothing stored)"))
    elif write.status_code in (401, 403):
        checks.append(
            _problem(
                "influxdb write",
                UsageError,
                f"{target}: the credentials may not write (HTTP {write.status_code}: {said}); check "
                + ("FIELDLINK_INFLUX_USERNAME/PASSWORD" if settings.influx_api == "v1" else "FIELDLINK_INFLUX_TOKEN"),
            )
        )
    elif write.status_code == 404:
        checks.append(_problem("influxdb write", UsageError, f"{target} does not exist (HTTP 404: {said})"))
    else:
        checks.append(_problem("influxdb write", ServiceFailed, f"{target}: HTTP {write.status_code}: {said}"))
    checks += _check_influx_read(settings, base)
    return checks


def _check_influx_read(settings: Settings, base: str) -> list[Check]:
    read_password = settings.influx_read_password.get_secret_value() if settings.influx_read_password else None
    read_token = settings.influx_read_token or settings.influx_token
    if settings.influx_api == "v1" and settings.influx_read_username:
        headers = _auth_headers(settings.influx_read_username, read_password, None)
        who = f"user {settings.influx_read_username}"
    elif settings.influx_api == "v2" and read_token is not None:
        headers, who = _auth_headers(None, None, read_token.get_secret_value()), "the read token"
    else:
        return [Check("influxdb read", True, "no read credentials: the API shows what this process stored")]
    database = settings.influx_query_database or (
        settings.influx_database if settings.influx_api == "v1" else settings.influx_bucket
    )
    try:
        read = httpx.post(
            f"{base}/query",
            data={"db": database, "q": "SHOW MEASUREMENTS LIMIT 1"},
            headers=headers,
            timeout=_TIMEOUT_S,
        )
    except httpx.HTTPError as exc:
        return [_problem("influxdb read", ServiceFailed, f"InfluxQL /query as {who}: {exc!r}")]
    error = ""
    if read.status_code == 200:
        with contextlib.suppress(ValueError, KeyError, IndexError, TypeError):
            error = read.json()["results"][0].get("error", "")
        if not error:
            return [Check("influxdb read", True, f"InfluxQL on {database} as {who}")]
    detail = error or f"HTTP {read.status_code}: {read.text[:200].strip()}"
    return [_problem("influxdb read", UsageError, f"InfluxQL on {database} as {who} refused: {detail}")]


def _creatable(folder: Path) -> str | None:
    """None if `folder` exists and can be written, or could be made; else why not."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file"
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".fieldlink-probe-", dir=existing))
    except OSError as exc:
        return f"{existing} is not writable ({exc.strerror})"
    return None


def check_registry(settings: Settings) -> Check:
    path = settings.registry_path
    if not path.exists():
        problem = _creatable(path.parent)
        if problem:
            return _problem("registry", EnvironmentProblem, f"{path} does not exist and cannot be made: {problem}")
        return Check("registry", True, f"{path} (not there yet: made at the first start, with no devices)")
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=_TIMEOUT_S)
        try:
            (active,) = db.execute("SELECT count(*) FROM devices WHERE status = 'active'").fetchone()
        finally:
            db.close()
    except sqlite3.Error as exc:
        return _problem("registry", EnvironmentProblem, f"{path} cannot be read as the device registry: {exc}")
    if not os.access(path, os.R_OK | os.W_OK):
        return _problem("registry", EnvironmentProblem, f"{path}: this user cannot write to it")
    return Check("registry", True, f"{path} ({active} active devices)")


def check_spool(settings: Settings) -> Check:
    """The spool folder writable (or creatable) and not held by another process (its flock), opened
    without reading or changing a record."""
    if settings.spool_max_bytes == 0:
        return Check("spool", True, "off (FIELDLINK_SPOOL_MAX_BYTES=0): an outage holds messages at the broker")
    folder = settings.spool_path
    problem = _creatable(folder)
    if problem:
        return _problem("spool", EnvironmentProblem, f"cannot use the spool folder {folder}: {problem}")
    lock = folder / "lock"
    if lock.exists():
        try:
            fd = os.open(lock, os.O_RDWR)
        except OSError as exc:
            return _problem("spool", EnvironmentProblem, f"cannot open {lock}: {exc.strerror}")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return _problem(
                "spool", EnvironmentProblem, f"the spool folder {folder} is in use by another ingest process (running?)"
            )
        finally:
            os.close(fd)  # releases the lock
    records = sum(1 for _ in folder.glob("*.spool")) if folder.is_dir() else 0
    held = f", {records} segment(s) to write back at the start" if records else ""
    return Check("spool", True, f"{folder} (writable, not in use{held})")


def check_config(settings: Settings) -> list[Check]:
    """Every check, in the order the service needs them."""
    head = f"env {settings.env}, InfluxDB {settings.influx_api} API, HTTP {settings.http_host}:{settings.http_port}"
    return [
        Check("settings", True, head),
        *check_broker(settings),
        *check_influx(settings),
        check_registry(settings),
        check_spool(settings),
    ]


def exit_code(checks: list[Check]) -> int:
    """2 before 3 before 4: a wrong setting first, as it may be why something else fails."""
    codes = {c.exit_code for c in checks if not c.ok}
    for code in (UsageError.exit_code, EnvironmentProblem.exit_code, ServiceFailed.exit_code):
        if code in codes:
            return code
    return 0
