"""Factory images (`fieldlink image`): three devices from one command; each image's layout, its
littlefs filesystem read back with the littlefs library and mounted by MicroPython's own VfsLfs2,
and esptool reading the firmware images inside it."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

from tests.boards import TABLE_4MIB_VFS, field_device, micropython_firmware, run_cli
from tests.support import StackInfo
from tools._deploy import BOARD_MAIN, node_sources
from tools._image import BLOCK_SIZE, Layout, read_filesystem
from tools._simulate import micropython_binary

VENV_BIN = Path(sys.executable).parent
MIB = 1 << 20
# MicroPython's _boot.py mounts the filesystem partition with vfs.mount(bdev, "/"), which finds
# littlefs by itself; this does the same on the unix port with the image's partition as the device.
MOUNT = """
import os, sys, vfs, hashlib, binascii, json
class Partition:
    def __init__(self, path, offset, size):
        self.f = open(path, "rb")
        self.offset = offset
        self.size = size
    def readblocks(self, n, buf, off=0):
        self.f.seek(self.offset + n * 4096 + off)
        self.f.readinto(buf)
    def writeblocks(self, n, buf, off=0):
        raise OSError(30)
    def ioctl(self, op, arg):
        return {4: self.size // 4096, 5: 4096}.get(op, 0)
vfs.mount(Partition(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])), "/flash", readonly=True)
found = {}
def walk(d):
    for entry in os.ilistdir(d):
        p = d + "/" + entry[0]
        if entry[1] == 0x4000:
            walk(p)
        else:
            with open(p, "rb") as f:
                found[p[len("/flash/"):]] = binascii.hexlify(hashlib.sha256(f.read()).digest()).decode()
walk("/flash")
print(type(vfs.mount and os.statvfs("/flash")), json.dumps(found))
"""


def test_factory_images_for_three_devices(stack: StackInfo, uid: str, tmp_path: Path) -> None:
    devices = [field_device(stack.home, f"{uid}-{n}", broker="plant.example")[0] for n in (1, 2, 3)]
    firmware = micropython_firmware(tmp_path / "ESP32_GENERIC-20250911-v1.26.1.bin")
    out = tmp_path / "images"
    result = run_cli(stack.home, "image", *devices, "--firmware", str(firmware), "--out", str(out))
    assert result.returncode == 0, result.stderr
    size = firmware.stat().st_size
    assert result.stdout.splitlines() == [
        f"3 factory image(s): MicroPython at 0x1000 ({size} bytes), littlefs at 0x200000 (2048 KiB, 512 blocks of "
        "4096 bytes)",
        *(f"  {out / d}.bin" for d in devices),
        "write one to a board (it covers the whole flash: nothing of what the board held stays):",
        f"  {VENV_BIN / 'esptool'} --chip esp32 --port /dev/ttyUSB0 --baud 460800 write-flash 0x0 "
        f"{out / devices[0]}.bin",
    ]
    fw = firmware.read_bytes()
    modules = {p.with_suffix(".mpy").as_posix() for p in node_sources()}
    where = Layout(0x1000, size, 0x200000, 2 * MIB)
    for device in devices:
        image = (out / f"{device}.bin").read_bytes()
        assert (out / f"{device}.bin").stat().st_mode & 0o777 == 0o600  # it holds the device's key
        # Layout: erased flash up to the bootloader, the download unchanged at 0x1000, erased flash up
        # to the filesystem, which runs to the end of the 4 MiB flash.
        assert len(image) == 4 * MIB
        assert image[:0x1000] == b"\xff" * 0x1000
        assert image[0x1000 : 0x1000 + size] == fw
        assert image[0x1000 + size : 0x200000] == b"\xff" * (0x200000 - 0x1000 - size)
        files = read_filesystem(image[0x200000:], where)
        bundle = stack.home / "devices" / device
        assert set(files) == {
            "main.py",
            *modules,
            "bundle/config.json",
            "bundle/ca.der",
            "bundle/cert.der",
            "bundle/key.der",
        }
        assert files["main.py"] == BOARD_MAIN.encode()
        for name in ("ca.der", "cert.der", "key.der"):
            assert files[f"bundle/{name}"] == (bundle / name).read_bytes()
        config = json.loads(files["bundle/config.json"])
        assert config["device_id"] == device
        assert config["broker"]["host"] == "plant.example"
        assert config["wifi"]["networks"] == [{"ssid": "plant-iot", "password": "secret-passphrase"}]
        assert config["sensors"] == [
            {
                "name": "soil",
                "type": "adc",
                "pin": 34,
                "attenuation": "11db",
                "scale": 2.0,
                "offset": 0.0,
                "filters": [],
            }
        ]
        compiled = stack.home / "build" / "mpy-xtensawin"
        for module in modules:
            assert files[module] == (compiled / module).read_bytes(), module
    # The devices differ only in their bundles.
    first, second = (read_filesystem((out / f"{d}.bin").read_bytes()[0x200000:], where) for d in devices[:2])
    assert {k for k in first if first[k] != second[k]} == {"bundle/config.json", "bundle/cert.der", "bundle/key.der"}

    # MicroPython's own littlefs finds and mounts the filesystem where the board will look for it.
    image_path = out / f"{devices[0]}.bin"
    mounted = subprocess.run(
        [micropython_binary(), "-c", MOUNT, str(image_path), str(0x200000), str(2 * MIB)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert mounted.returncode == 0, mounted.stderr
    on_board = json.loads(mounted.stdout.split(" ", 2)[-1])
    files = read_filesystem(image_path.read_bytes()[0x200000:], where)
    assert on_board == {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}

    # esptool reads the two ESP images inside: the bootloader at 0x1000 and the application at 0x10000.
    image = image_path.read_bytes()
    app_end = 0x1000 + size
    for name, start, end in (("bootloader", 0x1000, 0x8000), ("application", 0x10000, app_end)):
        part = tmp_path / f"{name}.bin"
        part.write_bytes(image[start:end].rstrip(b"\xff") if name == "bootloader" else image[start:end])
        info = subprocess.run(
            [str(VENV_BIN / "esptool"), "--chip", "esp32", "image-info", str(part)], capture_output=True, text=True
        )
        assert info.returncode == 0, info.stdout + info.stderr
        assert "Checksum: " in info.stdout and "(valid)" in info.stdout.split("Checksum: ")[1].splitlines()[0]
        assert "Validation hash: " in info.stdout and info.stdout.rstrip().endswith("(valid)")


def test_the_filesystem_goes_where_the_partition_table_says(stack: StackInfo, uid: str, tmp_path: Path) -> None:
    device, _ = field_device(stack.home, uid)
    # MicroPython up to 1.25: a "vfs" partition in the table (here 2 MiB at 0x200000).
    old = micropython_firmware(tmp_path / "old.bin", table=TABLE_4MIB_VFS, version="1.24.1")
    result = run_cli(
        stack.home, "image", device, "--firmware", str(old), "--out", str(tmp_path / "a"), "--flash-size", "16MB"
    )
    assert result.returncode == 0, result.stderr
    assert "littlefs at 0x200000 (2048 KiB, 512 blocks of 4096 bytes)" in result.stdout
    assert len((tmp_path / "a" / f"{device}.bin").read_bytes()) == 4 * MIB
    # From 1.26: from the end of the last partition to the end of the flash, which must be the real one.
    new = micropython_firmware(tmp_path / "new.bin")
    result = run_cli(
        stack.home, "image", device, "--firmware", str(new), "--out", str(tmp_path / "b"), "--flash-size", "8MB"
    )
    assert result.returncode == 0, result.stderr
    assert "littlefs at 0x200000 (6144 KiB, 1536 blocks of 4096 bytes)" in result.stdout
    image = (tmp_path / "b" / f"{device}.bin").read_bytes()
    assert len(image) == 8 * MIB
    assert "bundle/config.json" in read_filesystem(image[0x200000:], Layout(0x1000, 0, 0x200000, 6 * MIB))
    assert BLOCK_SIZE == 4096
    bad = run_cli(stack.home, "image", device, "--firmware", str(new), "--flash-size", "3MB")
    assert (bad.returncode, bad.stderr.strip()) == (
        2,
        "error: flash size '3MB': give one of 1MB, 2MB, 4MB, 8MB, 16MB, 32MB",
    )
    twice = run_cli(stack.home, "image", device, device, "--firmware", str(new))
    assert (twice.returncode, twice.stderr.strip()) == (2, "error: a device is named twice")
