"""`fieldlink monitor PORT` on a pseudo-terminal standing in for the board's serial port: each line
stamped, control sequences from the board shown as text and not obeyed, Ctrl-C leaves cleanly, and
a second program on the same port is told it is busy."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import time
from pathlib import Path

from tests.support import FIELDLINK, fieldlink


def _read_until(process: subprocess.Popen[bytes], text: bytes, timeout: float = 15) -> bytes:
    assert process.stdout is not None
    seen = b""
    deadline = time.monotonic() + timeout
    while text not in seen:
        assert time.monotonic() < deadline, seen
        ready, _, _ = select.select([process.stdout], [], [], 0.2)
        if ready:
            seen += os.read(process.stdout.fileno(), 4096)
    return seen


def test_monitor_stamps_lines_and_leaves_on_ctrl_c(tmp_path: Path) -> None:
    master, slave = os.openpty()
    port = os.ttyname(slave)
    os.close(slave)
    env = dict(os.environ, FIELDLINK_HOME=str(tmp_path))
    monitor = subprocess.Popen([*FIELDLINK, "monitor", port], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _read_until(monitor, f"monitoring {port} at 115200 baud; Ctrl-C leaves".encode())
        busy = fieldlink(tmp_path, "monitor", port)
        assert busy.returncode == 3
        assert re.fullmatch(
            rf"error: {re.escape(port)} is busy: pid {monitor.pid} \(\S+\) has it open; close that \(a serial "
            r"monitor, screen, an IDE\) and try again",
            busy.stderr.strip(),
        ), busy.stderr
        os.write(
            master,
            b"node node-7 starting on esp32 with sensors ['soil']\r\nmqtt: refused\x1b[2J\x07 ; retrying\r\nhalf",
        )
        seen = _read_until(monitor, b"retrying\n").decode()
        lines = seen.splitlines()[-2:]
        assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3} node node-7 starting on esp32 with sensors \['soil'\]", lines[0])
        assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3} mqtt: refused ; retrying", lines[1])  # no escape reached us
        monitor.send_signal(signal.SIGINT)
        rest = _read_until(monitor, b"monitor stopped\n").decode()
        assert re.search(r"\d\d:\d\d:\d\d\.\d{3} half\n", rest)  # the unfinished line is not lost
        assert monitor.wait(10) == 0
        assert monitor.stderr is not None and b"Traceback" not in monitor.stderr.read()
    finally:
        monitor.kill()
        os.close(master)
    missing = fieldlink(tmp_path, "monitor", "/dev/ttyUSB-none")
    assert missing.returncode == 3 and missing.stderr.startswith("error: no serial port /dev/ttyUSB-none")
