"""The commands that take a node from the desk to the field: `fieldlink site ...`, `flash`, `deploy`,
`image` and `monitor` (registered in tools/cli.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from tools._board import BOARDS, parse_size
from tools._errors import UsageError
from tools._flash import deploy, flash, image_summary, images
from tools._home import Home
from tools._monitor import monitor
from tools._site import load_site, remove_site, set_wifi, site_names, update_site

_CONTEXT = {"help_option_names": ["-h", "--help"]}
_BOARD = click.option(
    "--board",
    "board_name",
    default="esp32",
    show_default=True,
    type=click.Choice(sorted(BOARDS)),
    help="The board's chip family (docs/field-guide.md lists what is supported).",
)
_SITE = click.option("--site", help="The site whose Wi-Fi and broker the node gets (default: the device's site label).")
_FIRMWARE = click.option(
    "--firmware",
    type=click.Path(dir_okay=False, path_type=Path),
    help="MicroPython's firmware .bin for the board (micropython.org/download/ESP32_GENERIC/).",
)
_DRY_RUN = click.option("--dry-run", is_flag=True, help="Check everything and print the commands; write nothing.")


def _home() -> Home:
    return Home()


# --- site --------------------------------------------------------------------------------------------


@click.group(context_settings=_CONTEXT)
def site() -> None:
    """Site settings: Wi-Fi networks, the broker's address as the site sees it, NTP servers.

    One file per site in the state folder (sites/NAME.json, mode 0600, never committed). Boards take
    their site's settings when flashed, deployed or imaged.
    """


@site.command("set", context_settings=_CONTEXT)
@click.argument("name")
@click.option("--broker", help="The broker's host name or address, as the site's nodes reach it.")
@click.option("--port", type=click.IntRange(1, 65535), help="The broker's MQTT over TLS port (default 8883).")
@click.option(
    "--server-name",
    help="The name the broker's certificate must carry, if not the --broker host ('' to clear).",
)
@click.option("--ntp", multiple=True, metavar="HOST", help="An NTP server (repeatable, tried in order).")
def site_set(name: str, broker: str | None, port: int | None, server_name: str | None, ntp: tuple[str, ...]) -> None:
    """Create site NAME or change the settings given (the others stay)."""
    settings = update_site(_home(), name, broker=broker, port=port, server_name=server_name, ntp=ntp)
    _show(name, settings.lines())


@site.command("wifi", context_settings=_CONTEXT)
@click.argument("name")
@click.argument("ssid")
@click.option("--open", "open_network", is_flag=True, help="An open network (no passphrase).")
@click.option("--remove", is_flag=True, help="Take the network out of the site.")
def site_wifi(name: str, ssid: str, open_network: bool, remove: bool) -> None:
    """Add Wi-Fi network SSID to site NAME (or change its passphrase); nodes try the networks in order.

    The passphrase is asked for (hidden), or read as one line from standard input when that is not
    a terminal; it is never taken from the command line, where shell history would keep it.
    """
    password: str | None
    if remove:
        password = None
    elif open_network:
        password = ""
    elif sys.stdin.isatty():
        password = click.prompt(f"passphrase of {ssid}", hide_input=True, confirmation_prompt=True)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise UsageError("no passphrase on standard input (use --open for an open network)")
    _show(name, set_wifi(_home(), name, ssid, password).lines())


@site.command("show", context_settings=_CONTEXT)
@click.argument("name")
def site_show(name: str) -> None:
    """Show site NAME's settings (passphrases masked)."""
    _show(name, load_site(_home(), name).lines())


@site.command("list", context_settings=_CONTEXT)
def site_list() -> None:
    """List the sites."""
    names = site_names(_home())
    click.echo("\n".join(names) if names else "no sites; make one with `fieldlink site set NAME --broker HOST`")


@site.command("rm", context_settings=_CONTEXT)
@click.argument("name")
def site_rm(name: str) -> None:
    """Delete site NAME's file (boards already deployed keep their settings)."""
    remove_site(_home(), name)
    click.echo(f"site {name} removed")


def _show(name: str, lines: list[str]) -> None:
    click.echo(f"site {name} ({_home().root / 'sites' / (name + '.json')})")
    for line in lines:
        click.echo(f"  {line}")


# --- boards ------------------------------------------------------------------------------------------


@click.command("flash", context_settings=_CONTEXT)
@click.argument("port")
@click.argument("device_id")
@_FIRMWARE
@_SITE
@_BOARD
@click.option("--baud", default=460800, show_default=True, type=click.IntRange(9600, 3_000_000))
@_DRY_RUN
def flash_command(
    port: str, device_id: str, firmware: Path | None, site: str | None, board_name: str, baud: int, dry_run: bool
) -> None:
    """Erase the board on PORT, write MicroPython, then deploy DEVICE_ID's node to it.

    esptool erases the flash and writes --firmware; the node (compiled) and DEVICE_ID's bundle with
    its site's settings are then copied with mpremote and checked by hash on the board.
    """
    result = flash(_home(), port, device_id, firmware, site, BOARDS[board_name], dry_run, baud)
    click.echo(result if dry_run else f"{device_id} flashed on {port}: {result}")


@click.command("deploy", context_settings=_CONTEXT)
@click.argument("port")
@click.argument("device_id")
@_SITE
@_BOARD
@_DRY_RUN
def deploy_command(port: str, device_id: str, site: str | None, board_name: str, dry_run: bool) -> None:
    """Update the node on the board on PORT (MicroPython already on it): only the files that differ.

    The node's modules, compiled with mpy-cross for the board, and DEVICE_ID's bundle with its site's
    settings; every file is checked by its sha256 on the board, then the board restarts.
    """
    result = deploy(_home(), port, device_id, site, BOARDS[board_name], dry_run)
    click.echo(result if dry_run else f"{device_id} deployed on {port}: {result}")


@click.command("image", context_settings=_CONTEXT)
@click.argument("device_ids", nargs=-1, required=True)
@_FIRMWARE
@_SITE
@_BOARD
@click.option(
    "--flash-size",
    help="The boards' flash size (4MB, 8MB, 16MB); default the one the firmware names. It must be the real one.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the images go (default: images/ in the state folder; they hold device keys).",
)
def image_command(
    device_ids: tuple[str, ...],
    firmware: Path | None,
    site: str | None,
    board_name: str,
    flash_size: str | None,
    out: Path | None,
) -> None:
    """A factory image per device: MicroPython plus a littlefs filesystem with the node and the
    device's bundle, merged into one .bin written at 0x0 with one esptool command per board."""
    board = BOARDS[board_name]
    home = _home()
    size = parse_size(flash_size) if flash_size else None
    where, made = images(home, device_ids, firmware, site, board, size, out or home.root / "images")
    for line in image_summary(board, where, made):
        click.echo(line)


@click.command("monitor", context_settings=_CONTEXT)
@click.argument("port")
@click.option("--baud", default=115200, show_default=True, type=click.IntRange(300, 3_000_000))
@click.option("--reset", is_flag=True, help="Restart the board first (through RTS), to see its boot.")
def monitor_command(port: str, baud: int, reset: bool) -> None:
    """The board's serial log, each line stamped with this machine's time; Ctrl-C leaves."""
    monitor(port, baud, reset)


COMMANDS = [site, flash_command, deploy_command, image_command, monitor_command]
