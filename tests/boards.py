"""Stand-ins for what a board test needs and this machine lacks: MicroPython ESP32 firmware images
(made with esptool's own image writer, so esptool reads them back), and esptool and mpremote
replaced by scripts that act on a folder as the board's filesystem (tests/fake_mpremote.py,
tests/fake_esptool.py) and log every command they are given."""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

from esptool.bin_image import ESP32FirmwareImage, ESP32S3FirmwareImage, ImageSegment

HERE = Path(__file__).resolve().parent
# ESP32_GENERIC's table from MicroPython 1.26 on (ports/esp32/partitions-4MiBplus.csv): no "vfs"
# entry; the firmware makes the filesystem from the end of the app to the end of the flash.
TABLE_4MIB_PLUS = [
    ("nvs", 1, 2, 0x9000, 0x6000),
    ("phy_init", 1, 1, 0xF000, 0x1000),
    ("factory", 0, 0, 0x10000, 0x1F0000),
]
# The 4 MiB table of MicroPython 1.20-1.25 (partitions-4MiB.csv), with its "vfs" partition.
TABLE_4MIB_VFS = [*TABLE_4MIB_PLUS, ("vfs", 1, 0x81, 0x200000, 0x200000)]
BOOTLOADER_OFFSET = 0x1000


def esp_image(segments: list[tuple[int, bytes]], chip_id: int = 0, flash_size_freq: int = 0x20) -> bytes:
    """An ESP image (header, segments, checksum, SHA-256) as esptool writes one."""
    image = {0: ESP32FirmwareImage, 9: ESP32S3FirmwareImage}[chip_id]()
    image.entrypoint = segments[0][0]
    image.flash_mode = 2  # dio
    image.flash_size_freq = flash_size_freq  # 4MB, 40 MHz
    for address, data in segments:
        segment = ImageSegment(address, data)
        segment.name = ".data"
        image.segments.append(segment)
    saved = image.save(None)
    assert isinstance(saved, bytes)
    return saved


def partition_table(entries: list[tuple[str, int, int, int, int]]) -> bytes:
    table = b"".join(
        struct.pack("<2sBBLL16sL", b"\xaa\x50", kind, sub, offset, size, name.encode(), 0)
        for name, kind, sub, offset, size in entries
    )
    table += b"\xeb\xeb" + b"\xff" * 14 + hashlib.md5(table).digest()
    return table + b"\xff" * (0xC00 - len(table))


def micropython_firmware(
    path: Path,
    *,
    table: list[tuple[str, int, int, int, int]] = TABLE_4MIB_PLUS,
    chip_id: int = 0,
    version: str = "1.26.1",
) -> Path:
    """A file laid out like MicroPython's ESP32_GENERIC download (ports/esp32/makeimg.py): bootloader
    at 0x1000, partition table at 0x8000, application at 0x10000, as one file written at 0x1000."""
    bootloader = esp_image([(0x40080400, b"\x00" * 1024)], chip_id)
    banner = f"MicroPython v{version} on 2025-01-01; Generic ESP32 module with ESP32\x00".encode()
    app = esp_image([(0x3F400020, banner * 8), (0x400D0020, os.urandom(2048))], chip_id)
    data = bytearray(b"\xff" * (0x10000 - BOOTLOADER_OFFSET))
    data[: len(bootloader)] = bootloader
    data[0x8000 - BOOTLOADER_OFFSET : 0x8000 - BOOTLOADER_OFFSET + 0xC00] = partition_table(table)
    path.write_bytes(bytes(data) + app)
    return path


def fake_tools_env(board: Path, log: Path, **extra: str) -> dict[str, str]:
    """Environment for `fieldlink` with esptool and mpremote replaced by the fakes acting on `board`."""
    python = sys.executable
    return {
        "FIELDLINK_ESPTOOL": f"{python} {HERE / 'fake_esptool.py'}",
        "FIELDLINK_MPREMOTE": f"{python} {HERE / 'fake_mpremote.py'}",
        "FAKE_BOARD": str(board),
        "FAKE_LOG": str(log),
        **extra,
    }


def logged(log: Path) -> list[list[str]]:
    """The commands the fakes were given, in order (argv after the program)."""
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def tree(root: Path) -> dict[str, bytes]:
    """Every file under root by its relative path."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# A board's sensor, sampled fast and sent soon, so that a node's readings arrive within a second or two.
ADC_SENSING = {
    "sample_interval_ms": 200,
    "batch": {"max_age_ms": 1000},
    "sensors": [{"name": "soil", "type": "adc", "pin": 34, "scale": 2.0}],
}


def field_device(
    home: Path, name: str, *, broker: str = "field.example", port: int = 8883, wifi: bool = True
) -> tuple[str, str]:
    """A site and a device on it with a board's sensor (an ADC), made with the real commands:
    (device id, site name)."""
    site = f"site-{name}"
    result = run_cli(home, "site", "set", site, "--broker", broker, "--port", str(port))
    assert result.returncode == 0, result.stderr
    if wifi:
        result = run_cli(home, "site", "wifi", site, "plant-iot", stdin="secret-passphrase\n")
        assert result.returncode == 0, result.stderr
    sensing = home / f"sensing-{name}.json"
    sensing.write_text(json.dumps(ADC_SENSING))
    device = f"node-{name}"
    result = run_cli(home, "device", "add", device, "--sensing", str(sensing), *(["--site", site] if wifi else []))
    assert result.returncode == 0, result.stderr
    return device, site


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def run_cli(home: Path, *args: str, env: dict[str, str] | None = None, stdin: str = "") -> Result:
    """The `fieldlink` command's own entry point (exit codes, messages) run in this process, which
    saves an interpreter start per call; its environment and standard streams are the call's own."""
    from tools.cli import main

    saved = dict(os.environ)
    os.environ.update(FIELDLINK_HOME=str(home), **(env or {}))
    out, err = io.StringIO(), io.StringIO()
    argv, stdin_before = sys.argv, sys.stdin
    sys.argv, sys.stdin = ["fieldlink", *args], io.StringIO(stdin)
    code = 0
    try:
        with redirect_stdout(out), redirect_stderr(err):
            main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    finally:
        sys.argv, sys.stdin = argv, stdin_before
        os.environ.clear()
        os.environ.update(saved)
    return Result(code, out.getvalue(), err.getvalue())
