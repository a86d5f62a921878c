"""`make setup` shows its steps, one line each, and keeps pip's and apt-get's output in a log that a failing
step names (issue 12, item 5)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STEP = ROOT / "tools" / "setup" / "step.sh"


def _step(log: Path, what: str, script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(STEP), str(log), what, "sh", "-c", script], capture_output=True, text=True, timeout=30, check=False
    )


def test_a_step_that_works_is_one_line_and_its_noise_goes_to_the_log(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "setup.log"
    result = _step(log, "installing things", "echo 'Collecting 500 lines of noise'; echo warning >&2")
    assert result.returncode == 0
    assert re.fullmatch(r"  installing things \.\.\. ok \(\d+ s\)\n", result.stdout)
    assert result.stderr == ""
    assert "Collecting 500 lines of noise" in log.read_text() and "warning" in log.read_text()


def test_a_step_that_fails_names_the_log_and_shows_its_end(tmp_path: Path) -> None:
    log = tmp_path / "setup.log"
    result = _step(log, "installing things", "echo 'ERROR: No matching distribution found for nothing' >&2; exit 3")
    assert result.returncode == 3
    assert result.stdout == "  installing things ... failed (exit code 3)\n"
    assert result.stderr.splitlines()[0] == f"error: installing things failed; the whole output is in {log}, its end:"
    assert "    ERROR: No matching distribution found for nothing" in result.stderr.splitlines()


def test_every_install_in_the_makefile_is_a_step() -> None:
    """No pip or apt-get command prints to the terminal: each runs through step.sh."""
    for path in (ROOT / "Makefile", ROOT / "tools" / "setup" / "system-packages.sh"):
        for line in path.read_text().splitlines():
            command = line.strip()
            if re.search(r"(pip|apt-get) (install|update)", command) and not command.startswith(("#", "echo")):
                assert "$(STEP)" in line or '"$step"' in line, f"{path.name}: {line.strip()}"
