"""The local stack: Mosquitto with mutual TLS and a per-device ACL, and InfluxDB 1.x, on 127.0.0.1."""

from __future__ import annotations

import getpass
import shutil
import subprocess
import time
from dataclasses import dataclass

import httpx

from ingest import CertificateAuthority
from shared.protocol import ADMIN_IDENTITY, INGEST_IDENTITY
from tools._errors import EnvironmentProblem, ServiceFailed, UsageError
from tools._home import BROKER_NAMES, Home, StackState
from tools._process import pid_alive, port_free, stop_pid, tail, wait_port

_START_TIMEOUT_S = 30.0
_PORT_OPTIONS = {"mosquitto": "mqtt-port", "influxdb": "influx-port", "influxdb rpc": "influx-rpc-port"}

# Devices publish only under their own topics and read only their own config and commands;
# the ingest service reads every device's data and status.
_ACL = f"""# Written by `fieldlink stack up`; identities come from certificate common names.
user {INGEST_IDENTITY}
topic read fl/v1/+/data
topic read fl/v1/+/status

pattern write fl/v1/%u/data
pattern write fl/v1/%u/status
pattern read fl/v1/%u/config
pattern read fl/v1/%u/cmd
"""


def _mosquitto_conf(home: Home, state: StackState) -> str:
    broker_cert, broker_key = home.pki / "broker.pem", home.pki / "broker.key"
    return f"""# Written by `fieldlink stack up`.
per_listener_settings false
user {getpass.getuser()}
persistence true
persistence_location {home.root / "mosquitto"}/
autosave_interval 10
# Its own file logging flushes every line (stdout into a file would not), so the log reads live.
log_dest file {home.logs / "mosquitto.log"}
log_type error
log_type warning
log_type notice
log_type information
connection_messages true
# The ingest service acknowledges after its write; a window this size covers a batch of messages.
max_inflight_messages 100
# Queued for the ingest service's persistent session while it is away.
max_queued_messages 200000
allow_anonymous false
acl_file {home.root / "mosquitto" / "acl"}

listener {state.mqtt_port} 127.0.0.1
tls_version tlsv1.2
cafile {home.pki / "ca.pem"}
certfile {broker_cert}
keyfile {broker_key}
require_certificate true
use_identity_as_username true
"""


def _influx_conf(home: Home, state: StackState) -> str:
    data = home.root / "influxdb"
    return f"""# Written by `fieldlink stack up`.
reporting-disabled = true
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
  log-enabled = false

[continuous_queries]
  enabled = false
"""


def _binary(name: str) -> str | None:
    """The program's path; Debian puts mosquitto in /usr/sbin, often not on a user's PATH."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")


@dataclass
class ServiceStatus:
    name: str
    pid: int | None
    port: int
    running: bool


class Stack:
    def __init__(self, home: Home) -> None:
        self.home = home

    def status(self) -> list[ServiceStatus]:
        state = self.home.load_state()
        result = []
        for name, port in (("mosquitto", state.mqtt_port), ("influxdb", state.influx_port)):
            pid = state.pids.get(name)
            result.append(ServiceStatus(name, pid, port, pid is not None and pid_alive(pid)))
        return result

    def is_up(self) -> bool:
        return all(s.running for s in self.status())

    def prepare_pki(self) -> None:
        ca = CertificateAuthority(self.home.pki)
        if not ca.exists():
            ca.create()
        if not (self.home.pki / "broker.pem").exists():
            ca.issue(
                "localhost",
                self.home.pki / "broker.pem",
                self.home.pki / "broker.key",
                server_names=BROKER_NAMES,
            )
        for identity, (cert, key) in (
            (INGEST_IDENTITY, self.home.ingest_cert()),
            (ADMIN_IDENTITY, self.home.admin_cert()),
        ):
            if not cert.exists():
                ca.issue(identity, cert, key)
        if not self.home.crl_path.exists():
            ca.write_crl(self.home.crl_path, [])

    def up(
        self,
        mqtt_port: int | None = None,
        influx_port: int | None = None,
        influx_rpc_port: int | None = None,
    ) -> str:
        """Start what is not running; returns a sentence saying what happened."""
        state = self.home.load_state()
        running = {s.name for s in self.status() if s.running}
        if running == {"mosquitto", "influxdb"}:
            if any(p is not None for p in (mqtt_port, influx_port, influx_rpc_port)):
                raise UsageError("the stack is already up; run `fieldlink stack down` to change its ports")
            return f"stack already up (mqtts://127.0.0.1:{state.mqtt_port}, http://127.0.0.1:{state.influx_port})"
        missing = [b for b in ("mosquitto", "influxd") if _binary(b) is None]
        if missing:
            raise EnvironmentProblem(
                f"{' and '.join(missing)} not found on PATH; run `make setup` (installs the Debian packages "
                "mosquitto and influxdb) or install them yourself"
            )
        if mqtt_port is not None:
            state.mqtt_port = mqtt_port
        if influx_port is not None:
            state.influx_port = influx_port
        if influx_rpc_port is not None:
            state.influx_rpc_port = influx_rpc_port
        wanted = [("mosquitto", state.mqtt_port), ("influxdb", state.influx_port)]
        if "influxdb" not in running:
            wanted.append(("influxdb rpc", state.influx_rpc_port))
        for name, port in wanted:
            if name.split()[0] not in running and not port_free(port):
                raise EnvironmentProblem(
                    f"port {port} on 127.0.0.1 is busy, so {name} cannot listen there; stop what uses it, "
                    f"or choose another port once with `fieldlink stack up --{_PORT_OPTIONS[name]} N` "
                    "(later runs keep it)"
                )
        self.home.ensure()
        self.prepare_pki()
        self.home.logs.mkdir(exist_ok=True)
        mosq_dir = self.home.root / "mosquitto"
        mosq_dir.mkdir(exist_ok=True)
        (mosq_dir / "acl").write_text(_ACL)
        (mosq_dir / "mosquitto.conf").write_text(_mosquitto_conf(self.home, state))
        influx_dir = self.home.root / "influxdb"
        influx_dir.mkdir(exist_ok=True)
        (influx_dir / "influxdb.conf").write_text(_influx_conf(self.home, state))

        started: list[str] = []
        try:
            if "mosquitto" not in running:
                state.pids["mosquitto"] = self._spawn(
                    "mosquitto", [_binary("mosquitto") or "mosquitto", "-c", str(mosq_dir / "mosquitto.conf")]
                )
                started.append("mosquitto")
            if "influxdb" not in running:
                state.pids["influxdb"] = self._spawn(
                    "influxdb",
                    [_binary("influxd") or "influxd", "run", "-config", str(influx_dir / "influxdb.conf")],
                )
                started.append("influxdb")
            self.home.save_state(state)
            self._wait_ready(state)
            self._create_database(state)
        except Exception:
            for name in started:
                stop_pid(state.pids.pop(name))
            self.home.save_state(state)
            raise
        return (
            f"stack up: mosquitto on mqtts://127.0.0.1:{state.mqtt_port} (mutual TLS), "
            f"influxdb on http://127.0.0.1:{state.influx_port} (database {state.database}); "
            f"state in {self.home.root}"
        )

    def _spawn(self, name: str, argv: list[str]) -> int:
        log = (self.home.logs / f"{name}.log").open("ab")
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
        log.close()
        return process.pid

    def _wait_ready(self, state: StackState) -> None:
        deadline = time.monotonic() + _START_TIMEOUT_S
        for name, port in (("mosquitto", state.mqtt_port), ("influxdb", state.influx_port)):
            pid = state.pids[name]
            while not wait_port(port, 0.5):
                if not pid_alive(pid) or time.monotonic() > deadline:
                    log = self.home.logs / f"{name}.log"
                    raise ServiceFailed(f"{name} did not start; the end of {log}:\n{tail(log)}")

    def _create_database(self, state: StackState) -> None:
        url = f"http://127.0.0.1:{state.influx_port}"
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            try:
                response = httpx.post(f"{url}/query", params={"q": f'CREATE DATABASE "{state.database}"'})
                if response.status_code == 200:
                    return
                detail = f"HTTP {response.status_code}: {response.text[:200]}"
            except httpx.HTTPError as exc:
                detail = str(exc)
            if time.monotonic() > deadline:
                raise ServiceFailed(f"influxdb did not accept CREATE DATABASE: {detail}")
            time.sleep(0.2)

    def down(self) -> str:
        state = self.home.load_state()
        stopped = []
        for name, pid in sorted(state.pids.items()):
            if pid_alive(pid):
                stop_pid(pid)
                stopped.append(name)
        state.pids = {}
        if self.home.state_path.exists():
            self.home.save_state(state)
        return f"stopped {', '.join(stopped)}" if stopped else "stack already down"

    def influx_url(self) -> str:
        return f"http://127.0.0.1:{self.home.load_state().influx_port}"
