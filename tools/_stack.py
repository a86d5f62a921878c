"""The local stack: Mosquitto with mutual TLS and a per-device ACL, and InfluxDB 1.x, on 127.0.0.1."""

from __future__ import annotations

import getpass
import glob
import json
import logging
import secrets
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.x509.oid import NameOID

from ingest import (
    BROKER_PROGRAM,
    DYNSEC_TOPIC_ROOT,
    MAX_UNACKED_MESSAGES,
    BrokerControl,
    CertificateAuthority,
    Registry,
    Settings,
    WorkerPlan,
    write_atomic,
)
from shared.identities import ADMIN_IDENTITY, INGEST_IDENTITY
from shared.protocol import (
    DATA_SUBSCRIPTION,
    MAX_PAYLOAD_BYTES,
    STATUS_SUBSCRIPTION,
    TOPIC_ROOT,
    ack_topic,
)
from tools._errors import EnvironmentProblem, ServiceFailed, UsageError
from tools._home import BROKER_NAMES, Home, ProcessMark, StackState
from tools._process import pid_alive, port_free, process_name, process_start_time, stop_pid, tail, wait_port

log = logging.getLogger("fieldlink.stack")

_START_TIMEOUT_S = 30.0
# How long a running part has to answer (the broker a TLS handshake, the database /ping) before it
# counts as not answering.
_PROBE_TIMEOUT_S = 2.0
# Each HTTP request of the database's setup (its users and the database).
_QUERY_TIMEOUT_S = 5.0
_PORT_OPTIONS = {"mosquitto": "mqtt-port", "influxdb": "influx-port", "influxdb rpc": "influx-rpc-port"}
# What /proc/PID/comm says for each service's program.
_PROGRAMS = {"mosquitto": BROKER_PROGRAM, "influxdb": "influxd"}
# The program each part runs.
_PROGRAMS_BINARY = {"mosquitto": "mosquitto", "influxdb": "influxd"}

# A part that has just stopped may hold its port a moment longer: a multi-threaded server (influxd)
# reads as exited once its main thread has, while its other threads still close their sockets.
_PORT_RELEASE_S = 5.0


def _port_free_soon(port: int) -> bool:
    deadline = time.monotonic() + _PORT_RELEASE_S
    while not port_free(port):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# Devices publish only under their own topics and read only their own config and commands; the ingest
# service (each of its worker identities) reads every device's data and status; the admin identity
# alone drives the dynamic-security plugin (which kicks a revoked device's live session).
_ACL_HEAD = "# Written by `fieldlink stack up`; identities come from certificate common names.\n"
_ACL_TAIL = f"""user {ADMIN_IDENTITY}
topic readwrite {DYNSEC_TOPIC_ROOT}/#

pattern write {TOPIC_ROOT}/%u/data
pattern write {TOPIC_ROOT}/%u/status
pattern read {TOPIC_ROOT}/%u/config
pattern read {TOPIC_ROOT}/%u/cmd
pattern read {ack_topic("%u")}
"""


def ingest_acl(identity: str) -> str:
    """The ACL entry of one of the ingest service's identities (each worker has one)."""
    return (
        f"user {identity}\ntopic read {DATA_SUBSCRIPTION}\ntopic read {STATUS_SUBSCRIPTION}\n"
        f"topic write {ack_topic('+')}\n\n"
    )


def _acl(ingest_identities: list[str]) -> str:
    return _ACL_HEAD + "".join(ingest_acl(identity) for identity in ingest_identities) + _ACL_TAIL


# TLS 1.2 with forward secrecy and authenticated encryption only; the certificates are EC P-256, so
# ECDHE-ECDSA. TLS 1.3's own suites are all AEAD.
_TLS12_CIPHERS = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305"
_TLS13_SUITES = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"

# The dynamic-security plugin's first state: the admin identity may use the plugin's control topics,
# and nothing else is granted here, so the acl_file decides for everyone else. The default access must
# stay false: a client the plugin knows (one it was told to kick) would otherwise be allowed whatever no
# role of its own says, past the acl_file (seen with 2.0.11: any topic, `#` included). Mosquitto
# rewrites the file itself after every change, so it is written only when missing.
_DYNSEC = {
    "defaultACLAccess": {
        "publishClientSend": False,
        "publishClientReceive": False,
        "subscribe": False,
        "unsubscribe": False,
    },
    "clients": [{"username": ADMIN_IDENTITY, "roles": [{"rolename": "admin"}]}],
    "groups": [],
    "roles": [
        {
            "rolename": "admin",
            "acls": [
                {"acltype": acltype, "topic": DYNSEC_TOPIC_ROOT + "/#", "allow": True}
                for acltype in ("publishClientSend", "publishClientReceive", "subscribePattern")
            ],
        }
    ],
}

INFLUX_ADMIN = "fieldlink-admin"
INFLUX_WRITER = "fieldlink-writer"
INFLUX_READER = "fieldlink-reader"


def _dynsec_plugin() -> Path:
    for pattern in ("/usr/lib/*/mosquitto_dynamic_security.so", "/usr/lib/mosquitto*/mosquitto_dynamic_security.so"):
        found = sorted(glob.glob(pattern))
        if found:
            return Path(found[0])
    raise EnvironmentProblem(
        "Mosquitto's dynamic-security plugin (mosquitto_dynamic_security.so) is not under /usr/lib; it comes "
        "with Debian's mosquitto package (2.0 or later): run `make setup` or install mosquitto 2.x"
    )


def _mosquitto_conf(home: Home, state: StackState, plugin: Path) -> str:
    pki = home.pki_files
    broker_cert, broker_key = pki.broker_cert, pki.broker_key
    return f"""# Written by `fieldlink stack up`.
per_listener_settings false
user {getpass.getuser()}
persistence true
persistence_location {home.root / "mosquitto"}/
autosave_interval 10
# Its own file logging flushes every line (stdout into a file would not), so the log reads live.
log_dest file {home.logs / "mosquitto.log"}
# ISO 8601 local time, as the service's lines have it (not seconds since 1970).
log_timestamp true
log_timestamp_format %Y-%m-%dT%H:%M:%S%z
log_type error
log_type warning
log_type notice
log_type information
connection_messages true
# The ingest service acknowledges after its write; its window of unacknowledged messages is this size.
max_inflight_messages {MAX_UNACKED_MESSAGES}
# Queued for the ingest service's persistent session while it is away.
max_queued_messages 200000
# The service's own payload limit: larger messages are dropped here (QoS 1 still acknowledged).
message_size_limit {MAX_PAYLOAD_BYTES}
allow_anonymous false
acl_file {home.root / "mosquitto" / "acl"}
# Kicks and denies revoked devices at once; administered over MQTT by {ADMIN_IDENTITY} only.
plugin {plugin}
plugin_opt_config_file {home.root / "mosquitto" / "dynsec.json"}

# Every interface once field nodes are to reach it by a public name (`stack up --public-name`).
listener {state.mqtt_port}{"" if state.public_names else " 127.0.0.1"}
# The minimum version (since Mosquitto 2.0): TLS 1.2 and 1.3.
tls_version tlsv1.2
ciphers {_TLS12_CIPHERS}
ciphers_tls1.3 {_TLS13_SUITES}
cafile {pki.ca_cert}
certfile {broker_cert}
keyfile {broker_key}
# Re-read on SIGHUP: a revoked certificate's handshake fails from then on.
crlfile {pki.crl}
require_certificate true
# The certificate's CN is the username and the client id: no one can take another's session.
use_identity_as_username true
use_username_as_clientid true
"""


def _influx_conf(home: Home, state: StackState) -> str:
    data = home.root / "influxdb"
    return f"""# Written by `fieldlink stack up`.
reporting-disabled = true
# The backup/restore (RPC) port knows no users: it must stay on the loopback address.
bind-address = "127.0.0.1:{state.influx_rpc_port}"

[meta]
  dir = "{data / "meta"}"

[data]
  dir = "{data / "data"}"
  wal-dir = "{data / "wal"}"
  query-log-enabled = false

[monitor]
  store-enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{state.influx_port}"
  auth-enabled = true
  # /debug/pprof answers without credentials.
  pprof-enabled = false
  log-enabled = false

[continuous_queries]
  enabled = false
"""


@dataclass(frozen=True)
class Login:
    username: str
    password: str

    def __repr__(self) -> str:  # never a password in a traceback or a log
        return f"Login({self.username!r}, password=***)"

    def auth(self) -> tuple[str, str]:
        return self.username, self.password


@dataclass(frozen=True)
class InfluxCredentials:
    """The local InfluxDB's users: an admin, a writer that may only write to the database (the
    service's writes), and a reader that may only read it (the service's API and dashboard). A
    credentials file from before readers has none until the next `stack up` adds one."""

    admin: Login
    writer: Login
    reader: Login | None = None

    @classmethod
    def new(cls) -> InfluxCredentials:
        return cls(
            Login(INFLUX_ADMIN, secrets.token_urlsafe(24)),
            Login(INFLUX_WRITER, secrets.token_urlsafe(24)),
            Login(INFLUX_READER, secrets.token_urlsafe(24)),
        )


def influx_credentials(home: Home) -> InfluxCredentials | None:
    """The credentials `stack up` made for the local InfluxDB, or None before the first `stack up`."""
    path = home.influx_credentials_path
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        reader = Login(**data["reader"]) if data.get("reader") else None
        return InfluxCredentials(Login(**data["admin"]), Login(**data["writer"]), reader)
    except (ValueError, TypeError, KeyError) as exc:
        raise UsageError(
            f"{path} is damaged ({type(exc).__name__}); restore it, or remove it together with the database "
            f"folder {path.parent} and run `stack up` again"
        ) from exc


def _write_influx_credentials(home: Home, credentials: InfluxCredentials) -> None:
    write_atomic(home.influx_credentials_path, (json.dumps(asdict(credentials), indent=2) + "\n").encode(), 0o600)


def _write_influx_netrc(home: Home, credentials: InfluxCredentials) -> None:
    admin = credentials.admin
    netrc = f"machine 127.0.0.1 login {admin.username} password {admin.password}\n"
    write_atomic(home.influx_netrc_path, netrc.encode(), 0o600)


def _common_name(cert: Path) -> str | None:
    try:
        names = x509.load_pem_x509_certificate(cert.read_bytes()).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except (OSError, ValueError):
        return None
    return str(names[0].value) if names else None


def _server_names(cert: Path) -> set[str]:
    """The DNS names and IP addresses a server certificate carries (none if unreadable)."""
    try:
        alt = x509.load_pem_x509_certificate(cert.read_bytes()).extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        )
    except (OSError, ValueError, x509.ExtensionNotFound):
        return set()
    return {str(n) for n in alt.value.get_values_for_type(x509.DNSName)} | {
        str(a) for a in alt.value.get_values_for_type(x509.IPAddress)
    }


def _public_name(name: str) -> str:
    from tools._site import valid_host

    if not valid_host(name):
        raise UsageError(f"--public-name {name[:80]!r} is not a host name or IPv4 address")
    return name


def _binary(name: str) -> str | None:
    """The program's path; Debian puts mosquitto in /usr/sbin, often not on a user's PATH."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")


@dataclass
class ServiceStatus:
    name: str
    pid: int | None
    port: int
    running: bool
    # Running but not answering: why (None when it answers, or when it is not running, or not asked).
    problem: str | None = None

    @property
    def state(self) -> str:
        """`up`, `down` or `not answering`."""
        if not self.running:
            return "down"
        return "not answering" if self.problem else "up"


def _is_ours(name: str, pid: int, mark: ProcessMark | None) -> bool:
    """True if `pid` is still the process `stack up` started as `name` (alive, same start time and
    program). For a stack.json without marks, the program's name is all there is to check."""
    if not pid_alive(pid):
        return False
    if mark is None:
        return process_name(pid) == _PROGRAMS[name]
    return process_start_time(pid) == mark.start_time and process_name(pid) == mark.program


class Stack:
    def __init__(self, home: Home) -> None:
        self.home = home

    def _check(self, state: StackState) -> list[str]:
        """Drop every recorded process that is gone or no longer ours; one line per PID now someone
        else's, which is left alone."""
        notes = []
        for name, pid in sorted(state.pids.items()):
            if _is_ours(name, pid, state.started.get(name)):
                continue
            if pid_alive(pid):
                notes.append(f"{name}: pid {pid} is no longer ours; not signalled")
            del state.pids[name]
            state.started.pop(name, None)
        return notes

    def _load_checked(self) -> tuple[StackState, list[str]]:
        state = self.home.load_state()
        before = dict(state.pids)
        notes = self._check(state)
        if state.pids != before:
            self.home.save_state(state)
            if "mosquitto" not in state.pids:
                self.home.broker_pid_path.unlink(missing_ok=True)
        return state, notes

    def status(self, probe: bool = True) -> list[ServiceStatus]:
        """Each part: running or not (a zombie is not), and with `probe`, whether a running part answers
        (within _PROBE_TIMEOUT_S)."""
        state, notes = self._load_checked()
        for note in notes:
            log.warning(note)
        services = []
        for name, port in (("mosquitto", state.mqtt_port), ("influxdb", state.influx_port)):
            running = name in state.pids
            problem = self._probe(name, state) if running and probe else None
            services.append(ServiceStatus(name, state.pids.get(name), port, running, problem))
        return services

    def is_up(self) -> bool:
        return all(s.running for s in self.status(probe=False))

    def _probe(self, name: str, state: StackState) -> str | None:
        """None if the running part answers: the broker a TLS handshake with the admin identity, the
        database HTTP /ping; otherwise what went wrong."""
        if name == "mosquitto":
            return self._probe_broker(state.mqtt_port)
        try:
            response = httpx.get(f"http://127.0.0.1:{state.influx_port}/ping", timeout=_PROBE_TIMEOUT_S)
        except httpx.HTTPError as exc:
            return f"no answer to HTTP /ping on port {state.influx_port} within {_PROBE_TIMEOUT_S:g} s ({exc!r})"
        if response.status_code != 204:
            return f"HTTP /ping on port {state.influx_port} answered {response.status_code}"
        return None

    def _probe_broker(self, port: int) -> str | None:
        pki = self.home.pki_files
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=_PROBE_TIMEOUT_S) as sock:
                if not (pki.ca_cert.is_file() and pki.admin_cert.is_file()):
                    return None  # nothing to shake hands with: the port answers, that is all there is
                context = ssl.create_default_context(cafile=str(pki.ca_cert))
                context.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
                with context.wrap_socket(sock, server_hostname=BROKER_NAMES[0]):
                    return None
        except (OSError, ssl.SSLError) as exc:
            return f"no TLS handshake on port {port} within {_PROBE_TIMEOUT_S:g} s ({type(exc).__name__}: {exc})"

    def worker_identities(self) -> list[str]:
        """The ingest worker identities whose certificates `fieldlink ingest --workers N` had this
        machine's CA issue into the PKI folder: the ACL lets each read what the service reads."""
        names = {_common_name(path) for path in self.home.pki.glob("*.worker-*.pem")}
        return sorted(name for name in names if name is not None)

    def serves(self, settings: Settings) -> bool:
        """True if `settings` point the service at this stack with a certificate from its PKI folder."""
        pki = self.home.pki_files
        cert, ca = settings.mqtt_cert, settings.mqtt_ca
        return (
            settings.mqtt_tls
            and cert is not None
            and ca is not None
            and pki.ca_key.is_file()
            and ca.resolve() == pki.ca_cert.resolve()
            and cert.parent.resolve() == pki.folder.resolve()
        )

    def prepare_ingest_workers(self, plan: WorkerPlan) -> list[str]:
        """Certificates for the workers of `plan` that lack one, issued by this stack's CA, and an ACL
        that lists them (the running broker re-reads it). Returns the identities issued."""
        ca = CertificateAuthority(self.home.pki)
        issued = []
        for number, cert, key in plan.missing_credentials():
            ca.issue(plan.identity(number), cert, key)
            issued.append(plan.identity(number))
        # Appended, never rewritten: what else a running broker was told stays (tests add identities).
        acl_path = self.home.root / "mosquitto" / "acl"
        acl = acl_path.read_text() if acl_path.is_file() else _acl([INGEST_IDENTITY])
        listed = {line.split(" ", 1)[1] for line in acl.splitlines() if line.startswith("user ")}
        wanted = [plan.identity(n) for n in range(2, plan.count + 1) if plan.identity(n) not in listed]
        if wanted:
            write_atomic(acl_path, (acl + "\n" + "".join(ingest_acl(identity) for identity in wanted)).encode())
            state = self.home.load_state()
            BrokerControl("127.0.0.1", state.mqtt_port, self.home.pki_files, self.home.broker_pid_path).reload_crl()
        return issued

    def prepare_pki(self, public_names: list[str] | None = None) -> None:
        ca = CertificateAuthority(self.home.pki)
        if not ca.exists():
            ca.create()
        pki = self.home.pki_files
        names = tuple(dict.fromkeys([*BROKER_NAMES, *(public_names or [])]))
        # Issued again when the names a field node checks have changed (`stack up --public-name`).
        if not pki.broker_cert.exists() or _server_names(pki.broker_cert) != set(names):
            ca.issue("localhost", pki.broker_cert, pki.broker_key, server_names=names)
        for identity, (cert, key) in (
            (INGEST_IDENTITY, (pki.ingest_cert, pki.ingest_key)),
            (ADMIN_IDENTITY, (pki.admin_cert, pki.admin_key)),
        ):
            if not cert.exists():
                ca.issue(identity, cert, key)
        # From the registry, every time: a lost or stale CRL must never readmit a revoked certificate.
        registry = Registry(self.home.registry_path)
        try:
            ca.write_crl(pki.crl, registry.revoked_certificates())
        finally:
            registry.close()

    def up(
        self,
        mqtt_port: int | None = None,
        influx_port: int | None = None,
        influx_rpc_port: int | None = None,
        public_names: list[str] | None = None,
    ) -> str:
        """Start whichever part is down and leave a running one alone; returns what happened. Each part
        is started and waited for on its own (bounded), the database's setup runs when the database was
        started now or needs it (new credentials), and a part that fails is stopped only if this call
        started it. ServiceFailed (after starting what it could) when a part would not start, or runs
        but does not answer. `public_names` (None: as before) are the names the broker's certificate
        carries for field nodes."""
        state, notes = self._load_checked()
        for note in notes:
            log.warning(note)
        running = set(state.pids)
        if public_names is not None:
            public_names = [_public_name(name) for name in public_names]
        if "mosquitto" in running and public_names is not None and public_names != state.public_names:
            raise UsageError("the broker is running; run `fieldlink stack down` before changing its public names")
        for name, asked, current in (
            ("mosquitto", mqtt_port, state.mqtt_port),
            ("influxdb", influx_port, state.influx_port),
            ("influxdb", influx_rpc_port, state.influx_rpc_port),
        ):
            if name in running and asked is not None and asked != current:
                raise UsageError(f"{name} is running on its ports; run `fieldlink stack down` to change them")
        if running == {"mosquitto", "influxdb"}:
            probes = {name: self._probe(name, state) for name in ("mosquitto", "influxdb")}
            not_answering = [f"{n} (pid {state.pids[n]}) runs but {p}" for n, p in probes.items() if p]
            if not_answering:
                raise ServiceFailed(
                    "the stack is running, but " + "; ".join(not_answering) + ". Nothing was restarted: stop it "
                    "with `fieldlink stack down`, then `fieldlink stack up`"
                )
            return f"stack already up (mqtts://127.0.0.1:{state.mqtt_port}, http://127.0.0.1:{state.influx_port})"
        to_start = [name for name in ("mosquitto", "influxdb") if name not in running]
        missing = [b for b in (_PROGRAMS_BINARY[n] for n in to_start) if _binary(b) is None]
        if missing:
            raise EnvironmentProblem(
                f"{' and '.join(missing)} not found on PATH; run `make setup` (installs the Debian packages "
                "mosquitto and influxdb) or install them yourself"
            )
        plugin = _dynsec_plugin() if "mosquitto" in to_start else None
        if mqtt_port is not None:
            state.mqtt_port = mqtt_port
        if influx_port is not None:
            state.influx_port = influx_port
        if influx_rpc_port is not None:
            state.influx_rpc_port = influx_rpc_port
        if public_names is not None:
            state.public_names = public_names
        wanted = []
        if "mosquitto" in to_start:
            wanted.append(("mosquitto", state.mqtt_port))
        if "influxdb" in to_start:
            wanted += [("influxdb", state.influx_port), ("influxdb rpc", state.influx_rpc_port)]
        for name, port in wanted:
            if not _port_free_soon(port):
                raise EnvironmentProblem(
                    f"port {port} on 127.0.0.1 is busy, so {name} cannot listen there; stop what uses it, "
                    f"or choose another port once with `fieldlink stack up --{_PORT_OPTIONS[name]} N` "
                    "(later runs keep it)"
                )
        self.home.ensure()
        self.prepare_pki(state.public_names)
        self.home.logs.mkdir(exist_ok=True)
        mosq_dir = self.home.root / "mosquitto"
        influx_dir = self.home.root / "influxdb"
        mosq_dir.mkdir(exist_ok=True)
        influx_dir.mkdir(exist_ok=True)
        if plugin is not None:  # a running broker keeps its files (tests add identities to its ACL)
            write_atomic(mosq_dir / "acl", _acl([INGEST_IDENTITY, *self.worker_identities()]).encode())
            write_atomic(mosq_dir / "mosquitto.conf", _mosquitto_conf(self.home, state, plugin).encode())
            if not (mosq_dir / "dynsec.json").exists():
                write_atomic(mosq_dir / "dynsec.json", (json.dumps(_DYNSEC, indent=2) + "\n").encode(), 0o600)
        if "influxdb" in to_start:
            write_atomic(influx_dir / "influxdb.conf", _influx_conf(self.home, state).encode())
        credentials = influx_credentials(self.home)
        fresh = credentials is None
        needs_setup = fresh
        if credentials is None:
            # Written before the users exist, so that a crash in between cannot lose a password.
            credentials = InfluxCredentials.new()
            _write_influx_credentials(self.home, credentials)
        elif credentials.reader is None:  # made before readers: one more user, saved before it exists
            credentials = replace(credentials, reader=Login(INFLUX_READER, secrets.token_urlsafe(24)))
            _write_influx_credentials(self.home, credentials)
            needs_setup = True
        _write_influx_netrc(self.home, credentials)  # from the credentials, also after a restore

        said: list[str] = []
        problems: list[str] = []
        if "mosquitto" in to_start:
            argv = [_binary("mosquitto") or "mosquitto", "-c", str(mosq_dir / "mosquitto.conf")]
            try:
                self._start(state, "mosquitto", argv, lambda: None)
                public = (
                    f"; field nodes reach it as {', '.join(state.public_names)} on port {state.mqtt_port}"
                    if state.public_names
                    else ""
                )
                said.append(f"mosquitto started on mqtts://127.0.0.1:{state.mqtt_port} (mutual TLS{public})")
            except ServiceFailed as exc:
                problems.append(str(exc))
        else:
            said.append(self._running_line("mosquitto", state, problems))
        database = f"database {state.database}, users in {self.home.influx_credentials_path}"
        if "influxdb" in to_start:
            argv = [_binary("influxd") or "influxd", "run", "-config", str(influx_dir / "influxdb.conf")]
            try:
                self._start(state, "influxdb", argv, lambda: self._prepare_database(state, credentials, fresh))
                said.append(f"influxdb started on http://127.0.0.1:{state.influx_port} ({database})")
            except ServiceFailed as exc:
                problems.append(str(exc))
        else:
            line = self._running_line("influxdb", state, problems)
            if needs_setup and not line.endswith("not answering"):
                try:
                    self._prepare_database(state, credentials, fresh)
                    line += f", set up ({database})"
                except ServiceFailed as exc:
                    problems.append(str(exc))
            said.append(line)
        if problems:
            raise ServiceFailed("\n".join([*said, *problems]))
        return "stack up: " + "; ".join(said) + f"; state in {self.home.root}"

    def _running_line(self, name: str, state: StackState, problems: list[str]) -> str:
        """What `up` says of a part that was running, and the problem if it does not answer."""
        pid = state.pids[name]
        problem = self._probe(name, state)
        if problem is None:
            return f"{name} already running (pid {pid})"
        problems.append(
            f"{name} (pid {pid}) runs but {problem}; it was left alone: stop it with `fieldlink stack down` "
            "(or kill it), then `fieldlink stack up`"
        )
        return f"{name} already running (pid {pid}) but not answering"

    def _start(self, state: StackState, name: str, argv: list[str], setup: Callable[[], None]) -> None:
        """Start one part, wait (bounded) for its port, then run `setup`; if any of that fails, stop
        the part again (it was started here) and raise ServiceFailed."""
        self._spawn(state, name, argv)
        if name == "mosquitto":
            write_atomic(self.home.broker_pid_path, f"{state.pids['mosquitto']}\n".encode())
        self.home.save_state(state)
        try:
            self._wait_ready(state, name)
            setup()
        except BaseException:
            stop_pid(state.pids.pop(name))
            state.started.pop(name, None)
            if name == "mosquitto":
                self.home.broker_pid_path.unlink(missing_ok=True)
            self.home.save_state(state)
            raise

    def _spawn(self, state: StackState, name: str, argv: list[str]) -> None:
        """Start the service and record its PID with what tells that process apart from later ones."""
        log_file = (self.home.logs / f"{name}.log").open("ab")
        process = subprocess.Popen(
            argv, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
        log_file.close()
        state.pids[name] = process.pid
        start_time, program = process_start_time(process.pid), process_name(process.pid)
        if start_time is not None and program is not None:  # else it died at once: _wait_ready says so
            state.started[name] = ProcessMark(start_time, program)

    def _wait_ready(self, state: StackState, name: str) -> None:
        port = state.mqtt_port if name == "mosquitto" else state.influx_port
        deadline = time.monotonic() + _START_TIMEOUT_S
        pid = state.pids[name]
        while not wait_port(port, 0.5):
            if not pid_alive(pid) or time.monotonic() > deadline:
                log_path = self.home.logs / f"{name}.log"
                how = "exited" if not pid_alive(pid) else f"did not listen on port {port} within {_START_TIMEOUT_S:g} s"
                raise ServiceFailed(f"{name} did not start ({how}); the end of {log_path}:\n{tail(log_path)}")

    def _prepare_database(self, state: StackState, credentials: InfluxCredentials, fresh: bool) -> None:
        """The admin user (made on a database that has no users yet), the database, the writer, which
        may write to it and nothing else, and the reader, which may read it and nothing else. Safe to
        repeat. `fresh`: the credentials were made
        just now, for a database that should have no users yet."""
        url = f"http://127.0.0.1:{state.influx_port}/query"
        admin, writer = credentials.admin, credentials.writer

        def query(q: str, auth: tuple[str, str] | None = None) -> httpx.Response:
            # In the body, not the URL: some statements hold passwords.
            return httpx.post(url, data={"q": q}, auth=auth, timeout=_QUERY_TIMEOUT_S)

        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            try:
                response = query("SHOW USERS", admin.auth())
                if response.status_code == 200:
                    break
                detail = f"HTTP {response.status_code}: {response.text[:200].strip()}"
                if "create admin user first" in response.text:
                    response = query(
                        f"CREATE USER \"{admin.username}\" WITH PASSWORD '{admin.password}' WITH ALL PRIVILEGES"
                    )
                    detail = f"HTTP {response.status_code}: {response.text[:200].strip()}"
                elif response.status_code == 401:
                    path = self.home.influx_credentials_path
                    if fresh:  # they name no user of this database: leave room for the real file
                        path.unlink(missing_ok=True)
                        self.home.influx_netrc_path.unlink(missing_ok=True)
                    problem = f"{path} is missing" if fresh else f"it refuses the admin login in {path} ({detail})"
                    raise ServiceFailed(
                        f"influxdb in {path.parent} has users already, and {problem}; restore that file "
                        "(it holds their passwords), or remove the folder's meta, data and wal to start afresh"
                    )
            except httpx.HTTPError as exc:
                detail = str(exc)
            if time.monotonic() > deadline:
                raise ServiceFailed(f"influxdb did not accept its admin user: {detail}")
            time.sleep(0.2)
        users = {row[0] for row in _series_values(response)}
        statements = [f'CREATE DATABASE "{state.database}"']
        # GRANT replaces whatever the user had on the database: the writer writes and cannot read,
        # the reader reads and cannot write.
        for user, privilege in ((writer, "WRITE"), (credentials.reader, "READ")):
            if user is None:
                continue
            if user.username in users:
                statements.append(f"SET PASSWORD FOR \"{user.username}\" = '{user.password}'")
            else:
                statements.append(f"CREATE USER \"{user.username}\" WITH PASSWORD '{user.password}'")
            statements.append(f'GRANT {privilege} ON "{state.database}" TO "{user.username}"')
        for statement in statements:
            response = query(statement, admin.auth())
            errors = [r["error"] for r in response.json().get("results", []) if "error" in r]
            if response.status_code != 200 or errors:
                verb = " ".join(statement.split()[:2])
                raise ServiceFailed(f"influxdb refused {verb}: HTTP {response.status_code} {errors or ''}")

    def down(self, parts: Iterable[str] | None = None) -> str:
        """Stop the parts `stack up` started (`parts`: only these, e.g. those a command started itself)."""
        state, notes = self._load_checked()
        chosen = set(state.pids) if parts is None else set(parts) & set(state.pids)
        stopped = []
        for name in sorted(chosen):
            stop_pid(state.pids.pop(name))
            state.started.pop(name, None)
            stopped.append(name)
        if "mosquitto" not in state.pids:
            self.home.broker_pid_path.unlink(missing_ok=True)
        if self.home.state_path.exists():
            self.home.save_state(state)
        said = f"stopped {', '.join(stopped)}" if stopped else "stack already down"
        return "\n".join([*notes, said])

    def influx_url(self) -> str:
        return f"http://127.0.0.1:{self.home.load_state().influx_port}"


def _series_values(response: httpx.Response) -> list[list[object]]:
    rows: list[list[object]] = []
    for result in response.json().get("results", []):
        for series in result.get("series", []):
            rows += series.get("values", [])
    return rows
