"""Compile the node's code (firmware/ and shared/) to .mpy with mpy-cross, as for a board."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tools._errors import EnvironmentProblem
from tools._simulate import CODE_ROOT

# Emulated chips stand in for hardware on the unix port; a board has no use for them, and the
# board files of the other platform are left out by the caller if it wants.
PACKAGES = ("firmware", "shared")


def mpy_cross_binary() -> str:
    beside = Path(sys.executable).parent / "mpy-cross"
    found = str(beside) if beside.is_file() else shutil.which("mpy-cross")
    if found is None:
        raise EnvironmentProblem("mpy-cross is missing; run `make setup` (it comes with the dev extras)")
    return found


def build_mpy(dest: Path, exclude: tuple[str, ...] = ()) -> list[Path]:
    """Compile every module of firmware/ and shared/ into dest, keeping the package layout."""
    compiler = mpy_cross_binary()
    built = []
    for package in PACKAGES:
        for source in sorted((CODE_ROOT / package).rglob("*.py")):
            relative = source.relative_to(CODE_ROOT)
            if any(part in str(relative) for part in exclude):
                continue
            if source.name == "__init__.py" and not source.read_text().strip():
                continue  # MicroPython imports a folder without __init__ as a package: no module to hold
            target = dest / relative.with_suffix(".mpy")
            target.parent.mkdir(parents=True, exist_ok=True)
            # The embedded source name is what tracebacks show. Made the same as the module's __file__
            # when it runs from the root of a board's filesystem, it is one interned string, not two.
            source_name = target.relative_to(dest).as_posix()
            result = subprocess.run(
                [compiler, "-s", source_name, "-o", str(target), str(source)], capture_output=True, text=True
            )
            if result.returncode != 0:
                raise EnvironmentProblem(f"mpy-cross failed on {relative}: {result.stderr.strip()}")
            built.append(target)
    return built
