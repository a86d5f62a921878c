"""Process helpers: when a recorded process counts as alive."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tools._process import pid_alive

# The main thread ends (the exit syscall, not exit_group) while another thread sleeps on.
_LEADER_ENDS_FIRST = (
    "import ctypes, threading, time\n"
    "threading.Thread(target=time.sleep, args=(1.5,)).start()\n"
    "ctypes.CDLL(None).syscall(60, 0)\n"
)


def test_a_process_whose_main_thread_ended_is_alive_until_its_last_thread_is() -> None:
    # /proc says Z for such a process: influxd shutting down reads so, its ports still open.
    process = subprocess.Popen([sys.executable, "-c", _LEADER_ENDS_FIRST])
    try:
        time.sleep(0.5)
        state = Path(f"/proc/{process.pid}/stat").read_text()
        assert state[state.rfind(")") + 2] == "Z"
        assert pid_alive(process.pid)
        process.wait(timeout=10)
        assert not pid_alive(process.pid)
    finally:
        process.kill()
