"""The dual-interpreter tests (tests/dual) again, under the MicroPython unix port."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tools._simulate import micropython_binary, node_env

ROOT = Path(__file__).resolve().parent.parent
DUAL = sorted(f"tests.dual.{p.stem}" for p in (ROOT / "tests" / "dual").glob("test_*.py"))


def test_dual_suites_pass_under_micropython() -> None:
    result = subprocess.run(
        [micropython_binary(), str(ROOT / "tests" / "mp_runner.py"), *DUAL],
        env=node_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    match = re.search(r"micropython: (\d+) passed, (\d+) failed", result.stdout)
    assert match, result.stdout
    passed, failed = int(match[1]), int(match[2])
    expected = sum(
        len(re.findall(r"^def test_", (ROOT / "tests" / "dual" / f"{m.rsplit('.', 1)[1]}.py").read_text(), re.M))
        for m in DUAL
    )
    assert (passed, failed) == (expected, 0)


def test_the_node_compiles_with_mpy_cross(tmp_path: Path) -> None:
    """Every module of firmware/ and shared/ compiles to .mpy, as for a board (tools/_mpy.py)."""
    from tools._mpy import build_mpy

    built = build_mpy(tmp_path)
    names = {p.relative_to(tmp_path).as_posix() for p in built}
    assert {"firmware/spool.mpy", "firmware/mqtt.mpy", "firmware/app.mpy", "firmware/sim/faults.mpy"} <= names
