"""`fieldlink monitor PORT`: a board's serial log, each line stamped with this machine's time and the
node's own lines picked out (errors red, progress green), until Ctrl-C."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import click
import serial

from tools._board import check_port
from tools._errors import EnvironmentProblem, ServiceFailed

# What the node prints (firmware/main.py, app.py, config.py, hal/esp32.py), by how it reads.
_BAD = re.compile(
    r"^(fieldlink node:|config error|mqtt:|sampling failed|ntp failed|Traceback|\w*Error\b|"
    r"The filesystem appears to be corrupted)"
)
_GOOD = re.compile(r"^(node \S+ starting|connected to|clock set from|stopped:)")
_BUSY = re.compile(r"^(wifi: joining)")
# Anything a terminal would act on (escape sequences, bells), except tabs: shown, never obeyed.
_CONTROL = re.compile(r"\x1b\[[0-9;]*[A-Za-z]|[\x00-\x08\x0b-\x1f\x7f]")


def style(line: str) -> str:
    """A line of the board's output as the monitor shows it: stamped and coloured by what it says."""
    text = _CONTROL.sub("", line)
    stamp = time.strftime("%H:%M:%S") + f".{int(time.time() * 1000) % 1000:03d}"
    colour: dict[str, Any] = {}
    if _BAD.search(text):
        colour = {"fg": "red", "bold": True}
    elif _GOOD.search(text):
        colour = {"fg": "green"}
    elif _BUSY.search(text):
        colour = {"fg": "yellow"}
    return click.style(stamp, dim=True) + " " + (click.style(text, **colour) if colour else text)


def monitor(port: str, baud: int, reset: bool, echo: Callable[[str], None] = click.echo) -> None:
    check_port(port)
    link = serial.Serial()
    link.port = port
    link.baudrate = baud
    link.timeout = 0.2
    link.exclusive = True  # a flash or a deployment cannot start on the port while it is watched
    # On ESP32 boards with auto-reset, RTS holds EN (reset) and DTR GPIO0 (boot mode): both released.
    link.dtr = False
    link.rts = False
    try:
        link.open()
    except serial.SerialException as exc:
        raise EnvironmentProblem(f"cannot open {port}: {exc}") from exc
    pending = b""
    try:
        if reset:
            _reset(link)
        echo(click.style(f"monitoring {port} at {baud} baud; Ctrl-C leaves", dim=True))
        while True:
            try:
                chunk = link.read(4096)
            except serial.SerialException as exc:
                raise ServiceFailed(f"{port} went away: {exc}") from exc
            pending += chunk
            *lines, pending = re.split(rb"\r?\n", pending)
            for line in lines:
                echo(style(line.decode(errors="replace")))
    except KeyboardInterrupt:
        if pending:
            echo(style(pending.decode(errors="replace")))
        echo(click.style("monitor stopped", dim=True))
    finally:
        link.close()


def _reset(link: serial.Serial) -> None:
    """Pulse EN through RTS, as esptool does: the board restarts and its boot log shows from the top."""
    try:
        link.rts = True
        time.sleep(0.1)
        link.rts = False
    except OSError:  # a port without modem lines (a bare UART adapter): press the board's EN button
        click.echo(click.style("this port cannot reset the board; press its EN/RESET button", fg="yellow"))
