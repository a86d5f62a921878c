"""firmware/hal/esp32.py cannot run here (no board, no emulator), so mypy checks it against the
ESP32 port's stubs: a misspelt method or a wrong argument count fails this test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STUBS = Path(os.environ.get("FIELDLINK_ESP32_STUBS", ROOT / ".venv" / "esp32-stubs"))
HAL = ROOT / "firmware" / "hal" / "esp32.py"


def _mypy_errors(path: Path, cwd: Path) -> list[str]:
    assert (STUBS / "machine.pyi").is_file(), f"no ESP32 stubs in {STUBS}; run `make setup`"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--no-site-packages",
            "--follow-imports=silent",
            "--check-untyped-defs",
            "--ignore-missing-imports",
            "--no-incremental",
            "--python-version",
            "3.11",
            str(path),
        ],
        env=dict(os.environ, MYPYPATH=f"{STUBS}{os.pathsep}{ROOT}"),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    # The stubs carry a few errors of their own; only ours count.
    return [line for line in result.stdout.splitlines() if f"{path.name}:" in line and ": error:" in line]


def test_esp32_hal_matches_the_port_stubs(tmp_path: Path) -> None:
    assert _mypy_errors(HAL, tmp_path) == []


def test_the_check_catches_wrong_calls(tmp_path: Path) -> None:
    broken = tmp_path / "esp32_broken.py"
    source = HAL.read_text()
    source = source.replace(
        'self._wlan.connect(chosen["ssid"], chosen.get("password", ""))', 'self._wlan.conect(chosen["ssid"])'
    )
    source = source.replace('onewire.OneWire(machine.Pin(spec["pin"]))', "onewire.OneWire()")
    broken.write_text(source)
    errors = _mypy_errors(broken, tmp_path)
    assert len(errors) == 2, errors
    assert '"WLAN" has no attribute "conect"' in errors[0] + errors[1]
    assert 'Missing positional argument "pin" in call to "OneWire"' in errors[0] + errors[1]
