"""Boards on a serial port: what a supported board is (chip, offsets, the .mpy architecture), the
MicroPython base firmware a user downloads for it (checked before anything is written), the serial
port (there, ours to use), and running esptool and mpremote with a progress bar and exit codes that
say what went wrong. Nothing here writes to a board by itself: `tools/_flash.py` decides what runs."""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import stat
import struct
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn, TimeElapsedColumn

from tools._errors import EnvironmentProblem, FieldlinkError, ServiceFailed, UsageError


@dataclass(frozen=True)
class BoardKind:
    """A board family fieldlink can flash: its chip as esptool and the image header name it, and where
    MicroPython's download for it goes."""

    name: str
    chip: str  # esptool --chip
    image_chip_id: int  # the chip id in an ESP image's extended header
    mpy_arch: str  # mpy-cross -march
    download: str  # MicroPython's board name on micropython.org/download/
    bootloader_offset: int  # where the downloaded .bin (bootloader first) is written
    partition_table_offset: int = 0x8000
    flash_size: int = 4 * 1024 * 1024  # the common module's flash (ESP32-WROOM-32: 4 MiB)


# ESP32 alone has been checked against the port's stubs and its download's layout (docs/field-guide.md
# says why the others are not listed yet).
BOARDS = {
    "esp32": BoardKind(
        name="esp32",
        chip="esp32",
        image_chip_id=0,
        mpy_arch="xtensawin",
        download="ESP32_GENERIC",
        bootloader_offset=0x1000,
    ),
}
DOWNLOAD_URL = "https://micropython.org/download/{board}/"

# The chips esptool's image header names, for saying which chip an image is for.
_CHIP_NAMES = {0: "ESP32", 2: "ESP32-S2", 5: "ESP32-C3", 9: "ESP32-S3", 12: "ESP32-C2", 13: "ESP32-C6", 16: "ESP32-H2"}
_IMAGE_MAGIC = 0xE9
_PARTITION_MAGIC = b"\xaa\x50"
_PARTITION_MD5 = b"\xeb\xeb"
_PARTITION_ENTRY = struct.Struct("<2sBBLL16sL")
_PARTITION_TABLE_BYTES = 0xC00
# An ESP image header's flash size nibble (byte 3, high half) in bytes.
_FLASH_SIZES = {0: 1 << 20, 1: 2 << 20, 2: 4 << 20, 3: 8 << 20, 4: 16 << 20, 5: 32 << 20, 6: 64 << 20, 7: 128 << 20}
_DATA_TYPE = 1


@dataclass(frozen=True)
class Partition:
    name: str
    type: int
    subtype: int
    offset: int
    size: int


@dataclass(frozen=True)
class BaseFirmware:
    """A checked MicroPython download: the file, its bytes' hash, its partition table and the flash
    size its bootloader header names."""

    path: Path
    size: int
    sha256: str
    partitions: tuple[Partition, ...]
    flash_size: int

    def filesystem(self, flash_size: int | None = None) -> tuple[int, int]:
        """(offset, size) of the partition MicroPython mounts as its filesystem: a "vfs" data
        partition if the table has one (MicroPython up to 1.25), otherwise what 1.26 and later make
        at boot: from the end of the last partition to the end of the flash (ports/esp32/main.c)."""
        for part in self.partitions:
            if part.type == _DATA_TYPE and part.name in ("vfs", "ffat"):
                return part.offset, part.size
        end = max(p.offset + p.size for p in self.partitions)
        flash = flash_size or self.flash_size
        if flash <= end:
            raise UsageError(
                f"{self.path}: its partitions end at {end:#x}, so a {flash >> 20} MiB flash leaves no room for a "
                "filesystem; give the board's real flash size (--flash-size)"
            )
        return end, flash - end


def download_hint(board: BoardKind) -> str:
    url = DOWNLOAD_URL.format(board=board.download)
    return (
        f"download MicroPython's {board.download} firmware (a file named {board.download}-<date>-v<version>.bin) "
        f"from {url} and give its path (FIRMWARE=path.bin, or --firmware path.bin)"
    )


def check_firmware(path: Path | None, board: BoardKind) -> BaseFirmware:
    """The base firmware checked as far as a file can be: an ESP image for this chip at the start, a
    partition table where the bootloader looks for it, an application image after it that is
    MicroPython. Every refusal says what the file is instead."""
    if path is None:
        raise UsageError(f"no base firmware given: {download_hint(board)}")
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise EnvironmentProblem(f"base firmware {path} does not exist: {download_hint(board)}") from exc
    except OSError as exc:
        raise EnvironmentProblem(f"cannot read base firmware {path}: {exc.strerror}") from exc
    where = f"{path} is not a MicroPython firmware for {board.name.upper()}"
    if len(data) < 24 or data[0] != _IMAGE_MAGIC:
        first = data[:4].hex() or "nothing"
        raise UsageError(
            f"{where}: an ESP image starts with the byte e9, this file with {first} ({download_hint(board)})"
        )
    chip_id = struct.unpack_from("<H", data, 12)[0]
    if chip_id != board.image_chip_id:
        chip = _CHIP_NAMES.get(chip_id, f"chip id {chip_id}")
        raise UsageError(f"{where}: its image is for {chip} ({download_hint(board)})")
    table_at = board.partition_table_offset - board.bootloader_offset
    partitions = _partitions(data[table_at : table_at + _PARTITION_TABLE_BYTES])
    if not partitions:
        raise UsageError(
            f"{where}: it has no partition table at {board.partition_table_offset:#x} (is it a bootloader or an "
            f"application alone? {download_hint(board)})"
        )
    apps = [p for p in partitions if p.type == 0]
    app_at = (apps[0].offset - board.bootloader_offset) if apps else len(data)
    if app_at >= len(data) or data[app_at] != _IMAGE_MAGIC:
        raise UsageError(f"{where}: no application image at {apps[0].offset if apps else 0:#x}")
    if b"MicroPython" not in data[app_at:]:
        raise UsageError(f"{where}: its application is not MicroPython ({download_hint(board)})")
    return BaseFirmware(
        path=path,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        partitions=tuple(partitions),
        flash_size=_FLASH_SIZES.get(data[3] >> 4, board.flash_size),
    )


def _partitions(table: bytes) -> list[Partition]:
    """The entries of an ESP-IDF partition table (binary form), up to its MD5 entry or its end."""
    found = []
    for at in range(0, len(table) - _PARTITION_ENTRY.size + 1, _PARTITION_ENTRY.size):
        magic, kind, subtype, offset, size, name, _ = _PARTITION_ENTRY.unpack_from(table, at)
        if magic != _PARTITION_MAGIC:
            break  # the MD5 entry (eb eb) or erased flash (ff ff)
        found.append(Partition(name.rstrip(b"\0").decode(errors="replace"), kind, subtype, offset, size))
    return found


def parse_size(text: str) -> int:
    """A flash size as esptool writes it (4MB, 16MB) in bytes."""
    match = re.fullmatch(r"(\d+)\s*(MB|MiB|M)", text.strip(), re.IGNORECASE)
    if not match or int(match[1]) not in (1, 2, 4, 8, 16, 32, 64, 128):
        raise UsageError(f"flash size {text!r}: give one of 1MB, 2MB, 4MB, 8MB, 16MB, 32MB")
    return int(match[1]) << 20


# --- the serial port ---------------------------------------------------------------------------------


def port_holders(port: str) -> list[tuple[int, str]]:
    """Other processes that have the port open (pid, program), from /proc: a flash or a copy through a
    port someone else reads would be garbled or fail halfway."""
    try:
        target = os.path.realpath(port)
    except OSError:
        return []
    holders = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:  # gone, or another user's
            continue
        for fd in fds:
            try:
                if os.readlink(fd) == target:
                    holders.append((int(entry.name), (entry / "comm").read_text().strip()))
                    break
            except OSError:
                continue
    return holders


def check_port(port: str) -> None:
    """The port exists, is a serial device, is ours to open and nobody else has it open."""
    path = Path(port)
    if not port:
        raise UsageError("no serial port given (PORT=/dev/ttyUSB0)")
    if not path.exists():
        raise EnvironmentProblem(
            f"no serial port {port}: is the board plugged in (with a data cable)? Ports here: "
            + (", ".join(sorted(_serial_ports())) or "none")
        )
    if not stat.S_ISCHR(path.stat().st_mode):
        raise UsageError(f"{port} is not a serial port (not a character device)")
    if not os.access(port, os.R_OK | os.W_OK):
        raise EnvironmentProblem(
            f"no permission to use {port}: add yourself to its group (`sudo usermod -aG dialout $USER`, "
            "then log in again)"
        )
    holders = port_holders(port)
    if holders:
        who = ", ".join(f"pid {pid} ({name})" for pid, name in holders)
        raise EnvironmentProblem(
            f"{port} is busy: {who} has it open; close that (a serial monitor, screen, an IDE) and try again"
        )


def _serial_ports() -> list[str]:
    return [str(p) for pattern in ("ttyUSB*", "ttyACM*") for p in Path("/dev").glob(pattern)]


# --- esptool and mpremote ----------------------------------------------------------------------------


def tool(name: str) -> list[str]:
    """The command for esptool or mpremote: $FIELDLINK_ESPTOOL / $FIELDLINK_MPREMOTE if set (another
    installation), else the one installed beside this Python, else the one on PATH."""
    override = os.environ.get(f"FIELDLINK_{name.upper()}")
    if override:
        return shlex.split(override)
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        raise EnvironmentProblem(f"{name} is missing; run `make setup` (it installs fieldlink's dependencies)")
    return [found]


def show(argv: Sequence[str]) -> str:
    """A command as a person would type it."""
    return shlex.join(argv)


# Output of esptool and mpremote that says why they failed, and what that means for the user.
_FAILURES: list[tuple[re.Pattern[str], type[FieldlinkError], str]] = [
    (
        re.compile(r"Failed to connect|No serial data received|Wrong boot mode|Invalid head of packet", re.I),
        ServiceFailed,
        "no ESP32 bootloader answered on {port}: hold the board's BOOT button while the command starts, "
        "or check the cable (a charge-only cable carries no data)",
    ),
    (
        re.compile(r"This chip is (\S+),? not|Unexpected chip ID|wrong chip", re.I),
        UsageError,
        "the board on {port} is not an {board}; choose its board with --board",
    ),
    (
        re.compile(r"Resource busy|in use by another|failed to access", re.I),
        EnvironmentProblem,
        "{port} is busy: another program has it open",
    ),
    (
        re.compile(r"could not enter raw repl|no response|timed out", re.I),
        ServiceFailed,
        "no MicroPython answered on {port}: is the base firmware flashed (`fieldlink flash`)? A running node "
        "may need the board's EN/RESET button pressed once",
    ),
    (
        re.compile(r"Permission denied", re.I),
        EnvironmentProblem,
        "no permission to use {port}: add yourself to its group (dialout)",
    ),
    (
        re.compile(r"No such file or directory: '?/dev/|could not open port|no device found", re.I),
        EnvironmentProblem,
        "the board on {port} went away (unplugged?)",
    ),
]

_PERCENT = re.compile(r"(\d{1,3}(?:\.\d+)?)\s?%")
# mpremote's output line for each file it copies.
_COPIED = re.compile(r"^cp \S+")


@dataclass
class Step:
    """One command of a flash or a deployment, with what the user sees while it runs."""

    title: str
    argv: list[str]
    # How far the step is, from a line of its output: a share 0..1, or None for no news. Defaults
    # to a percentage in the line (esptool's writing and erasing progress).
    progress: Callable[[str], float | None] | None = None


def percent(line: str) -> float | None:
    match = _PERCENT.search(line)
    return min(float(match[1]), 100.0) / 100 if match else None


def counter(total: int, pattern: re.Pattern[str] = _COPIED) -> Callable[[str], float | None]:
    """Progress by counting lines that match: one per file copied."""
    seen = [0]

    def step(line: str) -> float | None:
        if not pattern.search(line):
            return None
        seen[0] += 1
        return min(seen[0] / max(total, 1), 1.0)

    return step


class StepList:
    """The steps of one command on stderr, numbered, a bar each: work done here (`local`) and commands
    (`run`, with percentages from their output where it gives them). A command that fails stops the
    list and raises the error its output means."""

    def __init__(self, port: str, board: BoardKind) -> None:
        self.port = port
        self.board = board
        self.number = 0
        columns = (TextColumn("{task.description:36}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn())
        self.progress = Progress(*columns, console=Console(stderr=True))

    def __enter__(self) -> StepList:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def _task(self, title: str) -> TaskID:
        self.number += 1
        return self.progress.add_task(f"[{self.number}] {title}", total=1.0)

    def local(self, title: str) -> Callable[[int, int], None]:
        """A step done in this process: returns `update(done, total)`."""
        task = self._task(title)
        return lambda done, total: self.progress.update(task, completed=done / max(total, 1))

    def run(self, steps: Sequence[Step]) -> list[str]:
        outputs = []
        for step in steps:
            task = self._task(step.title)

            def update(share: float, task: TaskID = task) -> None:
                self.progress.update(task, completed=share)

            output = _run(step, update)
            outputs.append(output.text)
            if output.code != 0:
                self.progress.update(task, description=f"[{self.number}] {step.title}: failed")
                raise failure(step, output.text, port=self.port, board=self.board)
            self.progress.update(task, completed=1.0)
        return outputs


def run_quietly(step: Step, board: BoardKind, port: str = "-") -> str:
    """Run a step without a display of its own (inside another bar); raises what its failure means."""
    output = _run(step, lambda share: None)
    if output.code != 0:
        raise failure(step, output.text, port=port, board=board)
    return output.text


@dataclass
class _Output:
    code: int
    text: str


def _run(step: Step, update: Callable[[float], None]) -> _Output:
    parse = step.progress or percent
    try:
        process = subprocess.Popen(
            step.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    except OSError as exc:
        raise EnvironmentProblem(f"cannot run {step.argv[0]}: {exc.strerror}") from exc
    assert process.stdout is not None
    chunks: list[str] = []
    line = b""
    try:
        # Progress lines end with \r (a terminal's redraw) or \n: split on both as they come.
        while chunk := process.stdout.read1(4096):  # type: ignore[attr-defined]
            for piece in re.split(rb"(\r|\n)", chunk):
                if piece in (b"\r", b"\n"):
                    text = line.decode(errors="replace")
                    chunks.append(text)
                    share = parse(text)
                    if share is not None:
                        update(share)
                    line = b""
                else:
                    line += piece
    except KeyboardInterrupt:
        process.terminate()
        process.wait()
        raise
    chunks.append(line.decode(errors="replace"))
    return _Output(process.wait(), "\n".join(c for c in chunks if c.strip()))


def failure(step: Step, output: str, *, port: str, board: BoardKind) -> FieldlinkError:
    """The error a failed step's output means; unknown failures carry the output's last lines."""
    for pattern, kind, message in _FAILURES:
        if pattern.search(output):
            return kind(f"{step.title}: " + message.format(port=port, board=board.name.upper()))
    tail = "\n".join(output.splitlines()[-8:])
    return FieldlinkError(f"{step.title} failed ({show(step.argv[:1])}):\n{tail}")
