"""`fieldlink flash`, `deploy` and `image`: every check first (the base firmware, the bundle, the site,
the tools, the port), then the steps, each shown with a bar while it runs, or printed (`--dry-run`) as
commands a person can run by hand. Nothing is written to a board before every check has passed."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from littlefs import LittleFSError

from tools._board import BaseFirmware, BoardKind, Step, StepList, check_firmware, check_port, run_quietly, show, tool
from tools._deploy import (
    BoardState,
    Staged,
    build_dir,
    bundle_files,
    check_version,
    compile_node,
    copy_steps,
    hash_script,
    plan,
    read_hashes,
    read_step,
    require_tools,
    restart_step,
    site_for,
    stage,
    verify,
)
from tools._errors import FieldlinkError, UsageError
from tools._home import Home
from tools._image import Layout, filesystem, flash_command, layout, merge_step

# After esptool's reset the new MicroPython formats its filesystem on its first boot; mpremote's
# Ctrl-C must not interrupt that. $FIELDLINK_BOOT_WAIT_S changes it (a slower board; tests: 0).
BOOT_WAIT_S = 5
BAUD = 460800


def prepare(home: Home, device_id: str, site: str | None) -> dict[str, bytes]:
    """The device's bundle files with its site's settings, checked (no board needed)."""
    return bundle_files(home, device_id, site_for(home, device_id, site))


def _compile(home: Home, board: BoardKind, steps: StepList) -> Path:
    compiled = build_dir(home, f"mpy-{board.mpy_arch}")
    compile_node(compiled, board, progress=steps.local(f"compile for {board.mpy_arch}"))
    return compiled


def _stage(home: Home, device_id: str, compiled: Path, bundle: dict[str, bytes]) -> tuple[Staged, Path]:
    staged = stage(build_dir(home, device_id) / "board", compiled, bundle)
    return staged, hash_script(staged, build_dir(home, device_id) / "hashes.py")


def _print(steps: Sequence[Step], first: int = 1) -> int:
    """The steps as numbered shell commands on stdout; returns the next number."""
    for number, step in enumerate(steps, first):
        sys.stdout.write(f"# {number}. {step.title}\n{_multiline(step.argv)}\n")
    return first + len(steps)


def _multiline(argv: list[str]) -> str:
    """A command as a shell line, long mpremote chains broken before each `+`."""
    if argv.count("+") < 2:
        return show(argv)
    parts: list[list[str]] = []
    current: list[str] = []
    for arg in argv:
        if arg == "+":
            parts.append(current)
            current = []
        current.append(arg)
    parts.append(current)
    return " \\\n    ".join(shlex.join(p) for p in parts)


def _dry_deploy(port: str, staged: Staged, script: Path, first: int = 1) -> str:
    """The deployment's commands for a board that holds none of it yet (as after `flash`)."""
    steps = [
        read_step(port, script),
        *copy_steps(port, staged, plan(staged, BoardState())),
        read_step(port, script, f"verify on the board (each file's sha256 as in {staged.root})"),
        restart_step(port),
    ]
    _print(steps, first)
    return f"# dry run: nothing was written; {len(staged.files)} files staged in {staged.root}"


def _deploy(port: str, staged: Staged, script: Path, steps: StepList) -> str:
    """Copy what differs, check every file's hash on the board, restart it."""
    todo = plan(staged, read_hashes(steps.run([read_step(port, script)])[0]))
    steps.run(copy_steps(port, staged, todo))
    verify(staged, read_hashes(steps.run([read_step(port, script, "verify on the board")])[0]))
    steps.run([restart_step(port)])
    removed = f", {len(todo.removals)} removed" if todo.removals else ""
    return (
        f"{len(todo.copies)} file(s) copied, {len(todo.unchanged)} unchanged{removed}, all {len(staged.files)} verified"
    )


def deploy(home: Home, port: str, device_id: str, site: str | None, board: BoardKind, dry_run: bool) -> str:
    require_tools()
    bundle = prepare(home, device_id, site)
    if not dry_run:
        check_port(port)
    with StepList(port, board) as steps:
        staged, script = _stage(home, device_id, _compile(home, board, steps), bundle)
        return _dry_deploy(port, staged, script) if dry_run else _deploy(port, staged, script, steps)


def flash(
    home: Home,
    port: str,
    device_id: str,
    firmware: Path | None,
    site: str | None,
    board: BoardKind,
    dry_run: bool,
    baud: int = BAUD,
) -> str:
    """Erase the board, write the base firmware, deploy the node."""
    base = _checked_firmware(firmware, board)
    esptool = [*tool("esptool"), "--chip", board.chip, "--port", port, "--baud", str(baud)]
    require_tools()
    bundle = prepare(home, device_id, site)
    if not dry_run:
        check_port(port)
    flashing = [
        Step("erase the flash", [*esptool, "erase-flash"]),
        Step("write MicroPython", [*esptool, "write-flash", hex(board.bootloader_offset), str(base.path)]),
        Step("wait for its first boot", ["sleep", _boot_wait()], progress=lambda line: None),
    ]
    with StepList(port, board) as steps:
        staged, script = _stage(home, device_id, _compile(home, board, steps), bundle)
        if dry_run:
            return _dry_deploy(port, staged, script, _print(flashing))
        steps.run(flashing)
        return _deploy(port, staged, script, steps)


def _boot_wait() -> str:
    value = os.environ.get("FIELDLINK_BOOT_WAIT_S", str(BOOT_WAIT_S))
    if not value.isdigit():
        raise UsageError(f"FIELDLINK_BOOT_WAIT_S={value[:20]!r}: give whole seconds")
    return value


def _checked_firmware(firmware: Path | None, board: BoardKind) -> BaseFirmware:
    base = check_firmware(firmware, board)
    check_version(base.path.read_bytes(), base.path)
    return base


def images(
    home: Home,
    device_ids: Sequence[str],
    firmware: Path | None,
    site: str | None,
    board: BoardKind,
    flash_size: int | None,
    out: Path,
) -> tuple[Layout, list[Path]]:
    """A factory image per device in `out` (`<device>.bin`, mode 0600: it holds the device's key)."""
    if len(set(device_ids)) != len(device_ids):
        raise UsageError("a device is named twice")
    base = _checked_firmware(firmware, board)
    where = layout(base, board, flash_size)
    tool("esptool")
    bundles = {device_id: prepare(home, device_id, site) for device_id in device_ids}
    out.mkdir(parents=True, exist_ok=True)
    made = []
    with StepList("-", board) as steps:
        compiled = _compile(home, board, steps)
        update: Callable[[int, int], None] = steps.local(f"build {len(device_ids)} image(s)")
        for number, device_id in enumerate(device_ids):
            staged, _ = _stage(home, device_id, compiled, bundles[device_id])
            files = {name: (staged.root / name).read_bytes() for name in staged.files}
            try:
                fs = filesystem(files, where)
            except LittleFSError as exc:
                raise FieldlinkError(
                    f"{device_id}: the node's files do not fit the {where.fs_size >> 10} KiB filesystem ({exc})"
                ) from exc
            fs_path = build_dir(home, device_id) / "fs.bin"
            fs_path.write_bytes(fs)
            os.chmod(fs_path, 0o600)
            target = out / f"{device_id}.bin"
            run_quietly(merge_step(board, base.path, fs_path, where, target), board)
            os.chmod(target, 0o600)
            made.append(target)
            update(number + 1, len(device_ids))
    return where, made


def image_summary(board: BoardKind, where: Layout, made: list[Path]) -> list[str]:
    lines = [
        f"{len(made)} factory image(s): MicroPython at {where.firmware_offset:#x} ({where.firmware_size} bytes), "
        f"littlefs at {where.fs_offset:#x} ({where.fs_size >> 10} KiB, {where.block_count} blocks of 4096 bytes)"
    ]
    lines += [f"  {path}" for path in made]
    lines.append("write one to a board (it covers the whole flash: nothing of what the board held stays):")
    lines.append("  " + flash_command(board, made[0], "/dev/ttyUSB0"))
    return lines
