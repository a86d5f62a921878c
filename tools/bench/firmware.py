"""`make bench-firmware`: what the node costs, measured side by side in one run; prints Markdown.

- the per-sample cost of a four-filter chain under the MicroPython unix port, against an empty chain;
- bytes per reading of the batch payload against a plain JSON object per reading;
- the node's heap in steady state, and a run of the full firmware (compiled to .mpy, as for a board)
  for --minutes of simulated time at each heap size given, against a real broker over mutual TLS and
  the real ingest service (whose acks end each batch's stay in the node's spool);
- what the node's flash spool costs the flash at the default rates, on littlefs itself (erases and
  programs counted on a RAM block device, tools/bench/mp_spool_wear.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from rich.progress import Progress

from shared.protocol import encode_batch
from tools._config import check_sensing
from tools._devices import add_device
from tools._home import Home
from tools._mpy import build_mpy
from tools._process import free_port
from tools._simulate import micropython_binary
from tools._stack import Stack

HERE = Path(__file__).resolve().parent
# The node measured: two simulated sensors, one with a four-filter chain, an 8 KiB flash spool (which the
# run with the broker unreachable fills).
SENSING: dict[str, Any] = {
    "sample_interval_ms": 1000,
    "batch": {"max_readings": 30, "max_age_ms": 10000},
    "spool": {"max_bytes": 8192},
    "sensors": [
        {
            "name": "temperature",
            "type": "sim",
            "signal": "temperature",
            "filters": [
                {"median": {"window_size": 5, "send_every": 1}},
                {"offset": -0.3},
                {"exponential_moving_average": {"alpha": 0.2, "send_every": 1}},
                {"round": 2},
            ],
        },
        {
            "name": "humidity",
            "type": "sim",
            "signal": "humidity",
            "filters": [{"clamp": {"min_value": 0, "max_value": 100}}, {"delta": 0.5}],
        },
    ],
}


def _env() -> dict[str, str]:
    # Run from the folder of .mpy files, as a board runs from its filesystem: module paths
    # (`__file__`, interned when a module loads) are then as short as a board's.
    return dict(os.environ, MICROPYPATH=".frozen:")


def filter_cost(mpy: Path, samples: int, heap: str) -> dict[str, dict[str, float]]:
    # At a node's heap size: with the default 2 MB every collection sweeps 2 MB, which makes
    # float-allocating filters look several times slower than they are on a board.
    data: dict[str, dict[str, float]] = _mp_json(mpy, "mp_filter_cost.py", heap, "the filter timing", str(samples))
    return data


def spool_wear(mpy: Path) -> dict[str, dict[str, int]]:
    data: dict[str, dict[str, int]] = _mp_json(mpy, "mp_spool_wear.py", "8M", "the spool wear run")
    return data


def _mp_json(mpy: Path, script: str, heap: str, what: str, *args: str) -> Any:
    """Run one of this folder's MicroPython scripts in a heap of `heap`; the JSON of its last line."""
    result = subprocess.run(
        [micropython_binary(), "-X", f"heapsize={heap}", str(HERE / script), *args],
        env=_env(),
        cwd=mpy,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        sys.exit(f"{what} failed under MicroPython:\n{result.stdout}{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def start_ingest(home: Path, log: Path) -> subprocess.Popen[bytes]:
    """The real ingest service on this stack, once connected: it acknowledges the node's batches. The
    node's clock runs --time-scale times faster than real time, so the clock-skew limit is an hour."""
    port = free_port()
    env = dict(os.environ, FIELDLINK_HOME=str(home), FIELDLINK_MAX_CLOCK_SKEW_S="3600")
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tools", "ingest", "--port", str(port)], env=env, stdout=out, stderr=out
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
                if json.loads(answer.read()).get("mqtt_connected"):
                    return process
        except OSError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.2)
    process.kill()
    sys.exit(f"the ingest service did not connect:\n{log.read_text()[-2000:]}")


def bytes_per_reading() -> dict[str, float]:
    """A batch of 20 ticks x 3 sensors against one JSON object per reading, as a naive node would send."""
    sensors = ["temperature", "humidity", "pressure"]
    t0 = 1795311729979
    readings = [(tick * 1000, i, round(20 + i * 20 + tick * 0.07, 2)) for tick in range(20) for i in range(3)]
    batch = encode_batch(17, t0, sensors, readings)
    plain = [
        json.dumps({"device": "node-1", "sensor": sensors[i], "timestamp": t0 + off, "value": v})
        for off, i, v in readings
    ]
    return {
        "readings": len(readings),
        "batch_bytes": len(batch),
        "batch_per_reading": len(batch) / len(readings),
        "plain_per_reading": sum(len(p) for p in plain) / len(plain),
    }


def run_node(mpy: Path, bundle: Path, heap: str, minutes: float, scale: int) -> dict[str, Any]:
    shutil.rmtree(bundle / "spool", ignore_errors=True)  # each run starts with an empty spool
    argv = [
        micropython_binary(),
        "-X",
        f"heapsize={heap}",
        "-m",
        "firmware.main",
        str(bundle),
        "--duration",
        str(minutes * 60),
        "--time-scale",
        str(scale),
        "--stats-every",
        "60",
    ]
    started = time.monotonic()
    result = subprocess.run(
        argv, env=_env(), cwd=mpy, capture_output=True, text=True, timeout=minutes * 60 / scale + 120
    )
    # A simulated node's lines begin with its device time (firmware/sim/board.py: log).
    heaps = [json.loads(line.split(" heap: ", 1)[1]) for line in result.stdout.splitlines() if " heap: " in line]
    stopped = re.search(r"^\S+ stopped: (.*)$", result.stdout, re.M)
    found = re.search(r"^.*MemoryError.*$", result.stdout + result.stderr, re.M)
    error = found[0].strip() if found else None
    counters = json.loads(stopped[1]) if stopped else None
    # A MemoryError (or another failure) the node's loop survived is counted, not printed: one is
    # still a run that did not fit.
    survived = {k: v for k, v in (counters or {}).items() if k in ("oom", "loop_errors") and v}
    if survived and error is None and result.returncode == 0:
        error = f"ran to the end, surviving {json.dumps(survived)}"
    return {
        "heap": heap,
        "ok": result.returncode == 0 and error is None and stopped is not None,
        "error": error or (None if result.returncode == 0 else result.stdout[-300:]),
        "alloc": [h["alloc"] for h in heaps],
        "device_s": heaps[-1]["device_s"] if heaps else 0,
        "counters": counters,
        "seconds": time.monotonic() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=20000, help="samples per filter timing run")
    parser.add_argument("--minutes", type=float, default=10, help="simulated minutes per firmware run")
    parser.add_argument("--time-scale", type=int, default=20, help="device time runs this much faster")
    parser.add_argument("--heaps", default="48k,56k,64k,80k", help="heap sizes for the firmware runs")
    parser.add_argument(
        "--outage-heap", default="64k", help="heap size for the run with the broker unreachable throughout"
    )
    parser.add_argument("--filter-heap", default="128k", help="heap size for the filter timing")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="fieldlink-bench-") as tmp:
        root = Path(tmp)
        mpy = root / "mpy"
        modules = build_mpy(mpy, exclude=("hal/esp32",))
        home = Home(root / "home")
        stack = Stack(home)
        stack.up(free_port(), free_port(), free_port())
        service = None
        try:
            _, bundle = add_device(home, "bench-node", sensing=check_sensing(SENSING))
            # The same node with its broker unreachable: the spool fills to its limit and drops.
            offline = root / "offline-node"
            shutil.copytree(bundle, offline)
            config = json.loads((offline / "config.json").read_text())
            config["broker"]["port"] = free_port()
            (offline / "config.json").write_text(json.dumps(config))
            service = start_ingest(home.root, root / "ingest.log")
            heaps = args.heaps.split(",")
            with Progress(transient=True) as progress:
                task = progress.add_task("benchmarking", total=4 + len(heaps))
                cost = filter_cost(mpy, args.samples, args.filter_heap)
                progress.advance(task)
                sizes = bytes_per_reading()
                progress.advance(task)
                wear = spool_wear(mpy)
                progress.advance(task)
                runs = []
                for heap in heaps:
                    runs.append(run_node(mpy, bundle, heap, args.minutes, args.time_scale))
                    progress.advance(task)
                outage = run_node(mpy, offline, args.outage_heap, args.minutes, args.time_scale)
                outage["heap"] += ", broker unreachable throughout"
                runs.append(outage)
                progress.advance(task)
        finally:
            if service is not None:
                service.terminate()
                service.wait(30)
            stack.down()

    command = "make bench-firmware" + (f" BENCH_ARGS='{' '.join(sys.argv[1:])}'" if sys.argv[1:] else "")
    four, empty = cost["four"], cost["empty"]
    print(
        f"<!-- produced by `{command}` on {time.strftime('%Y-%m-%d')}, {platform.machine()}, "
        f"{os.cpu_count()} cores; {len(modules)} modules compiled with mpy-cross -->"
    )
    print(f"\n### Filter chain, per sample (MicroPython unix port, `-X heapsize={args.filter_heap}`)\n")
    print("| chain | µs per sample | bytes allocated per sample | heap growth after collection |")
    print("| --- | --- | --- | --- |")
    print(
        f"| empty (loop and call only) | {empty['us_per_sample']:.2f} | {empty['bytes_per_sample']:.1f} | "
        f"{empty['heap_growth_bytes']} |"
    )
    print(
        f"| median(5) → offset → EMA → round | {four['us_per_sample']:.2f} | {four['bytes_per_sample']:.1f} | "
        f"{four['heap_growth_bytes']} |"
    )
    print(
        f"\nThe four filters cost {four['us_per_sample'] / max(empty['us_per_sample'], 1e-9):.1f}× the empty "
        f"chain; {args.samples} samples, best of five, both in one process."
    )
    print("\n### Payload size\n")
    print(
        f"A batch of {sizes['readings']} readings (20 ticks × 3 sensors) is {sizes['batch_bytes']} bytes: "
        f"{sizes['batch_per_reading']:.1f} bytes per reading, against {sizes['plain_per_reading']:.1f} for a "
        f"plain JSON object per reading ({sizes['plain_per_reading'] / sizes['batch_per_reading']:.1f}× "
        "larger)."
    )
    print("\n### The flash spool's cost to the flash, one hour at the default rates (littlefs, 4096-byte blocks)\n")
    print(
        "| the service | batches | payload bytes | record writes | block erases | bytes programmed | spool at the end |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, label in (("acknowledged", "acknowledges each batch"), ("service_away", "is away all hour")):
        w = wear[name]
        print(
            f"| {label} | {w['batches']} | {w['payload_bytes']} | {w['record_writes']} | {w['erases']} | "
            f"{w['programmed_bytes']} | {w['spool_bytes_end']} B |"
        )
    print(
        f"\n### Full firmware, {args.minutes:g} simulated minutes (time scale {args.time_scale}), broker over mTLS, "
        "the ingest service acknowledging\n"
    )
    print(
        "| heap (`-X heapsize`) | result | steady-state heap allocated (bytes, after collection) | "
        "device counters at the end |"
    )
    print("| --- | --- | --- | --- |")
    for run in runs:
        steady = f"{min(run['alloc'])}–{max(run['alloc'])}" if run["alloc"] else "—"
        result = (
            f"ran to the end, no MemoryError (last heap report at {run['device_s']} s)"
            if run["ok"]
            else f"failed: {run['error']}"
        )
        print(f"| {run['heap']} | {result} | {steady} | {json.dumps(run['counters']) if run['counters'] else '—'} |")


if __name__ == "__main__":
    main()
