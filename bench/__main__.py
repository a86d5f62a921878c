"""`make bench` (`python -m bench`): the ingest pipeline measured against its references on the real
stack, in one run and side by side. How and what it measures: docs/performance.md, "The ingest pipeline"."""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from bench.env import REPO, Bench
from bench.phases import FULL, PHASES, QUICK, Run, sizes_dict
from bench.report import DOCS, render, targets, update_docs

RESULTS = REPO / "bench" / "results"


def _first_line(argv: list[str]) -> str:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except OSError:
        return "?"
    lines = (result.stdout + result.stderr).strip().splitlines()
    return lines[0] if lines else "?"


def machine() -> dict[str, Any]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory_kb = int(line.split()[1])
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(memory_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "mosquitto": _first_line(["/usr/sbin/mosquitto", "-h"]),
        "influxdb": _first_line(["influxd", "version"]),
        "loadavg_start": os.getloadavg(),
    }


def commit() -> tuple[str, bool]:
    result = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    sha = result.stdout.strip() if result.returncode == 0 else "unknown"
    dirty = bool(
        subprocess.run(
            [
                "git",
                "-C",
                str(REPO),
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                "ingest",
                "tools",
                "shared",
            ],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    )
    return sha, dirty


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, one round: a check that it all runs")
    parser.add_argument(
        "--phases", default=",".join(PHASES), help=f"comma-separated, in this order: {', '.join(PHASES)}"
    )
    parser.add_argument("--repeat", type=int, help="rounds of the rate phases (default 3; --quick: 1)")
    parser.add_argument("--docs", action="store_true", help=f"write the table into {DOCS.relative_to(REPO)}")
    parser.add_argument("--render", type=Path, metavar="RESULTS_JSON", help="only render a results file's table")
    parser.add_argument("--keep", action="store_true", help="keep the temporary state folder (logs) afterwards")
    args = parser.parse_args()

    if args.render is not None:
        text = render(json.loads(args.render.read_text()), source=args.render)
        print(text)
        if args.docs:
            update_docs(text)
        return

    names = [n.strip() for n in args.phases.split(",") if n.strip()]
    unknown = [n for n in names if n not in PHASES]
    if unknown:
        parser.error(f"unknown phase(s) {', '.join(unknown)}; choose from {', '.join(PHASES)}")
    sizes = QUICK if args.quick else FULL
    if args.repeat:
        from dataclasses import replace

        sizes = replace(sizes, repeat=args.repeat)
    sha, dirty = commit()
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "commit": sha + ("+changes" if dirty else ""),
        "command": "make bench" + (f" BENCH_ARGS='{' '.join(sys.argv[1:])}'" if sys.argv[1:] else ""),
        "machine": machine(),
        "sizes": sizes_dict(sizes),
        "phases": {},
    }
    started = time.monotonic()
    # A SIGTERM (a CI time-out, `kill`) stops the stack and every process the bench started, too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    root = Path(tempfile.mkdtemp(prefix="fieldlink-bench-"))
    bench = Bench(root)

    def log(text: str) -> None:
        print(f"[{time.monotonic() - started:6.1f} s] {text}", file=sys.stderr, flush=True)

    run = Run(bench, sizes, results["phases"], log)
    try:
        log(f"stack up and {sizes.devices} + {sizes.storm_devices} devices in {root}")
        bench.up(sizes.devices, sizes.storm_devices if "storm" in names else 0)
        for name in names:
            log(f"phase {name}")
            t = time.monotonic()
            try:
                results["phases"][name] = PHASES[name](run)
            except Exception as exc:
                traceback.print_exc()
                results["phases"][name] = {"error": f"{type(exc).__name__}: {exc}"}
            results["phases"][name]["phase_seconds"] = round(time.monotonic() - t, 1)
    finally:
        bench.down()
        if not args.keep:
            import shutil

            shutil.rmtree(root, ignore_errors=True)
        else:
            log(f"state and logs kept in {root}")
    results["machine"]["loadavg_end"] = os.getloadavg()
    results["seconds"] = round(time.monotonic() - started, 1)
    results["targets"] = targets(results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = f"{time.strftime('%Y-%m-%d')}-{sha}{'-quick' if args.quick else ''}"
    out = RESULTS / f"{stem}.json"
    n = 2
    while out.exists():
        out = RESULTS / f"{stem}.{n}.json"
        n += 1
    out.write_text(json.dumps(results, indent=1, default=float) + "\n")
    text = render(results, source=out.relative_to(REPO))
    print(text)
    log(f"results in {out}")
    if args.docs:
        update_docs(text)
        log(f"table written into {DOCS}")


if __name__ == "__main__":
    main()
