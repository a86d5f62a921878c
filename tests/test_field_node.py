"""The deployed file set is complete: a site made with `fieldlink site`, a device added with it, deployed
(tests/fake_mpremote.py: the board's filesystem is a folder), and exactly those files started under
the MicroPython unix port as an ESP32 starts them (/main.py; machine, network, ntptime and onewire
faked in tests/esp32_fake/, so firmware/hal/esp32.py runs). The node joins the site's second network
(the first is not in the air), sets its clock from the second NTP server (the first does not answer),
reaches the broker by the site's name over TLS with that name checked, and its readings are stored."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.boards import fake_tools_env, field_device, run_cli, tree
from tests.support import IngestInfo, StackInfo, wait_until
from tools._process import stop_pid
from tools._simulate import micropython_binary

FAKES = Path(__file__).resolve().parent / "esp32_fake"


def test_deployed_files_start_as_a_node_and_publish(
    stack: StackInfo, ingest: IngestInfo, uid: str, tmp_path: Path
) -> None:
    # `localhost` is the site's name for the broker: the broker's certificate carries it (stack up).
    device, site = field_device(stack.home, uid, broker="localhost", port=stack.mqtt_port)
    assert run_cli(stack.home, "site", "set", site, "--ntp", "ntp-down.example", "--ntp", "ntp.example").returncode == 0
    # Networks in the order the node tries them: one not in the air, then the plant's.
    assert run_cli(stack.home, "site", "wifi", site, "plant-iot", "--remove").returncode == 0
    for ssid in ("spare-ap", "plant-iot"):
        added = run_cli(stack.home, "site", "wifi", site, ssid, stdin="secret-passphrase\n")
        assert added.returncode == 0, added.stderr
    master, slave = os.openpty()
    port = os.ttyname(slave)
    os.close(slave)
    board, log = tmp_path / "board", tmp_path / "log"
    board.mkdir()
    try:
        result = run_cli(stack.home, "deploy", port, device, env=fake_tools_env(board, log))
    finally:
        os.close(master)
    assert result.returncode == 0, result.stderr
    deployed = tree(board)
    assert deployed == tree(stack.home / "build" / device / "board")
    assert not any(name.endswith(".py") for name in deployed if name != "main.py")  # compiled, as on a board

    # Exactly the deployed files: the board's folder first on the path, then MicroPython's frozen
    # modules (ssl), then the fake hardware; nothing of the repository.
    env = dict(
        os.environ, MICROPYPATH=f":.frozen:{FAKES}", FAKE_WIFI="plant-iot:secret-passphrase", FAKE_ADC_UV="1250000"
    )
    output = tmp_path / "node.log"
    with output.open("wb") as out:
        node = subprocess.Popen(
            [micropython_binary(), "-c", "import fake_esp32; fake_esp32.install(); import main"],
            cwd=board,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        points = stack.wait_points(device, 3, timeout=30)
    finally:
        stop_pid(node.pid)
        node.wait()
    log_text = output.read_text()
    assert points[0][1:] == ("soil", 2.5), log_text  # 1.25 V read by the ADC, times the config's scale 2
    lines = log_text.splitlines()
    assert lines[0] == "fake wdt: timeout 30000"  # the board's watchdog, made first
    node_lines = [line for line in lines if not line.startswith("fake wdt: ")]
    assert node_lines[:2] == [f"node {device} starting on esp32 with sensors ['soil']", "wifi: joining spare-ap"]
    assert "fake wifi: spare-ap -> 201" in lines  # no such network in the air
    assert "wifi: joining plant-iot" in lines and "fake wifi: plant-iot -> 1010" in lines
    assert "ntp failed: ntp-down.example OSError(110,)" in lines
    assert "clock set from ntp.example" in lines
    assert f"connected to localhost {stack.mqtt_port}" in lines
    # The node wrote what a board writes: its last good config and its spool, in the bundle folder.
    assert (board / "bundle" / "config.last-good.json").read_bytes() == deployed["bundle/config.json"]
    wait_until(lambda: (board / "bundle" / "spool").is_dir(), timeout=1)
