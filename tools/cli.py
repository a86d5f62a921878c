"""The `fieldlink` command."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from ingest import IngestError, RegistryError, WorkerPlan, check_labels
from tools._config import DeviceConfig, bounds, compile_sensing, load_sensing, markdown_table, settings
from tools._deploy import site_config
from tools._devices import (
    add_device,
    configure_device,
    finish_rotation,
    list_devices,
    remove_device,
    revoke_device,
    rotate_device,
    show_device,
)
from tools._errors import EnvironmentProblem, FieldlinkError, ServiceFailed, UsageError
from tools._field import COMMANDS as FIELD_COMMANDS
from tools._home import Home
from tools._process import port_free, stop_pid, wait_port
from tools._simulate import start_node
from tools._site import load_site
from tools._stack import Stack

_CONTEXT = {"help_option_names": ["-h", "--help"]}


def _home(writable: bool = True) -> Home:
    """The user's state folder, checked (a UsageError, exit code 2, if it cannot be used)."""
    return Home(writable=writable)


@click.group(context_settings=_CONTEXT)
@click.version_option("0.1.0", prog_name="fieldlink")
def cli() -> None:
    """fieldlink: sensor data from ESP32 nodes to InfluxDB over mutual-TLS MQTT.

    State (PKI, stack, registry, device bundles) lives in ./.fieldlink, or in $FIELDLINK_HOME.
    """


# --- stack -------------------------------------------------------------------------------------------


@cli.group(context_settings=_CONTEXT)
def stack() -> None:
    """The local broker (Mosquitto) and database (InfluxDB) on 127.0.0.1."""


@stack.command("up", context_settings=_CONTEXT)
@click.option("--mqtt-port", type=click.IntRange(1, 65535), help="MQTT over TLS port (default 18883).")
@click.option("--influx-port", type=click.IntRange(1, 65535), help="InfluxDB HTTP port (default 18086).")
@click.option("--influx-rpc-port", type=click.IntRange(1, 65535), help="InfluxDB RPC port (default 18088).")
@click.option(
    "--public-name",
    "public_names",
    multiple=True,
    metavar="HOST",
    help="A name or address field nodes reach the broker by (repeatable): the broker's certificate carries "
    "it and the broker listens on every interface. Later runs keep it.",
)
@click.option("--local-only", is_flag=True, help="Drop the public names: the broker serves 127.0.0.1 alone again.")
def stack_up(
    mqtt_port: int | None,
    influx_port: int | None,
    influx_rpc_port: int | None,
    public_names: tuple[str, ...],
    local_only: bool,
) -> None:
    """Create the development PKI if needed and start Mosquitto and InfluxDB."""
    if public_names and local_only:
        raise UsageError("--public-name and --local-only contradict each other")
    names = [] if local_only else list(public_names) or None
    click.echo(Stack(_home()).up(mqtt_port, influx_port, influx_rpc_port, public_names=names))


@stack.command("down", context_settings=_CONTEXT)
def stack_down() -> None:
    """Stop the broker and the database that `stack up` started."""
    click.echo(Stack(_home()).down())


@stack.command("status", context_settings=_CONTEXT)
def stack_status() -> None:
    """Whether each part is up, down, or running but not answering (the broker a TLS handshake, the
    database HTTP /ping, within 2 s). Exit code 0 if both are up, 1 if one is down, 4 if one runs but
    does not answer."""
    services = Stack(_home()).status()
    for service in services:
        line = f"{service.name:10} port {service.port:<6} {service.state}"
        if service.running:
            line += f" (pid {service.pid})"
        if service.problem:
            line += f": {service.problem}"
        click.echo(line)
    if any(s.problem for s in services):
        sys.exit(ServiceFailed.exit_code)
    if not all(s.running for s in services):
        sys.exit(1)


# --- device ------------------------------------------------------------------------------------------


@cli.group(context_settings=_CONTEXT)
def device() -> None:
    """Provision, inspect, revoke, rotate and remove devices."""


def _labels(pairs: tuple[str, ...]) -> dict[str, str]:
    labels = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise UsageError(f"--label takes KEY=VALUE, got {pair[:80]!r}")
        labels[key] = value
    try:
        return check_labels(labels)
    except RegistryError as exc:
        raise UsageError(str(exc)) from exc


def _setting_options(command: Callable[..., None]) -> Callable[..., None]:
    """An option per number setting of the sensing config (tools/_config.py: name, default, bounds
    and help all come from the model); given, it overrides the --sensing file's value."""
    for name, (_, field) in reversed(settings().items()):
        low, high = bounds(field)
        command = click.option(
            "--" + name.replace("_", "-"),
            name,
            type=click.IntRange(low, high),
            help=f"{(field.description or '').capitalize()} (default {field.default}).",
        )(command)
    return command


@device.command("add", context_settings=_CONTEXT)
@click.argument("device_id")
@click.option(
    "--sensing",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A sensing config (sensors, buses, filters; JSON) instead of the simulated defaults.",
)
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="A label (repeatable), e.g. site=plant-2.")
@click.option(
    "--site", help="The site (`fieldlink site`) whose Wi-Fi and broker the bundle takes; labels it site=NAME."
)
@_setting_options
def device_add(
    device_id: str, sensing: Path | None, labels: tuple[str, ...], site: str | None, **overrides: int | None
) -> None:
    """Issue a certificate for DEVICE_ID, write its bundle and register it."""
    home = _home()
    chosen = _labels(labels)
    if site is not None:
        load_site(home, site).device_settings(site)  # a site a board could not use fails before anything
        chosen["site"] = site
    new, bundle = add_device(
        home,
        device_id,
        sensing=load_sensing(sensing) if sensing else None,
        labels=chosen,
        **overrides,
    )
    if site is not None:
        site_config(home, device_id, site)  # the site's broker and Wi-Fi into the bundle's config
    cert = new.certificates[-1]
    click.echo(f"device {new.id} registered; bundle in {bundle} (certificate {cert.cert_id}, serial {cert.serial})")


@device.command("configure", context_settings=_CONTEXT)
@click.argument("device_id")
@click.argument("sensing", type=click.Path(dir_okay=False, path_type=Path))
def device_configure(device_id: str, sensing: Path) -> None:
    """Check the sensing config SENSING (JSON) and put it into DEVICE_ID's bundle.

    Filters are written ESPHome's way ({"median": {"window_size": 5}}); the bundle gets them
    compiled, which is what the node reads. The node picks the new config up at its next start.
    """
    path = configure_device(_home(), device_id, load_sensing(sensing))
    click.echo(f"{path} updated")


def _when(epoch_s: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch_s)) if epoch_s is not None else "-"


@device.command("list", context_settings=_CONTEXT)
def device_list() -> None:
    """List registered devices: id, status, created, last seen (the device's own newest reading)."""
    devices = list_devices(_home())
    if not devices:
        click.echo("no devices; add one with `fieldlink device add ID`")
        return
    for d in devices:
        seen = _when(d.last_seen_ms / 1000) if d.last_seen_ms is not None else "never"
        click.echo(f"{d.id:24} {d.status:8} created {_when(d.created_at)}  last seen {seen}")


@device.command("show", context_settings=_CONTEXT)
@click.argument("device_id")
def device_show(device_id: str) -> None:
    """Everything the registry holds of DEVICE_ID, its certificates included."""
    d = show_device(_home(), device_id)
    click.echo(f"id          {d.id}")
    click.echo(f"status      {d.status}" + (f" (revoked {_when(d.revoked_at)})" if d.revoked_at else ""))
    click.echo(f"created     {_when(d.created_at)}")
    click.echo(f"last seen   {_when(d.last_seen_ms / 1000) if d.last_seen_ms is not None else 'never'}")
    click.echo("labels      " + (", ".join(f"{k}={v}" for k, v in sorted(d.labels.items())) or "-"))
    click.echo("certificates (id, serial, expires, state):")
    for c in d.certificates:
        state = f"revoked {_when(c.revoked_at)}" if c.revoked_at else "valid"
        if c.sha256 == d.cert_in_use:
            state += ", in use"
        click.echo(f"  {c.cert_id}  {c.serial or '?':32}  {_when(c.not_after)}  {state}")


@device.command("revoke", context_settings=_CONTEXT)
@click.argument("device_id")
def device_revoke(device_id: str) -> None:
    """Take DEVICE_ID out of the fleet now: the service stores nothing more from it, the broker closes
    its session and refuses its certificates from then on."""
    result = revoke_device(_home(), device_id)
    click.echo(f"device {result.device.id} revoked")
    if result.problem:
        raise ServiceFailed(f"revoked in the registry and the CRL, but: {result.problem}")


@device.command("rotate", context_settings=_CONTEXT)
@click.argument("device_id")
@click.option("--finish", is_flag=True, help="Revoke the old certificate(s) once the device uses the new one.")
@click.option("--force", is_flag=True, help="With --finish: revoke the old ones even if the device has not reported.")
def device_rotate(device_id: str, finish: bool, force: bool) -> None:
    """Give DEVICE_ID a new certificate; then, once it runs on it, `rotate --finish` revokes the old.

    The bundle gets the new key and certificate; the node uses them from its next start. Both stay
    valid until --finish, which refuses while the device's status still names the old certificate.
    """
    home = _home()
    if finish:
        count, crl_reloaded = finish_rotation(home, device_id, force)
        click.echo(f"device {device_id}: {count} old certificate(s) revoked")
        if not crl_reloaded:
            raise ServiceFailed(
                "revoked in the registry and the CRL, but no running broker was signalled to re-read it"
            )
        return
    issued, bundle = rotate_device(home, device_id)
    click.echo(
        f"device {device_id}: new certificate {issued.sha256[:16]} in {bundle}; restart the node with it, then run "
        f"`fieldlink device rotate {device_id} --finish`"
    )


@device.command("rm", context_settings=_CONTEXT)
@click.argument("device_id")
def device_rm(device_id: str) -> None:
    """Revoke DEVICE_ID if it is active, delete it from the registry and delete its bundle."""
    revocation = remove_device(_home(), device_id)
    click.echo(f"device {device_id} removed")
    if revocation is not None and revocation.problem:
        raise ServiceFailed(f"revoked in the registry and the CRL, but: {revocation.problem}")


# --- config ------------------------------------------------------------------------------------------


@cli.group(context_settings=_CONTEXT)
def config() -> None:
    """Sensing configs: sensors, buses, filter chains."""


@config.command("check", context_settings=_CONTEXT)
@click.argument("sensing", type=click.Path(dir_okay=False, path_type=Path))
def config_check(sensing: Path) -> None:
    """Check SENSING (JSON) and print the filter chains a node would run; exit 2 with every problem."""
    checked = load_sensing(sensing)
    compiled = compile_sensing(checked)
    for sensor in compiled["sensors"]:
        chain = " -> ".join(json.dumps(f) for f in sensor["filters"]) or "(no filters)"
        click.echo(f"{sensor['name']:20} {sensor['type']:8} {chain}")
    need = sum(size for _, size in checked.heap_estimate())
    click.echo(
        f"{sensing}: {len(compiled['sensors'])} sensor(s), valid; the node needs about {need / 1024:.0f} KB "
        f"of its {checked.heap_bytes / 1024:.0f} KB heap"
    )


@config.command("schema", context_settings=_CONTEXT)
@click.option("--markdown", is_flag=True, help="The keys, defaults and meanings as a Markdown table.")
def config_schema(markdown: bool) -> None:
    """The device config's JSON Schema (or, with --markdown, the table in docs/configuration.md)."""
    click.echo(markdown_table() if markdown else json.dumps(DeviceConfig.model_json_schema(), indent=2))


# --- ingest ------------------------------------------------------------------------------------------


def _stack_fallbacks(home: Home) -> dict[str, Any]:
    """Settings that point the service at the local stack, used where the environment says nothing."""
    if not home.state_path.exists():
        return {}
    state = home.load_state()
    pki = home.pki_files
    fallbacks: dict[str, Any] = {
        "mqtt_port": state.mqtt_port,
        "mqtt_ca": pki.ca_cert,
        "mqtt_cert": pki.ingest_cert,
        "mqtt_key": pki.ingest_key,
        "influx_url": f"http://127.0.0.1:{state.influx_port}",
        "influx_api": "v1",
        "influx_database": state.database,
        "registry_path": home.registry_path,
        # Each ingest process spools into a folder of its own under this one (named by its identity).
        "spool_dir": home.root / "spool",
        # The admin API manages this machine's fleet: its CA, CRL and broker.
        "fleet_pki_dir": home.pki,
        "broker_pid_file": home.broker_pid_path,
    }
    from tools._stack import influx_credentials

    credentials = influx_credentials(home)
    if credentials is not None:  # the write-only user, and the read-only one for the API and dashboard
        fallbacks["influx_username"] = credentials.writer.username
        fallbacks["influx_password"] = credentials.writer.password
        if credentials.reader is not None:
            fallbacks["influx_read_username"] = credentials.reader.username
            fallbacks["influx_read_password"] = credentials.reader.password
    return fallbacks


def _prepare_workers(home: Home, plan: WorkerPlan) -> None:
    """Each worker's certificate: issued here for the local stack, otherwise the operator's to provide."""
    stack = Stack(home)
    if plan.count > 1 and stack.serves(plan.base):
        for identity in stack.prepare_ingest_workers(plan):
            click.echo(f"issued a certificate for the ingest worker identity {identity}")
        return
    missing = plan.missing_credentials()
    if missing:
        files = "; ".join(f"{cert} and {key} (CN {plan.identity(n)})" for n, cert, key in missing)
        raise UsageError(
            f"--workers {plan.count}: each worker connects with a certificate of its own, and these are missing: "
            f"{files}. Issue them from the broker's CA and give each identity the ingest service's ACL "
            '(docs/configuration.md, "Several workers")'
        )


@cli.command(context_settings=_CONTEXT)
@click.option("--host", help="HTTP address (default from FIELDLINK_HTTP_HOST, else 127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65535), help="HTTP port (default 8000).")
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Processes sharing the data subscription (an MQTT shared subscription), each with an identity and "
    "persistent session of its own; the first also serves HTTP.",
)
@click.option(
    "--log-level", default="info", show_default=True, type=click.Choice(["debug", "info", "warning", "error"])
)
@click.option(
    "--log-format",
    default="text",
    show_default=True,
    type=click.Choice(["text", "json"]),
    help="Log lines as text with ISO 8601 times, or one JSON object per line.",
)
@click.option(
    "--check-config",
    is_flag=True,
    help="Check the settings and reach each dependency (the broker: TLS and MQTT CONNECT as the service; "
    "InfluxDB: ping, an empty write, a read; the registry; the spool folder), then exit without starting: "
    "0 all well, 2 a setting is wrong, 3 a file or folder is missing or in use, 4 a service does not answer.",
)
def ingest(
    host: str | None, port: int | None, workers: int, log_level: str, log_format: str, check_config: bool
) -> None:
    """Run the ingest service: MQTT consumer, InfluxDB writer and HTTP API.

    Settings come from FIELDLINK_* variables or .env; what they leave out is taken from the local
    stack in the state folder, if there is one. With --workers N, worker K connects as
    <client id>:worker-K with the certificate and key next to worker 1's (ingest.worker-K.pem,
    ingest.worker-K.key); the local stack issues them.
    """
    import uvicorn

    from ingest import SpoolError, WorkerPool, create_app, load_settings, open_spool, plan_workers, serve_with_workers
    from ingest._logging import configure

    home = _home(writable=False)  # read for the local stack's settings only; a server's may be read-only
    try:
        settings = load_settings(_stack_fallbacks(home))
    except ValidationError as exc:
        problems = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        raise UsageError(f"ingest settings: {problems}") from exc
    host = host or settings.http_host
    port = port or settings.http_port
    if check_config:
        _check_config(settings)
        return
    log_config = configure(log_level, "json" if log_format == "json" else "text")
    if not port_free(port, host):
        raise EnvironmentProblem(f"port {port} on {host} is busy; choose another with --port or FIELDLINK_HTTP_PORT")
    plan = plan_workers(settings, workers)
    _prepare_workers(home, plan)
    try:  # before the server starts, so that a folder in use or unwritable is a clear error
        spool = open_spool(plan.settings(1))
    except SpoolError as exc:
        raise EnvironmentProblem(str(exc)) from exc
    app = create_app(plan.settings(1), spool)
    if plan.needs_pool:
        serve_with_workers(app, WorkerPool(plan, log_level, log_format=log_format))
    uvicorn.run(app, host=host, port=port, log_level=log_level, log_config=log_config)


def _check_config(settings: Any) -> None:
    from tools._check import check_config, exit_code

    checks = check_config(settings)
    for check in checks:
        click.echo(f"{check.name:15} {'ok' if check.ok else 'PROBLEM'}  {check.detail}")
    code = exit_code(checks)
    if code:
        failed = sum(1 for c in checks if not c.ok)
        click.echo(f"error: {failed} problem(s) found; the service was not started", err=True)
        sys.exit(code)
    click.echo("the settings are sound and every dependency answers")


# --- simulate ----------------------------------------------------------------------------------------


def _ensure_devices(home: Home, ids: list[str]) -> None:
    known = {d.id for d in list_devices(home)}
    for device_id in ids:
        if device_id not in known:
            add_device(home, device_id)
            click.echo(f"registered {device_id}")


def _stop_all(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        stop_pid(process.pid)


@cli.command(context_settings=_CONTEXT)
@click.option(
    "--devices",
    "count",
    default=3,
    show_default=True,
    type=click.IntRange(1, 200),
    help="How many nodes to run.",
)
@click.option("--duration", type=click.FloatRange(min=0.1), help="Seconds to sample; default: until Ctrl-C.")
@click.option(
    "--replay",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A CSV of raw readings (header of sensor names, a row per tick) to replay.",
)
@click.option("--prefix", default="node", show_default=True, help="Device ids are PREFIX-1 .. PREFIX-N.")
def simulate(count: int, duration: float | None, replay: Path | None, prefix: str) -> None:
    """Run N copies of the real firmware under the MicroPython unix port, each with its own bundle.

    Missing devices are provisioned first; the stack must be up (`fieldlink stack up`).
    """
    home = _home()
    if not Stack(home).is_up():
        raise UsageError("the stack is not up; run `fieldlink stack up` first")
    ids = [f"{prefix}-{i}" for i in range(1, count + 1)]
    _ensure_devices(home, ids)
    logs = {i: home.logs / f"{i}.log" for i in ids}
    starts = {i: logs[i].stat().st_size if logs[i].exists() else 0 for i in ids}
    started = time.monotonic()
    nodes = [start_node(home, i, logs[i], replay=replay, duration_s=duration) for i in ids]
    click.echo(f"started {count} node(s); logs in {home.logs}")
    failed = _wait_nodes(nodes, ids, duration)
    _simulation_summary(ids, nodes, logs, starts, time.monotonic() - started)
    if failed:
        raise ServiceFailed(f"node(s) {', '.join(failed)} exited with an error; see their logs in {home.logs}")


# The node's closing line on its log: its counters as JSON (firmware/app.py).
_STOPPED = "stopped: "
_SUMMARY_COUNTERS = ("queued", "dropped", "resent", "reconnects", "read_errors")


def _simulation_summary(
    ids: list[str], nodes: list[subprocess.Popen[bytes]], logs: dict[str, Path], starts: dict[str, int], ran_s: float
) -> None:
    """What each node reported when it stopped (its counters), one line per node."""
    click.echo(f"simulation ended after {ran_s:.1f} s:")
    for device_id, node in zip(ids, nodes, strict=True):
        counters: dict[str, Any] = {}
        try:
            with logs[device_id].open("rb") as f:
                f.seek(starts[device_id])
                text = f.read().decode("utf-8", "replace")
            if _STOPPED in text:
                counters = json.loads(text.rsplit(_STOPPED, 1)[1].splitlines()[0])
        except (OSError, ValueError, IndexError):
            counters = {}
        code = node.returncode
        how = "ok" if code in (0, -signal.SIGTERM) else f"exited with {code}"
        shown = ", ".join(f"{name} {counters[name]}" for name in _SUMMARY_COUNTERS if name in counters)
        click.echo(f"  {device_id:20} {how:14} {shown or 'no counters reported (stopped early)'}")


def _wait_nodes(nodes: list[subprocess.Popen[bytes]], ids: list[str], duration: float | None) -> list[str]:
    try:
        if duration is None:
            while any(n.poll() is None for n in nodes):
                time.sleep(0.5)
        else:
            columns = (TextColumn("sampling"), BarColumn(), TimeRemainingColumn())
            with Progress(*columns, transient=True) as progress:
                task = progress.add_task("sampling", total=duration)
                start = time.monotonic()
                while any(n.poll() is None for n in nodes):
                    progress.update(task, completed=min(duration, time.monotonic() - start))
                    time.sleep(0.2)
    except KeyboardInterrupt:
        click.echo("stopping nodes")
        _stop_all(nodes)
    return [i for i, n in zip(ids, nodes, strict=True) if n.wait() not in (0, -signal.SIGTERM)]


# --- run ---------------------------------------------------------------------------------------------


@cli.command(context_settings=_CONTEXT)
@click.option("--devices", "count", default=3, show_default=True, type=click.IntRange(1, 50))
@click.option("--http-port", default=8000, show_default=True, type=click.IntRange(1, 65535))
def run(count: int, http_port: int) -> None:
    """The whole local system: stack, ingest service and simulated nodes; Ctrl-C stops it all."""
    home = _home()
    stack_ = Stack(home)
    # Only the parts that were down are this command's to stop again.
    started_parts = [s.name for s in stack_.status(probe=False) if not s.running]
    # `kill` and service managers send SIGTERM: clean up as for Ctrl-C.
    signal.signal(signal.SIGTERM, _interrupt)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        click.echo(stack_.up())
        ids = [f"node-{i}" for i in range(1, count + 1)]
        _ensure_devices(home, ids)
        if not port_free(http_port):
            raise EnvironmentProblem(f"port {http_port} on 127.0.0.1 is busy; choose another with --http-port")
        ingest_log = (home.logs / "ingest.log").open("ab")
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "tools", "ingest", "--port", str(http_port)],
                stdout=ingest_log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
        if not wait_port(http_port, 20):
            raise ServiceFailed(f"the ingest service did not start; see {home.logs / 'ingest.log'}")
        processes += [start_node(home, i, home.logs / f"{i}.log") for i in ids]
        influx = stack_.influx_url()
        db = home.load_state().database
        click.echo(
            f"""
fieldlink is running: {count} simulated nodes -> Mosquitto (mutual TLS) -> ingest -> InfluxDB.

  Dashboard:        http://127.0.0.1:{http_port}/
  API docs:         http://127.0.0.1:{http_port}/docs
  Metrics:          curl http://127.0.0.1:{http_port}/metrics
  Latest readings:  curl http://127.0.0.1:{http_port}/api/devices/node-1/latest
  Devices:          curl http://127.0.0.1:{http_port}/api/devices
  Service health:   curl http://127.0.0.1:{http_port}/healthz
  In InfluxDB:      curl --netrc-file {home.influx_netrc_path} -G {influx}/query \\
                      --data-urlencode db={db} \\
                      --data-urlencode "q=SELECT * FROM readings ORDER BY time DESC LIMIT 9"
  Logs:             {home.logs}

Press Ctrl-C to stop everything this command started."""
        )
        next_summary = time.monotonic() + _SUMMARY_EVERY_S
        while all(p.poll() is None for p in processes):
            time.sleep(0.5)
            if time.monotonic() >= next_summary:
                next_summary += _SUMMARY_EVERY_S
                click.echo(_summary_line(http_port))
        dead = [p for p in processes if p.poll() is not None]
        raise ServiceFailed(f"a process exited unexpectedly ({dead[0].args!r}); see the logs in {home.logs}")
    except KeyboardInterrupt:
        click.echo("\nstopping")
    finally:
        _stop_all(processes)
        if started_parts:
            click.echo(stack_.down(started_parts))


_SUMMARY_EVERY_S = 5.0


def _summary_line(http_port: int) -> str:
    """One line of what the service did so far: devices online, points stored, rejections."""
    import httpx

    stamp = time.strftime("%H:%M:%S")
    try:
        service = httpx.get(f"http://127.0.0.1:{http_port}/api/service", timeout=2).json()
        counters = service["health"]["counters"]
        line = (
            f"{stamp}  devices online {service['devices_online']}/{service['devices_active']}"
            f" · points stored {counters.get('stored_points', 0):,} · rejected {counters.get('rejected', 0):,}"
        )
        problems = service["health"]["problems"]
        return line + (f" · {'; '.join(problems)}" if problems else "")
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        return f"{stamp}  the ingest service does not answer ({type(exc).__name__})"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


# flash, deploy, image, monitor and site (tools/_field.py)
for _command in FIELD_COMMANDS:
    cli.add_command(_command)


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except FieldlinkError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except IngestError as exc:  # a refusal of the registry, the fleet or the PKI not mapped above
        click.echo(f"error: {exc}", err=True)
        sys.exit(UsageError.exit_code)
    except (OSError, sqlite3.Error) as exc:  # a full disk, a locked registry, a folder not ours
        click.echo(f"error: {exc}", err=True)
        sys.exit(FieldlinkError.exit_code)
