"""`fieldlink flash` and `deploy` without a board: the exact commands of a dry run, every refusal before
anything is written, and deployments to a folder that stands in for the board's filesystem (esptool and
mpremote replaced by tests/fake_esptool.py and tests/fake_mpremote.py, which log what they are given;
the hash script deploy sends to the board runs on the MicroPython unix port)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.boards import (
    ADC_SENSING,
    Result,
    fake_tools_env,
    field_device,
    logged,
    micropython_firmware,
    run_cli,
    tree,
)
from tests.support import StackInfo
from tools._deploy import BOARD_MAIN, node_sources

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


@pytest.fixture
def port() -> Iterator[str]:
    """A serial device nobody holds (the slave side of a pseudo-terminal)."""
    master, slave = os.openpty()
    name = os.ttyname(slave)
    os.close(slave)
    yield name
    os.close(master)


def expected_files(home: Path, device: str) -> set[str]:
    """What a board must hold: /main.py, every node module compiled, the bundle's config and DER files."""
    modules = {p.with_suffix(".mpy").as_posix() for p in node_sources()}
    assert {"firmware/spool.mpy", "firmware/hal/esp32.mpy", "shared/protocol.mpy"} <= modules
    assert not any("/sim/" in m for m in modules) and "shared/decode.mpy" not in modules
    return {"main.py", *modules, *(f"bundle/{n}" for n in ("config.json", "ca.der", "cert.der", "key.der"))}


def run(home: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    # flash waits for the new MicroPython's first boot: no board here, no wait.
    return run_cli(home, *args, env={"FIELDLINK_BOOT_WAIT_S": "0", **(env or {})})


def test_dry_run_flash_prints_the_exact_commands(stack: StackInfo, uid: str, tmp_path: Path) -> None:
    device, _ = field_device(stack.home, uid, broker="plant.example", port=18883)
    firmware = micropython_firmware(tmp_path / "ESP32_GENERIC-20250911-v1.26.1.bin")
    result = run_cli(stack.home, "flash", "/dev/ttyUSB7", device, "--firmware", str(firmware), "--dry-run")
    assert result.returncode == 0, result.stderr
    esptool = f"{VENV_BIN / 'esptool'} --chip esp32 --port /dev/ttyUSB7 --baud 460800"
    mpremote = f"{VENV_BIN / 'mpremote'} connect /dev/ttyUSB7"
    staging = stack.home / "build" / device / "board"
    hashes = stack.home / "build" / device / "hashes.py"
    lines = result.stdout.splitlines()
    assert lines[:8] == [
        "# 1. erase the flash",
        f"{esptool} erase-flash",
        "# 2. write MicroPython",
        f"{esptool} write-flash 0x1000 {firmware}",
        "# 3. wait for its first boot",
        "sleep 5",
        "# 4. read the board's files",
        f"{mpremote} run {hashes}",
    ]
    assert lines[-5:] == [
        f"# {lines[-5][2:3]}. verify on the board (each file's sha256 as in {staging})",
        f"{mpremote} run {hashes}",
        f"# {int(lines[-5][2:3]) + 1}. restart the board",
        f"{mpremote} reset",
        f"# dry run: nothing was written; {len(expected_files(stack.home, device))} files staged in {staging}",
    ]
    # The copies: every file of the deployment once, from the staging folder, each folder made first.
    copies, made = [], []
    for line in lines[8:-5]:
        words = line.replace(" \\", "").split()
        if words[0] == "#":
            continue
        if words[0] == str(VENV_BIN / "mpremote"):
            assert words[1:3] == ["connect", "/dev/ttyUSB7"]
            words = words[3:]
        words = [w for w in words if w != "+"]
        if words[:2] == ["fs", "mkdir"]:
            made.append(words[2])
        else:
            assert words[:3] == ["fs", "cp", "-f"], line
            source, dest = words[3], words[4]
            assert source == str(staging / dest[1:])
            assert {f":{d}" for d in Path(dest[1:]).parents if str(d) != "."} <= set(made), dest
            copies.append(dest[1:])
    assert sorted(copies) == sorted(expected_files(stack.home, device))
    assert made == [":bundle", ":firmware", ":shared", ":firmware/drivers", ":firmware/hal", ":shared/filterlib"]
    # What the commands would copy is what the board needs: the start, the bundle with the site's settings.
    assert (staging / "main.py").read_text() == BOARD_MAIN
    config = json.loads((staging / "bundle" / "config.json").read_text())
    assert config["broker"] == {"host": "plant.example", "port": 18883, "keepalive_s": 30, "timeout_ms": 10000}
    assert config["wifi"] == {
        "networks": [{"ssid": "plant-iot", "password": "secret-passphrase"}],
        "ntp_hosts": ["pool.ntp.org"],
    }
    bundle = stack.home / "devices" / device
    assert (staging / "bundle" / "key.der").read_bytes() == (bundle / "key.der").read_bytes()
    assert json.loads((bundle / "config.json").read_text()) == config  # the bundle took the site's settings
    assert "secret-passphrase" not in result.stdout + result.stderr


def test_make_flash_dry_run(stack: StackInfo, uid: str, tmp_path: Path) -> None:
    """The Makefile's target passes PORT, DEVICE, FIRMWARE and DRY_RUN through (setup taken as done)."""
    device, _ = field_device(stack.home, uid)
    firmware = micropython_firmware(tmp_path / "fw.bin")
    result = subprocess.run(
        [
            "make",
            "-s",
            "-o",
            ".venv/.installed",
            "flash",
            "PORT=/dev/ttyUSB3",
            f"DEVICE={device}",
            f"FIRMWARE={firmware}",
            "DRY_RUN=1",
        ],
        cwd=ROOT,
        env=dict(os.environ, FIELDLINK_HOME=str(stack.home)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"--port /dev/ttyUSB3 --baud 460800 write-flash 0x1000 {firmware}" in result.stdout
    assert result.stdout.strip().endswith(f"files staged in {stack.home / 'build' / device / 'board'}")
    usage = subprocess.run(["make", "-s", "-o", ".venv/.installed", "flash"], cwd=ROOT, capture_output=True, text=True)
    assert usage.returncode != 0
    assert "usage: make flash PORT=/dev/ttyUSB0 DEVICE=node-01" in usage.stdout + usage.stderr


def test_dry_run_deploy_runs_by_hand(stack: StackInfo, uid: str, tmp_path: Path, port: str) -> None:
    """The printed commands, run as they stand by a shell, deploy the node (with the fake tools)."""
    device, _ = field_device(stack.home, uid)
    board, log = tmp_path / "board", tmp_path / "log"
    board.mkdir()
    env = fake_tools_env(board, log)
    result = run(stack.home, "deploy", port, device, "--dry-run", env=env)
    assert result.returncode == 0, result.stderr
    assert logged(log) == []  # a dry run runs nothing
    script = subprocess.run(
        ["bash", "-e"], input=result.stdout, env=dict(os.environ, **env), capture_output=True, text=True
    )
    assert script.returncode == 0, script.stdout + script.stderr
    staging = stack.home / "build" / device / "board"
    assert tree(board) == tree(staging)
    assert set(tree(board)) == expected_files(stack.home, device)
    # The verify step printed each file's sha256 as the board (MicroPython) computed it.
    verified = json.loads(script.stdout.splitlines()[-1].removeprefix("FIELDLINK-HASHES "))
    assert verified["files"] == {p: hashlib.sha256(d).hexdigest() for p, d in tree(staging).items()}


def test_flash_then_deploy_copies_only_what_changed(stack: StackInfo, uid: str, tmp_path: Path, port: str) -> None:
    device, site = field_device(stack.home, uid)
    firmware = micropython_firmware(tmp_path / "fw.bin")
    board, log = tmp_path / "board", tmp_path / "log"
    board.mkdir()
    env = fake_tools_env(board, log)
    result = run(stack.home, "flash", port, device, "--firmware", str(firmware), env=env)
    assert result.returncode == 0, result.stderr
    total = len(expected_files(stack.home, device))
    assert (
        result.stdout.strip()
        == f"{device} flashed on {port}: {total} file(s) copied, 0 unchanged, all {total} verified"
    )
    commands = logged(log)
    esptool = ["esptool", "--chip", "esp32", "--port", port, "--baud", "460800"]
    assert commands[:2] == [[*esptool, "erase-flash"], [*esptool, "write-flash", "0x1000", str(firmware)]]
    hashes = str(stack.home / "build" / device / "hashes.py")
    assert commands[2] == ["mpremote", "connect", port, "run", hashes]
    assert commands[-2:] == [["mpremote", "connect", port, "run", hashes], ["mpremote", "connect", port, "reset"]]
    assert tree(board) == tree(stack.home / "build" / device / "board")

    # The node ran: it keeps a spool and its last good config in the bundle folder. A stale module
    # of ours (it would shadow the .mpy) goes; the node's data stays.
    (board / "bundle" / "spool").mkdir()
    (board / "bundle" / "spool" / "1.r").write_bytes(b"batches")
    (board / "bundle" / "config.last-good.json").write_text("{}")
    (board / "firmware" / "app.py").write_text("stale = 1\n")
    log.unlink()
    again = run(stack.home, "deploy", port, device, env=env)
    assert again.returncode == 0, again.stderr
    assert (
        again.stdout.strip()
        == f"{device} deployed on {port}: 0 file(s) copied, {total} unchanged, 1 removed, all {total} verified"
    )
    assert [c[3:] for c in logged(log)] == [
        ["run", hashes],
        ["fs", "rm", ":firmware/app.py"],
        ["run", hashes],
        ["reset"],
    ]
    assert (board / "bundle" / "spool" / "1.r").read_bytes() == b"batches"

    # A new Wi-Fi passphrase for the site: only the config travels.
    changed = run_cli(stack.home, "site", "wifi", site, "plant-iot", stdin="another-passphrase\n")
    assert changed.returncode == 0
    log.unlink()
    third = run(stack.home, "deploy", port, device, env=env)
    assert third.returncode == 0, third.stderr
    staging = stack.home / "build" / device / "board"
    assert [c[3:] for c in logged(log)][1] == [
        "fs",
        "cp",
        "-f",
        str(staging / "bundle/config.json"),
        ":bundle/config.json",
    ]
    config = json.loads((board / "bundle" / "config.json").read_text())
    assert config["wifi"]["networks"] == [{"ssid": "plant-iot", "password": "another-passphrase"}]


def test_a_damaged_copy_fails_verification(stack: StackInfo, uid: str, tmp_path: Path, port: str) -> None:
    device, _ = field_device(stack.home, uid)
    board, log = tmp_path / "board", tmp_path / "log"
    board.mkdir()
    result = run(stack.home, "deploy", port, device, env=fake_tools_env(board, log, FAKE_CORRUPT="firmware/mqtt.mpy"))
    assert result.returncode == 1, result.stderr
    assert (
        "error: the board does not hold the deployment after copying (run `fieldlink deploy` again):\n"
        "  firmware/mqtt.mpy: differs" in result.stderr
    )
    assert "Traceback" not in result.stderr
    assert logged(log)[-1][3:] == ["run", str(stack.home / "build" / device / "hashes.py")]  # no restart


# --- refusals before anything is written -------------------------------------------------------------


def test_refusals_before_anything_is_written(stack: StackInfo, uid: str, tmp_path: Path, port: str) -> None:
    device, site = field_device(stack.home, uid)
    firmware = micropython_firmware(tmp_path / "fw.bin")
    board, log = tmp_path / "board", tmp_path / "log"
    board.mkdir()
    env = fake_tools_env(board, log)

    def refused(*args: str, code: int, message: str) -> None:
        result = run(stack.home, *args, env=env)
        assert (result.returncode, result.stderr.strip().splitlines()[-1]) == (code, message), result.stderr
        assert "Traceback" not in result.stderr
        assert logged(log) == [] and tree(board) == {}

    download = (
        "download MicroPython's ESP32_GENERIC firmware (a file named ESP32_GENERIC-<date>-v<version>.bin) from "
        "https://micropython.org/download/ESP32_GENERIC/ and give its path (FIRMWARE=path.bin, or --firmware path.bin)"
    )
    refused("flash", port, device, code=2, message=f"error: no base firmware given: {download}")
    refused(
        "flash", port, device, "--firmware", str(tmp_path / "nope.bin"), code=3,
        message=f"error: base firmware {tmp_path / 'nope.bin'} does not exist: {download}",
    )  # fmt: skip
    (tmp_path / "notes.bin").write_bytes(b"PK\x03\x04 a zip file")
    refused(
        "flash", port, device, "--firmware", str(tmp_path / "notes.bin"), code=2,
        message=f"error: {tmp_path / 'notes.bin'} is not a MicroPython firmware for ESP32: an ESP image starts "
        f"with the byte e9, this file with 504b0304 ({download})",
    )  # fmt: skip
    s3 = micropython_firmware(tmp_path / "s3.bin", chip_id=9)
    refused(
        "flash", port, device, "--firmware", str(s3), code=2,
        message=f"error: {s3} is not a MicroPython firmware for ESP32: its image is for ESP32-S3 ({download})",
    )  # fmt: skip
    old = micropython_firmware(tmp_path / "old.bin", version="1.19.1")
    refused(
        "flash", port, device, "--firmware", str(old), code=2,
        message=f"error: {old} is MicroPython 1.19; the node needs 1.23 or newer (its TLS uses ssl.SSLContext)",
    )  # fmt: skip
    refused(
        "flash", "/dev/ttyUSB-none", device, "--firmware", str(firmware), code=3,
        message="error: no serial port /dev/ttyUSB-none: is the board plugged in (with a data cable)? Ports here: none",
    )  # fmt: skip
    refused(
        "deploy", port, "node-never-added", "--site", site, code=2,
        message=f"error: no bundle for device 'node-never-added' in {stack.home / 'devices' / 'node-never-added'}; "
        "add it with `fieldlink device add`",
    )  # fmt: skip
    bare = f"bare-{uid}"
    assert run(stack.home, "site", "set", bare, "--broker", "plant.example").returncode == 0
    refused(
        "deploy", port, device, "--site", bare, code=2,
        message=f"error: site '{bare}' has no Wi-Fi network, and a board reaches the broker only through one: "
        f"`fieldlink site wifi {bare} SSID`",
    )  # fmt: skip
    simulated = f"sim-{uid}"
    assert run(stack.home, "device", "add", simulated).returncode == 0
    refused(
        "deploy", port, simulated, "--site", site, code=2,
        message=f"error: device '{simulated}' samples simulated sensors (temperature, humidity, pressure), which only "
        f"the simulator has; give it the board's sensors first: `fieldlink device configure {simulated} "
        "SENSING.json` (docs/field-guide.md)",
    )  # fmt: skip
    unsited = f"unsited-{uid}"
    sensing = tmp_path / "adc.json"
    sensing.write_text(json.dumps(ADC_SENSING))
    assert run(stack.home, "device", "add", unsited, "--sensing", str(sensing)).returncode == 0
    refused(
        "deploy", port, unsited, code=2,
        message=f"error: device '{unsited}' has no site, and a board needs one for its Wi-Fi and broker: give "
        "--site NAME (see `fieldlink site list`)",
    )  # fmt: skip
    # A busy port: another program (a serial monitor, here `sleep`) has it open.
    with open(port, "rb", buffering=0) as tty:
        holder = subprocess.Popen(["sleep", "30"], stdin=tty)
    try:
        refused(
            "deploy", port, device, code=3,
            message=f"error: {port} is busy: pid {holder.pid} (sleep) has it open; close that (a serial monitor, "
            "screen, an IDE) and try again",
        )  # fmt: skip
    finally:
        holder.kill()
        holder.wait()
    assert logged(log) == [] and tree(board) == {}


def test_no_board_answering(stack: StackInfo, uid: str, tmp_path: Path, port: str) -> None:
    device, _ = field_device(stack.home, uid)
    firmware = micropython_firmware(tmp_path / "fw.bin")
    board, log = tmp_path / "board", tmp_path / "log"
    board.mkdir()
    result = run(
        stack.home,
        "flash",
        port,
        device,
        "--firmware",
        str(firmware),
        env=fake_tools_env(board, log, FAKE_ESPTOOL_FAIL="connect"),
    )
    assert result.returncode == 4
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: erase the flash: no ESP32 bootloader answered on {port}: hold the board's BOOT button while the "
        "command starts, or check the cable (a charge-only cable carries no data)"
    )
    assert [c[-1] for c in logged(log)] == ["erase-flash"]  # the first step failed: nothing followed
    silent = run(stack.home, "deploy", port, device, env=fake_tools_env(board, log, FAKE_SILENT="1"))
    assert silent.returncode == 4
    assert silent.stderr.strip().splitlines()[-1] == (
        f"error: read the board's files: no MicroPython answered on {port}: is the base firmware flashed (`fieldlink "
        "flash`)? A running node may need the board's EN/RESET button pressed once"
    )
    assert tree(board) == {}


def test_the_file_set_follows_the_tree(tmp_path: Path) -> None:
    """A module the firmware gains (and the shared module it imports) go to the board with no list to
    edit; the simulator, CPython-only shared modules and stubs do not."""
    root = tmp_path / "tree"
    for package in ("firmware", "shared"):
        (root / package).mkdir(parents=True)
    (root / "firmware" / "__init__.py").write_text("")
    (root / "firmware" / "newmod.py").write_text("from shared import gadget\nfrom shared.helpers.deep import x\n")
    (root / "firmware" / "sim").mkdir()
    (root / "firmware" / "sim" / "board.py").write_text("from shared import decode\n")
    (root / "shared" / "__init__.py").write_text("")
    (root / "shared" / "gadget.py").write_text("import shared.other\n")
    (root / "shared" / "gadget.pyi").write_text("x: int\n")
    (root / "shared" / "other.py").write_text("y = 1\n")
    (root / "shared" / "decode.py").write_text("import typing\n")
    (root / "shared" / "helpers").mkdir()
    (root / "shared" / "helpers" / "__init__.py").write_text("ROOT = 1\n")
    (root / "shared" / "helpers" / "deep.py").write_text("x = 1\n")
    (root / "shared" / "filterlib").mkdir()
    (root / "shared" / "filterlib" / "median.py").write_text("m = 1\n")
    assert [p.as_posix() for p in node_sources(root)] == [
        "firmware/newmod.py",
        "shared/filterlib/median.py",
        "shared/gadget.py",
        "shared/helpers/__init__.py",
        "shared/helpers/deep.py",
        "shared/other.py",
    ]


def test_mpy_cross_compiles_every_board_module_for_its_architecture(tmp_path: Path) -> None:
    from tools._board import BOARDS
    from tools._deploy import compile_node

    built = compile_node(tmp_path / "out", BOARDS["esp32"])
    assert sorted(p.as_posix() for p in built) == sorted(p.with_suffix(".mpy").as_posix() for p in node_sources())
    for path in built:
        header = (tmp_path / "out" / path).read_bytes()[:4]
        # .mpy version 6; small ints of 31 bits, as on a 32-bit board
        assert header[:2] == b"M\x06" and header[3] == 31, path
    # Native code carries the architecture: the compiler was told the board's (xtensawin, 10).
    native = tmp_path / "native"
    (native / "firmware").mkdir(parents=True)
    (native / "shared" / "filterlib").mkdir(parents=True)
    (native / "firmware" / "fast.py").write_text("import micropython\n\n@micropython.native\ndef f(x):\n    return x\n")
    compile_node(tmp_path / "native-out", BOARDS["esp32"], root=native)
    header = (tmp_path / "native-out" / "firmware" / "fast.mpy").read_bytes()[:4]
    assert header[2] >> 2 == 10  # MP_NATIVE_ARCH_XTENSAWIN
