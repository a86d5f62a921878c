"""The front door (issue 12, item 5): an unusable state folder is a clear error for every command, and
`stack up` and `stack status` per part, on a stack of the test's own with a part hung (SIGSTOP), killed
(SIGKILL) or a zombie."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support import StackInfo, fieldlink, mqtt_client, wait_until
from tools._home import Home
from tools._process import free_port, pid_alive, process_name, process_start_time

# Every command that reads or writes the state folder, with arguments that get it there.
HOME_COMMANDS = [
    ["stack", "up"],
    ["stack", "down"],
    ["stack", "status"],
    ["device", "add", "node-1"],
    ["device", "list"],
    ["device", "show", "node-1"],
    ["device", "configure", "node-1", "sensing.json"],
    ["device", "revoke", "node-1"],
    ["device", "rotate", "node-1"],
    ["device", "rm", "node-1"],
    ["ingest"],
    ["simulate", "--devices", "1", "--duration", "1"],
    ["run"],
    ["site", "set", "plant", "--broker", "broker.example"],
    ["site", "wifi", "plant", "net", "--open"],
    ["site", "show", "plant"],
    ["site", "list"],
    ["site", "rm", "plant"],
    ["flash", "/dev/null", "node-1", "--firmware", "fw.bin", "--dry-run"],
    ["deploy", "/dev/null", "node-1", "--dry-run"],
    ["image", "node-1", "--firmware", "fw.bin"],
]

# Runs each command through the real entry point in one interpreter (one start-up, not 21): exit code,
# stderr, and any exception that escaped main() with its traceback.
_RUNNER = """
import contextlib, io, json, sys, traceback
from tools.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    sys.argv = ["fieldlink", *argv]
    err = io.StringIO()
    code = 0
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
            code = None
    results.append({"argv": argv, "code": code, "stderr": err.getvalue()})
print(json.dumps(results))
"""


def _unusable_homes(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "a-file").write_text("not a folder\n")
    homes = {"a file": tmp_path / "a-file", "under a file": tmp_path / "a-file" / "home"}
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        homes["unwritable"] = locked
    else:  # root writes anywhere a mode bit forbids; sysfs refuses even root a folder
        homes["unwritable"] = Path("/sys/fieldlink-home")
    return homes


def test_an_unusable_state_folder_is_exit_code_2_for_every_command(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "sensing.json").write_text('{"sensors": [{"name": "t", "type": "sim", "signal": "temperature"}]}')
    (work / "fw.bin").write_bytes(b"\0" * 64)
    for kind, home in _unusable_homes(tmp_path).items():
        env = dict(os.environ, FIELDLINK_HOME=str(home), FIELDLINK_SPOOL_DIR=str(tmp_path / "spool"))
        done = subprocess.run(
            [sys.executable, "-c", _RUNNER, json.dumps(HOME_COMMANDS)],
            env=env,
            cwd=work,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode == 0, done.stderr
        for result in json.loads(done.stdout):
            what = f"{kind}: fieldlink {' '.join(result['argv'])}"
            assert "Traceback" not in result["stderr"], f"{what}\n{result['stderr']}"
            assert result["code"] == 2, f"{what}: exit {result['code']}\n{result['stderr']}"
            if result["argv"] == ["ingest"] and kind == "unwritable":
                # The service only reads the state folder (a server's may be read-only): the settings
                # it would have found there are what is missing.
                assert "FIELDLINK_MQTT_CA is required with TLS" in result["stderr"]
                continue
            assert f"FIELDLINK_HOME {home} cannot be used" in result["stderr"], f"{what}\n{result['stderr']}"
    assert not Path("/sys/fieldlink-home").exists()


def _pids(stack: StackInfo) -> dict[str, int]:
    return dict(Home(stack.home).load_state().pids)


def _status(stack: StackInfo) -> tuple[int, dict[str, str]]:
    result = fieldlink(stack.home, "stack", "status")
    lines = {line.split()[0]: line for line in result.stdout.splitlines()}
    return result.returncode, lines


def _broker_answers(stack: StackInfo) -> bool:
    pki = Home(stack.home).pki_files
    try:
        client = mqtt_client(stack.mqtt_port, pki.ca_cert, pki.admin_cert, pki.admin_key, "fieldlink:admin")
    except (ConnectionError, OSError):
        return False
    client.loop_stop()
    client.disconnect()
    return True


def test_a_crashed_broker_restarts_while_the_database_hangs(own_stack: StackInfo) -> None:
    pids = _pids(own_stack)
    os.kill(pids["influxdb"], signal.SIGSTOP)  # hung: its port takes connections, nothing answers
    os.kill(pids["mosquitto"], signal.SIGKILL)
    wait_until(lambda: not pid_alive(pids["mosquitto"]))

    code, lines = _status(own_stack)
    assert code == 4
    assert lines["mosquitto"].split()[3] == "down"
    assert "not answering (pid" in lines["influxdb"] and "no answer to HTTP /ping" in lines["influxdb"]

    up = fieldlink(own_stack.home, "stack", "up", timeout=30)
    # The broker is started and stays up; the hung database is left alone and named: exit code 4.
    assert up.returncode == 4, up.stderr
    assert f"mosquitto started on mqtts://127.0.0.1:{own_stack.mqtt_port}" in up.stderr
    assert f"influxdb (pid {pids['influxdb']}) runs but no answer to HTTP /ping" in up.stderr
    assert "Traceback" not in up.stderr
    after = _pids(own_stack)
    assert after["influxdb"] == pids["influxdb"] and pid_alive(pids["influxdb"])
    assert after["mosquitto"] != pids["mosquitto"] and pid_alive(after["mosquitto"])
    assert _broker_answers(own_stack)

    os.kill(pids["influxdb"], signal.SIGCONT)
    code, lines = _status(own_stack)
    assert code == 0, lines
    assert all(line.split()[3] == "up" for line in lines.values())
    again = fieldlink(own_stack.home, "stack", "up")
    assert again.returncode == 0 and again.stdout.startswith("stack already up")
    assert _pids(own_stack) == after


def test_a_killed_database_restarts_and_the_broker_is_left_alone(own_stack: StackInfo) -> None:
    pids = _pids(own_stack)
    os.kill(pids["influxdb"], signal.SIGKILL)
    wait_until(lambda: not pid_alive(pids["influxdb"]))
    code, lines = _status(own_stack)
    assert code == 1
    assert lines["influxdb"].split()[3] == "down" and lines["mosquitto"].split()[3] == "up"

    up = fieldlink(own_stack.home, "stack", "up")
    assert up.returncode == 0, up.stderr
    assert f"mosquitto already running (pid {pids['mosquitto']})" in up.stdout
    assert f"influxdb started on http://127.0.0.1:{own_stack.influx_port}" in up.stdout
    assert _pids(own_stack)["mosquitto"] == pids["mosquitto"]
    # The database answers its users again: the reader reads, the writer writes.
    credentials = json.loads((own_stack.home / "influxdb" / "credentials.json").read_text())
    reader, writer = credentials["reader"], credentials["writer"]
    read = httpx.get(
        f"{own_stack.influx_url}/query",
        params={"db": "fieldlink", "q": "SHOW MEASUREMENTS"},
        auth=(reader["username"], reader["password"]),
    )
    assert read.status_code == 200 and "error" not in read.json()["results"][0]
    write = httpx.post(
        f"{own_stack.influx_url}/write",
        params={"db": "fieldlink"},
        content=b"probe value=1",
        auth=(writer["username"], writer["password"]),
    )
    assert write.status_code == 204


def test_a_zombie_is_not_up(tmp_path: Path) -> None:
    """A part that exited but is not reaped (its parent, here this test, does not wait for it) is down:
    `stack status` says so, whoever the parent is."""
    zombie = subprocess.Popen(["sleep", "60"])
    try:
        start, name = process_start_time(zombie.pid), process_name(zombie.pid)
        os.kill(zombie.pid, signal.SIGKILL)
        wait_until(lambda: Path(f"/proc/{zombie.pid}/stat").read_text().split(") ")[1].startswith("Z"))
        home = tmp_path / "home"
        home.mkdir()
        state = {
            "mqtt_port": free_port(),
            "influx_port": free_port(),
            "pids": {"mosquitto": zombie.pid},
            "started": {"mosquitto": {"start_time": start, "program": name}},
        }
        (home / "stack.json").write_text(json.dumps(state))
        result = fieldlink(home, "stack", "status")
        assert result.returncode == 1, result.stdout + result.stderr
        assert [line.split()[3] for line in result.stdout.splitlines()] == ["down", "down"]
        assert json.loads((home / "stack.json").read_text())["pids"] == {}  # forgotten, never signalled
        assert Path(f"/proc/{zombie.pid}").exists()  # still the test's zombie: nobody reaped it but its parent
    finally:
        zombie.wait()
