"""Factory images: one `.bin` per device that holds the MicroPython base firmware and a littlefs
filesystem with the node (compiled) and the device's bundle, so a batch of boards is flashed with one
esptool command each and starts as a node on first boot, with no mpremote step.

The filesystem goes where MicroPython mounts it: the partition table inside the base firmware says
where (a "vfs" partition, or from 1.26 on the space after the last partition to the end of the
flash), and the littlefs geometry is MicroPython's own (extmod/vfs_lfs.c: 4096-byte blocks, the
partition's block count, 32-byte reads and writes), so its `vfs.mount` finds and mounts it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from littlefs import LittleFS

from tools._board import BaseFirmware, BoardKind, Step, show, tool

BLOCK_SIZE = 4096  # the ESP32 flash's erase block, MicroPython's littlefs block on it
# MicroPython's VfsLfs2 defaults (readsize, progsize, lookahead) and its block_cycles.
_READ_SIZE = 32
_PROG_SIZE = 32
_LOOKAHEAD = 32
_BLOCK_CYCLES = 100
# littlefs on-disk version 2.0: what every MicroPython with littlefs 2 mounts (newer littlefs writes
# 2.1 by default, which older ones refuse).
_DISK_VERSION = 0x00020000


@dataclass(frozen=True)
class Layout:
    """Where the parts of a factory image go in flash (and in the merged file, which starts at 0)."""

    firmware_offset: int
    firmware_size: int
    fs_offset: int
    fs_size: int

    @property
    def block_count(self) -> int:
        return self.fs_size // BLOCK_SIZE


def layout(firmware: BaseFirmware, board: BoardKind, flash_size: int | None) -> Layout:
    fs_offset, fs_size = firmware.filesystem(flash_size)
    if board.bootloader_offset + firmware.size > fs_offset:
        raise ValueError(f"{firmware.path} ({firmware.size} bytes) runs into the filesystem at {fs_offset:#x}")
    return Layout(board.bootloader_offset, firmware.size, fs_offset, fs_size)


def _littlefs(where: Layout, mount: bool = True) -> LittleFS:
    """A littlefs of the partition's geometry, as MicroPython's ESP32 port formats and mounts it."""
    return LittleFS(
        block_size=BLOCK_SIZE,
        block_count=where.block_count,
        read_size=_READ_SIZE,
        prog_size=_PROG_SIZE,
        lookahead_size=_LOOKAHEAD,
        block_cycles=_BLOCK_CYCLES,
        disk_version=_DISK_VERSION,
        mount=mount,
    )


def filesystem(files: dict[str, bytes], where: Layout) -> bytes:
    """A littlefs image of the partition's size holding `files` (paths relative to its root)."""
    fs = _littlefs(where)
    for path in sorted(files):
        if "/" in path:
            fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        with fs.open(path, "wb") as f:
            f.write(files[path])
    image = bytes(fs.context.buffer)
    fs.unmount()
    return image


def read_filesystem(image: bytes, where: Layout) -> dict[str, bytes]:
    """Every file of a littlefs partition image (for checking what an image holds)."""
    fs = _littlefs(where, mount=False)
    fs.context.buffer[:] = image
    fs.mount()
    files = {}
    for root, _, names in fs.walk("/"):
        for name in names:
            path = f"{root.rstrip('/')}/{name}".lstrip("/")
            with fs.open(path, "rb") as f:
                files[path] = f.read()
    fs.unmount()
    return files


def merge_step(board: BoardKind, firmware: Path, fs_image: Path, where: Layout, out: Path) -> Step:
    """esptool's merge-bin: one file to write at flash offset 0."""
    argv = [
        *tool("esptool"),
        "--chip",
        board.chip,
        "merge-bin",
        "-o",
        str(out),
        hex(where.firmware_offset),
        str(firmware),
        hex(where.fs_offset),
        str(fs_image),
    ]
    return Step("merge", argv, progress=lambda line: None)


def flash_command(board: BoardKind, image: Path, port: str = "PORT") -> str:
    """How a person writes a factory image to a board."""
    return show(
        [*tool("esptool"), "--chip", board.chip, "--port", port, "--baud", "460800", "write-flash", "0x0", str(image)]
    )
