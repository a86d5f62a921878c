"""mpremote's stand-in for tests: acts on a folder ($FAKE_BOARD) as the board's filesystem, for the
commands fieldlink uses (connect PORT, then `run FILE`, `fs mkdir`, `fs cp -f`, `fs rm`, `reset`,
chained with +). `run` runs the script under the MicroPython unix port in that folder, so the hash
script that deploy sends to a board really runs on MicroPython. Every command line is logged to
$FAKE_LOG. $FAKE_CORRUPT names a file whose copy arrives damaged; $FAKE_SILENT makes the board answer
nothing (as a board without MicroPython)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps(["mpremote", *args]) + "\n")
board = Path(os.environ["FAKE_BOARD"])
if args[:1] != ["connect"] or not os.path.exists(args[1]):
    print(f"mpremote: failed to access {args[1] if len(args) > 1 else '?'} (it may be in use by another program)")
    sys.exit(1)
if os.environ.get("FAKE_SILENT"):
    print("mpremote: could not enter raw repl")
    sys.exit(1)
commands: list[list[str]] = [[]]
for arg in args[2:]:
    if arg == "+":
        commands.append([])
    else:
        commands[-1].append(arg)
for command in commands:
    if command[0] == "run":
        micropython = str(Path(sys.executable).parent / "micropython")
        result = subprocess.run(
            [micropython, str(Path(command[1]).resolve())], cwd=board, capture_output=True, text=True
        )
        print(result.stdout, end="")
        if result.returncode:
            print(result.stderr)
            sys.exit(1)
    elif command[:2] == ["fs", "mkdir"]:
        target = board / command[2].lstrip(":")
        print(f"mkdir :{command[2].lstrip(':')}")
        if target.exists():
            print("mpremote: mkdir: File exists.")
            sys.exit(1)
        target.mkdir()
    elif command[:3] == ["fs", "cp", "-f"]:
        source, dest = command[3], command[4].lstrip(":")
        print(f"cp {source} :{dest}")
        if not (board / dest).parent.is_dir():
            print("mpremote: cp: No such file or directory.")
            sys.exit(1)
        shutil.copyfile(source, board / dest)
        if dest == os.environ.get("FAKE_CORRUPT"):
            with open(board / dest, "ab") as f:
                f.write(b"\x00")
    elif command[:2] == ["fs", "rm"]:
        print(f"rm :{command[2].lstrip(':')}")
        (board / command[2].lstrip(":")).unlink()
    elif command == ["reset"]:
        pass
    else:
        print(f"fake mpremote: unknown command {command}")
        sys.exit(2)
