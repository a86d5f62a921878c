"""What goes onto a board, and how: the node's modules (found in the tree at run time, so a module the
firmware gains goes along without a list to keep), compiled with mpy-cross for the board's
architecture, the device's bundle with its site's settings, and a two-line /main.py that starts the
node. `stage` lays this out in a folder exactly as the board's filesystem will hold it; `fieldlink
deploy` copies what differs with mpremote and checks every file by its hash on the board, and
`fieldlink image` packs the same folder into a littlefs image."""

from __future__ import annotations

import ast
import hashlib
import json
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest import write_atomic
from tools._board import BoardKind, Step, counter, tool
from tools._errors import FieldlinkError, UsageError
from tools._home import Home
from tools._mpy import mpy_cross_binary
from tools._simulate import CODE_ROOT
from tools._site import apply_site, load_site

# The folder of the bundle on the board, relative to the root (the board's working folder at boot).
BUNDLE = "bundle"
# Folders deploy owns on the board: files in them that are not in the deployment are removed (a stale
# .py would shadow its .mpy). The bundle folder is not among them: the node keeps its spool there.
OWNED = ("firmware", "shared")
# Run by the board after boot.py. Relative, so that the same files also start under the unix port
# from the folder that holds them (tests/test_deploy.py); at boot the board's folder is /.
BOARD_MAIN = """# Written by `fieldlink deploy`: the board runs this after boot.py; the node is firmware/main.mpy.
from firmware.main import run

run(["bundle"])
"""
# On the board: the sha256 of every file of the deployment, as one JSON line (mpremote run).
_HASH_SCRIPT = """# fieldlink deploy: the sha256 of each deployed file on this board, as one line of JSON.
import binascii
import hashlib
import json
import os


def digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            chunk = f.read(1024)
            if not chunk:
                break
            h.update(chunk)
    return binascii.hexlify(h.digest()).decode()


def walk(folder, found, dirs):
    try:
        entries = list(os.ilistdir(folder))
    except OSError:
        return
    dirs.append(folder)
    for entry in entries:
        path = folder + "/" + entry[0]
        if entry[1] == 0x4000:
            walk(path, found, dirs)
        else:
            found[path] = digest(path)


found = {}
dirs = []
for folder in FOLDERS:
    walk(folder, found, dirs)
for folder in OTHER_DIRS:
    try:
        os.stat(folder)
        dirs.append(folder)
    except OSError:
        pass
for path in FILES:
    try:
        found[path] = digest(path)
    except OSError:
        pass
print("FIELDLINK-HASHES " + json.dumps({"files": found, "dirs": dirs}))
"""
_MARK = "FIELDLINK-HASHES "
# Files per mpremote command: one command each would re-enter the raw REPL every time, one for all
# gives a single line too long to read in a dry run.
_COPY_CHUNK = 24
# MicroPython's ssl.SSLContext, which the node's TLS needs, came with 1.23.
_OLDEST_MICROPYTHON = (1, 23)


def node_sources(root: Path = CODE_ROOT) -> list[Path]:
    """The modules a board runs, relative to `root`: every module of firmware/ except the simulator's
    (firmware/sim/, the unix port's board), the shared/ modules those import (followed through their
    own imports), and all of shared/filterlib/ (the node imports each filter by its name)."""
    firmware = [p for p in (root / "firmware").rglob("*.py") if "sim" not in p.relative_to(root).parts[1:-1]]
    found = {p.relative_to(root) for p in firmware}
    found |= {p.relative_to(root) for p in (root / "shared" / "filterlib").rglob("*.py")}
    queue = sorted(found)
    while queue:
        for module in _imports(root / queue.pop()):
            relative = _module_file(root, module)
            if relative is not None and relative.parts[0] == "shared" and relative not in found:
                found.add(relative)
                queue.append(relative)
    for package in {p.parents[i] for p in found for i in range(len(p.parts) - 1)}:
        init = package / "__init__.py"
        if (root / init).is_file():
            found.add(init)
    # An empty __init__ makes no module: MicroPython imports a folder without one as a package.
    return sorted(p for p in found if not (p.name == "__init__.py" and not (root / p).read_text().strip()))


def _imports(path: Path) -> set[str]:
    """Every module an import statement in the file names (a `from x import y` names x and x.y)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _module_file(root: Path, module: str) -> Path | None:
    relative = Path(*module.split("."))
    for candidate in (relative.with_suffix(".py"), relative / "__init__.py"):
        if (root / candidate).is_file():
            return candidate
    return None


def compile_node(
    dest: Path, board: BoardKind, root: Path = CODE_ROOT, progress: Callable[[int, int], None] | None = None
) -> list[Path]:
    """Compile the node's modules into dest (firmware/app.mpy ...) for the board's architecture."""
    compiler = mpy_cross_binary()
    sources = node_sources(root)
    shutil.rmtree(dest, ignore_errors=True)
    built = []
    for number, relative in enumerate(sources, 1):
        target = dest / relative.with_suffix(".mpy")
        target.parent.mkdir(parents=True, exist_ok=True)
        # The embedded name is what tracebacks show: the module's own path on the board.
        argv = [compiler, f"-march={board.mpy_arch}", "-s", relative.with_suffix(".mpy").as_posix()]
        result = subprocess.run([*argv, "-o", str(target), str(root / relative)], capture_output=True, text=True)
        if result.returncode != 0:
            raise FieldlinkError(f"mpy-cross could not compile {relative}: {result.stderr.strip()}")
        built.append(target.relative_to(dest))
        if progress is not None:
            progress(number, len(sources))
    return built


# --- the device's files ------------------------------------------------------------------------------


def site_for(home: Home, device_id: str, site: str | None) -> str:
    """The site a device's board takes its settings from: the one named, else the device's `site`
    label (`fieldlink device add --site`)."""
    if site:
        return site
    from tools._devices import show_device

    labelled = show_device(home, device_id).labels.get("site")
    if not labelled:
        raise UsageError(
            f"device {device_id!r} has no site, and a board needs one for its Wi-Fi and broker: give --site NAME "
            "(see `fieldlink site list`)"
        )
    return labelled


def site_config(home: Home, device_id: str, site_name: str) -> dict[str, Any]:
    """The device's config with its site's broker and Wi-Fi, also written back to its bundle on this
    machine, so that the bundle and the board say the same."""
    path = home.device_dir(device_id) / "config.json"
    if not path.is_file():
        raise UsageError(f"no bundle for device {device_id!r} in {path.parent}; add it with `fieldlink device add`")
    try:
        config = json.loads(path.read_text())
        if not isinstance(config, dict):
            raise ValueError("not a JSON object")
    except ValueError as exc:
        raise UsageError(f"{path} is damaged ({exc}); add the device again") from exc
    config = apply_site(config, load_site(home, site_name), site_name)
    text = (json.dumps(config, indent=2) + "\n").encode()
    if path.read_bytes() != text:
        write_atomic(path, text)
    return config


def bundle_files(home: Home, device_id: str, site_name: str) -> dict[str, bytes]:
    """The bundle as the board gets it: `bundle/config.json` with the site's settings, and the
    certificate, key and CA in DER (the node's TLS reads DER)."""
    config = site_config(home, device_id, site_name)
    simulated = [s.get("name") for s in config.get("sensors", []) if isinstance(s, dict) and s.get("type") == "sim"]
    if simulated:
        raise UsageError(
            f"device {device_id!r} samples simulated sensors ({', '.join(map(str, simulated))}), which only the "
            "simulator has; give it the board's sensors first: `fieldlink device configure "
            f"{device_id} SENSING.json` (docs/field-guide.md)"
        )
    bundle = home.device_dir(device_id)
    try:
        tls = config["tls"]
        names = [tls["ca"], tls["cert"], tls["key"]]
    except (KeyError, TypeError) as exc:
        raise UsageError(f"{bundle / 'config.json'} is damaged (no tls files); add the device again") from exc
    files = {f"{BUNDLE}/config.json": (json.dumps(config, indent=2) + "\n").encode()}
    for name in names:
        if not isinstance(name, str) or "/" in name or not (bundle / name).is_file():
            raise UsageError(f"the bundle of {device_id!r} lacks {name}; add the device again")
        files[f"{BUNDLE}/{name}"] = (bundle / name).read_bytes()
    return files


@dataclass
class Staged:
    """A deployment laid out in a folder as the board's filesystem will hold it."""

    root: Path
    files: dict[str, str]  # path on the board (relative to its root) -> sha256

    @property
    def dirs(self) -> list[str]:
        """Every folder the files need, parents first."""
        found = {"/".join(p.split("/")[:i]) for p in self.files for i in range(1, p.count("/") + 1)}
        return sorted(found, key=lambda d: (d.count("/"), d))


def stage(dest: Path, compiled: Path, bundle: dict[str, bytes]) -> Staged:
    """The deployment in `dest`: main.py, the compiled modules (from `compiled`) and the bundle."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True, mode=0o700)
    contents: dict[str, bytes] = {"main.py": BOARD_MAIN.encode()}
    for path in sorted(compiled.rglob("*.mpy")):
        contents[path.relative_to(compiled).as_posix()] = path.read_bytes()
    contents.update(bundle)
    for relative, data in contents.items():
        target = dest / relative
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # The key is among them: private, as in the bundle.
        write_atomic(target, data, 0o600 if relative.startswith(BUNDLE + "/") else 0o644)
    return Staged(dest, {name: hashlib.sha256(data).hexdigest() for name, data in contents.items()})


def micropython_version(firmware: bytes) -> tuple[int, int] | None:
    match = re.search(rb"MicroPython v(\d+)\.(\d+)", firmware)
    return (int(match[1]), int(match[2])) if match else None


def check_version(firmware: bytes, path: Path) -> None:
    version = micropython_version(firmware)
    if version is not None and version < _OLDEST_MICROPYTHON:
        raise UsageError(
            f"{path} is MicroPython {version[0]}.{version[1]}; the node needs {_OLDEST_MICROPYTHON[0]}."
            f"{_OLDEST_MICROPYTHON[1]} or newer (its TLS uses ssl.SSLContext)"
        )


# --- mpremote ----------------------------------------------------------------------------------------


@dataclass
class BoardState:
    """What the board holds of a deployment: file hashes and folders."""

    files: dict[str, str] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=set)


@dataclass
class Plan:
    mkdirs: list[str]
    copies: list[str]
    removals: list[str]
    unchanged: list[str]


def plan(staged: Staged, board: BoardState) -> Plan:
    """What makes the board hold exactly the deployment: folders to make, files that differ or are
    missing, files of ours that the deployment no longer has."""
    copies = [p for p, sha in sorted(staged.files.items()) if board.files.get(p) != sha]
    unchanged = [p for p in sorted(staged.files) if p not in copies]
    stale = [p for p in sorted(board.files) if p.split("/")[0] in OWNED and p not in staged.files]
    return Plan([d for d in staged.dirs if d not in board.dirs], copies, stale, unchanged)


def hash_script(staged: Staged, dest: Path) -> Path:
    """The script that reads the board's hashes for this deployment, written to `dest`."""
    others = [p for p in staged.files if p.split("/")[0] not in OWNED]
    extra_dirs = sorted({d for d in staged.dirs if d.split("/")[0] not in OWNED})
    script = (
        f"FOLDERS = {json.dumps(list(OWNED))}\nOTHER_DIRS = {json.dumps(extra_dirs)}\n"
        f"FILES = {json.dumps(sorted(others))}\n" + _HASH_SCRIPT
    )
    write_atomic(dest, script.encode())
    return dest


def read_hashes(output: str) -> BoardState:
    for line in output.splitlines():
        if line.startswith(_MARK):
            try:
                data = json.loads(line[len(_MARK) :])
                return BoardState(dict(data["files"]), set(data["dirs"]))
            except (ValueError, KeyError, TypeError) as exc:
                raise FieldlinkError(f"the board's file list could not be read: {exc}") from exc
    tail = "\n".join(output.splitlines()[-6:])
    raise FieldlinkError(f"the board did not list its files; mpremote said:\n{tail}")


def mpremote(port: str, *commands: list[str]) -> list[str]:
    """One mpremote command line: connect, then the commands chained with `+`."""
    argv = [*tool("mpremote"), "connect", port]
    for number, command in enumerate(commands):
        argv += (["+"] if number else []) + command
    return argv


def read_step(port: str, script: Path, title: str = "read the board's files") -> Step:
    return Step(title, mpremote(port, ["run", str(script)]), progress=lambda line: None)


def copy_steps(port: str, staged: Staged, todo: Plan) -> list[Step]:
    """mpremote commands for the plan: folders first, then files in chunks, then stale files removed."""
    commands = [["fs", "mkdir", f":{d}"] for d in todo.mkdirs]
    commands += [["fs", "cp", "-f", str(staged.root / p), f":{p}"] for p in todo.copies]
    commands += [["fs", "rm", f":{p}"] for p in todo.removals]
    steps = []
    chunks = [commands[i : i + _COPY_CHUNK] for i in range(0, len(commands), _COPY_CHUNK)]
    for number, chunk in enumerate(chunks, 1):
        files = sum(1 for c in chunk if c[1] == "cp")
        part = f" ({number}/{len(chunks)})" if len(chunks) > 1 else ""
        title = f"copy {files} file(s){part}" if files else f"tidy the board{part}"
        steps.append(Step(title, mpremote(port, *chunk), progress=counter(len(chunk), re.compile(r"^(cp|mkdir|rm) "))))
    return steps


def restart_step(port: str) -> Step:
    return Step("restart the board", mpremote(port, ["reset"]), progress=lambda line: None)


def verify(staged: Staged, board: BoardState) -> None:
    """Every file of the deployment on the board with its hash: a copy that went wrong fails here."""
    wrong = [p for p, sha in sorted(staged.files.items()) if board.files.get(p) != sha]
    stale = [p for p in board.files if p.split("/")[0] in OWNED and p not in staged.files]
    if wrong or stale:
        problems = [f"{p}: {'missing' if p not in board.files else 'differs'}" for p in wrong]
        problems += [f"{p}: should not be there" for p in stale]
        raise FieldlinkError(
            "the board does not hold the deployment after copying (run `fieldlink deploy` again):\n  "
            + "\n  ".join(problems[:20])
        )


def build_dir(home: Home, *parts: str) -> Path:
    """A folder under the state folder for what flash, deploy and image build (keys go in: private)."""
    folder = home.root.joinpath("build", *parts)
    home.ensure()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return folder


def require_tools() -> None:
    """mpremote and mpy-cross are installed (an EnvironmentProblem says how to get them)."""
    tool("mpremote")
    mpy_cross_binary()
