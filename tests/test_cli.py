"""The `fieldlink` command speaks clearly: help everywhere, exit codes that mean something, no tracebacks."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.support import StackInfo, fieldlink
from tools._process import free_port

COMMANDS = [
    [],
    ["stack"],
    ["stack", "up"],
    ["stack", "down"],
    ["stack", "status"],
    ["device"],
    ["device", "add"],
    ["device", "list"],
    ["device", "show"],
    ["device", "revoke"],
    ["device", "rotate"],
    ["device", "rm"],
    ["ingest"],
    ["simulate"],
    ["run"],
    ["site"],
    ["site", "set"],
    ["site", "wifi"],
    ["site", "show"],
    ["site", "list"],
    ["site", "rm"],
    ["flash"],
    ["deploy"],
    ["image"],
    ["monitor"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "fieldlink")
def test_help_everywhere(command: list[str], tmp_path: Path) -> None:
    result = fieldlink(tmp_path, *command, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith("Usage: ")


def test_busy_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        busy = squatter.getsockname()[1]
        result = fieldlink(
            tmp_path / "home",
            "stack",
            "up",
            "--mqtt-port",
            str(busy),
            "--influx-port",
            str(free_port()),
            "--influx-rpc-port",
            str(free_port()),
        )
    assert result.returncode == 3
    assert result.stderr.strip() == (
        f"error: port {busy} on 127.0.0.1 is busy, so mosquitto cannot listen there; stop what uses it, "
        "or choose another port once with `fieldlink stack up --mqtt-port N` (later runs keep it)"
    )
    assert "Traceback" not in result.stderr


def test_a_busy_http_port_is_exit_code_3_for_ingest_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIELDLINK_MQTT_TLS", "false")
    monkeypatch.setenv("FIELDLINK_SPOOL_DIR", str(tmp_path / "spool"))
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        busy = squatter.getsockname()[1]
        result = fieldlink(tmp_path / "home", "ingest", "--port", str(busy))
    assert result.returncode == 3, result.stderr
    assert result.stderr.strip() == (
        f"error: port {busy} on 127.0.0.1 is busy; choose another with --port or FIELDLINK_HTTP_PORT"
    )


def test_stack_up_twice_and_status(stack: StackInfo) -> None:
    again = fieldlink(stack.home, "stack", "up")
    assert again.returncode == 0
    assert again.stdout.strip() == (
        f"stack already up (mqtts://127.0.0.1:{stack.mqtt_port}, http://127.0.0.1:{stack.influx_port})"
    )
    status = fieldlink(stack.home, "stack", "status")
    assert status.returncode == 0
    assert [line.split()[0] for line in status.stdout.splitlines()] == ["mosquitto", "influxdb"]
    assert all(line.split()[3:5] == ["up", "(pid"] for line in status.stdout.splitlines())


def test_down_when_down_says_so(tmp_path: Path) -> None:
    result = fieldlink(tmp_path, "stack", "down")
    assert (result.returncode, result.stdout.strip()) == (0, "stack already down")
    status = fieldlink(tmp_path, "stack", "status")
    assert status.returncode == 1
    assert [line.split()[3] for line in status.stdout.splitlines()] == ["down", "down"]


def test_device_add_without_a_stack_explains(tmp_path: Path) -> None:
    result = fieldlink(tmp_path, "device", "add", "node-1")
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: no fleet CA in {tmp_path / 'pki'}; run `fieldlink stack up` first"


@pytest.mark.parametrize(
    ("device_id", "message"),
    [
        ("Node 1", "is not a valid device id"),
        ("a/b", "is not a valid device id"),
        ("fieldlink:ingest", "is not a valid device id"),  # the service's identity: no device can hold it
        ("fieldlink:admin", "is not a valid device id"),
    ],
)
def test_device_add_refuses_bad_ids(stack: StackInfo, device_id: str, message: str) -> None:
    result = fieldlink(stack.home, "device", "add", device_id)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (stack.home / "devices" / device_id).exists()


def test_device_add_and_list(stack: StackInfo, uid: str) -> None:
    device = f"listed-{uid}"
    added = fieldlink(stack.home, "device", "add", device)
    assert added.returncode == 0
    assert added.stdout.startswith(f"device {device} registered; bundle in ")
    again = fieldlink(stack.home, "device", "add", device)
    assert again.returncode == 2
    assert again.stderr.strip() == f"error: device '{device}' is already registered; see `fieldlink device list`"
    listed = fieldlink(stack.home, "device", "list")
    assert any(line.split()[:2] == [device, "active"] for line in listed.stdout.splitlines())


def test_simulate_needs_the_stack(tmp_path: Path) -> None:
    result = fieldlink(tmp_path, "simulate", "--devices", "1", "--duration", "1")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: the stack is not up; run `fieldlink stack up` first"


def test_simulate_runs_nodes_for_a_duration(stack: StackInfo, ingest: object, uid: str) -> None:
    prefix = f"sim-{uid}"
    result = fieldlink(stack.home, "simulate", "--devices", "2", "--duration", "1.5", "--prefix", prefix)
    assert result.returncode == 0, result.stderr
    assert f"registered {prefix}-1" in result.stdout
    for i in (1, 2):
        assert len(stack.wait_points(f"{prefix}-{i}", 3)) >= 3


def test_ingest_with_bad_settings_explains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIELDLINK_MQTT_CA", str(tmp_path / "missing.pem"))
    result = fieldlink(tmp_path, "ingest")
    assert result.returncode == 2
    assert f"FIELDLINK_MQTT_CA={tmp_path / 'missing.pem'} is not a readable file" in result.stderr
    assert "Traceback" not in result.stderr


def test_stack_json_with_plain_pids_of_a_running_stack_still_works(stack: StackInfo) -> None:
    """A stack.json from before start times were recorded: its PIDs are checked by program name."""
    import json

    path = stack.home / "stack.json"
    current = path.read_text()
    legacy = json.loads(current)
    del legacy["started"]
    path.write_text(json.dumps(legacy))
    try:
        status = fieldlink(stack.home, "stack", "status")
        assert (status.returncode, status.stderr) == (0, "")
        assert all(line.split()[3:5] == ["up", "(pid"] for line in status.stdout.splitlines())
    finally:
        path.write_text(current)


def test_stack_json_with_plain_pids_of_other_programs_signals_nothing(tmp_path: Path) -> None:
    import json
    import subprocess

    stranger = subprocess.Popen(["sleep", "60"])
    try:
        pids = {"mosquitto": stranger.pid, "influxdb": stranger.pid}
        (tmp_path / "stack.json").write_text(json.dumps({"pids": pids}))
        status = fieldlink(tmp_path, "stack", "status")
        assert status.returncode == 1
        assert status.stderr.splitlines() == [
            f"influxdb: pid {stranger.pid} is no longer ours; not signalled",
            f"mosquitto: pid {stranger.pid} is no longer ours; not signalled",
        ]
        down = fieldlink(tmp_path, "stack", "down")
        assert (down.returncode, down.stdout.strip()) == (0, "stack already down")  # status dropped them
        assert stranger.poll() is None
        assert json.loads((tmp_path / "stack.json").read_text())["pids"] == {}
    finally:
        stranger.kill()
        stranger.wait()


def test_stack_down_removes_the_broker_pid_file(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ports = [str(free_port()) for _ in range(3)]
    options = ["--mqtt-port", ports[0], "--influx-port", ports[1], "--influx-rpc-port", ports[2]]
    up = fieldlink(home, "stack", "up", *options)
    try:
        assert up.returncode == 0, up.stderr
        assert (home / "mosquitto" / "mosquitto.pid").read_text().strip().isdigit()
    finally:
        down = fieldlink(home, "stack", "down")
    assert (down.returncode, down.stdout.strip()) == (0, "stopped influxdb, mosquitto")
    assert not (home / "mosquitto" / "mosquitto.pid").exists()


def test_a_spool_folder_in_use_or_unwritable_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ingest import Settings
    from ingest._spool import Spool

    monkeypatch.setenv("FIELDLINK_MQTT_TLS", "false")
    monkeypatch.setenv("FIELDLINK_SPOOL_DIR", str(tmp_path / "spool"))
    held = Spool(Settings(mqtt_tls=False, spool_dir=tmp_path / "spool").spool_path, 1024)  # another process's
    try:
        result = fieldlink(tmp_path / "home", "ingest", "--port", str(free_port()))
    finally:
        held.close()
    assert result.returncode == 3, result.stderr
    assert "is in use by another ingest process; give each its own" in result.stderr
    assert "Traceback" not in result.stderr

    (tmp_path / "file").write_text("")
    monkeypatch.setenv("FIELDLINK_SPOOL_DIR", str(tmp_path / "file"))
    result = fieldlink(tmp_path / "home", "ingest", "--port", str(free_port()))
    assert result.returncode == 3 and "cannot use the spool folder" in result.stderr
    assert "Traceback" not in result.stderr
