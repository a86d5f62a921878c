"""Logs a person can read: ISO 8601 times in the service's lines (uvicorn's included) and the broker's,
`--log-format json`, `make run`'s summary line, `fieldlink simulate`'s closing summary."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from datetime import datetime
from pathlib import Path

from tests.support import FIELDLINK, IngestInfo, StackInfo, fieldlink, run_node, wait_until
from tools._process import free_port, stop_pid

ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d"


def test_the_services_lines_uvicorns_included_carry_iso_times(ingest: IngestInfo) -> None:
    lines = [line for line in ingest.log.read_text().splitlines() if line.strip()]
    uvicorn = [line for line in lines if "uvicorn" in line]
    assert uvicorn, lines[:5]  # "Uvicorn running on ...", "Application startup complete."
    stamped = [line for line in lines if re.match(ISO + r" (INFO|WARNING|ERROR|DEBUG) \S+: ", line)]
    assert all(line in stamped for line in uvicorn)
    assert any("connected to mqtts://" in line for line in stamped)


def test_log_format_json_gives_one_object_per_line(tmp_path: Path) -> None:
    env = dict(
        os.environ,
        FIELDLINK_HOME=str(tmp_path / "home"),
        FIELDLINK_MQTT_TLS="false",
        FIELDLINK_MQTT_PORT=str(free_port()),  # no broker: the consumer keeps trying, and says so
        FIELDLINK_SPOOL_DIR=str(tmp_path / "spool"),
        FIELDLINK_REGISTRY_PATH=str(tmp_path / "registry.db"),
    )
    log = tmp_path / "ingest.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*FIELDLINK, "ingest", "--port", str(free_port()), "--log-format", "json"], env=env, stderr=out, stdout=out
        )
    try:
        wait_until(lambda: "Application startup complete" in log.read_text(), timeout=20)
    finally:
        stop_pid(process.pid)
        process.wait()
    entries = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert all(re.fullmatch(ISO, e["time"]) and e["level"] and e["logger"] for e in entries)
    assert any(e["logger"].startswith("uvicorn") for e in entries)
    assert any(e["logger"] == "fieldlink.ingest" for e in entries)


def test_the_brokers_log_has_readable_times(stack: StackInfo) -> None:
    lines = (stack.home / "logs" / "mosquitto.log").read_text().splitlines()
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}: "
    assert lines and all(re.match(stamp, line) for line in lines[-5:]), lines[-5:]


def test_a_simulated_nodes_lines_carry_its_device_time(stack: StackInfo, ingest: IngestInfo, uid: str) -> None:
    # The board has no clock for its first second, then its clock is a day ahead of this machine's
    # (an NTP correction at start-up, simulated): its lines must show its time, not the machine's.
    bundle = stack.add_device(f"logtime-{uid}", sample_interval_ms=200)
    day_ms = 86_400_000
    result = run_node(bundle, duration_s=3, no_ntp_s=1, faults=["step@0+86400"])
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert re.fullmatch(rf"\+0\.\d{{3}}s node logtime-{uid} starting on sim with sensors .*", lines[0]), lines[:3]
    assert [line.partition(" ")[2] for line in lines if " connected to " in line] == [
        f"connected to 127.0.0.1 {stack.mqtt_port}"
    ]
    stamp, _, stopped = lines[-1].partition(" ")
    assert stopped.startswith("stopped: {"), lines[-1]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp), stamp
    device_ms = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000
    # The machine's time a day later, within the few seconds since the node stopped.
    assert -10_000 <= device_ms - (time.time() * 1000 + day_ms) <= 0, stamp


def test_the_run_summary_line(ingest: IngestInfo) -> None:
    from tools.cli import _summary_line

    line = _summary_line(int(ingest.url.rsplit(":", 1)[1]))
    summary = r"\d\d:\d\d:\d\d  devices online \d+/\d+ · points stored [\d,]+ · rejected [\d,]+.*"
    assert re.fullmatch(summary, line), line
    assert "does not answer" in _summary_line(free_port())


def test_simulate_prints_a_summary_when_it_ends(stack: StackInfo, ingest: IngestInfo, uid: str) -> None:
    prefix = f"sum-{uid}"
    started = time.monotonic()
    result = fieldlink(stack.home, "simulate", "--devices", "1", "--duration", "1.5", "--prefix", prefix)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 60
    lines = result.stdout.splitlines()
    assert any(line.startswith("simulation ended after ") for line in lines), result.stdout
    (node,) = [line for line in lines if line.strip().startswith(f"{prefix}-1 ")]
    assert re.search(r"\bok\b.*dropped 0", node), node
