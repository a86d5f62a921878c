"""The whole data path with real parts: firmware under MicroPython -> Mosquitto (mutual TLS) ->
ingest service -> InfluxDB, read back exactly."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

from tests.support import IngestInfo, StackInfo, run_node, trace_readings, wait_until


def test_simulated_node_readings_arrive_exactly(stack: StackInfo, ingest: IngestInfo, uid: str, workdir: Path) -> None:
    device = f"e2e-{uid}"
    bundle = stack.add_device(device, sample_interval_ms=100, batch_max_readings=30, batch_max_age_ms=500)
    trace = workdir / "trace.jsonl"
    started_ms = int(time.time() * 1000)

    result = run_node(bundle, trace=trace, duration_s=2.0)

    assert result.returncode == 0, result.stdout + result.stderr
    assert '"dropped": 0' in result.stdout
    produced = trace_readings(trace)
    # About 20 ticks of 3 sensors; scheduling on a busy machine may cost a tick or two.
    assert 45 <= len(produced) <= 63
    assert {sensor for _, sensor, _ in produced} == {"temperature", "humidity", "pressure"}
    stored = stack.wait_points(device, len(produced))
    assert stored == produced  # count, values and the device's own timestamps
    assert all(started_ms - 1000 <= t <= int(time.time() * 1000) for t, _, _ in stored)


def test_replayed_csv_values_are_stored_exactly(stack: StackInfo, ingest: IngestInfo, uid: str, workdir: Path) -> None:
    device = f"replay-{uid}"
    bundle = stack.add_device(device, sample_interval_ms=50, batch_max_readings=7, batch_max_age_ms=10000)
    csv = workdir / "raw.csv"
    csv.write_text("temp,hum\n21.5,40.0\n21.625,40.5\n,41.0\n22.0,oops\n\n22.25,41.5\n")
    trace = workdir / "trace.jsonl"
    counters_before = ingest.counters()

    result = run_node(bundle, replay=csv, trace=trace)

    assert result.returncode == 0, result.stdout + result.stderr
    stored = stack.wait_points(device, 8)
    assert stored == trace_readings(trace)
    by_sensor = {s: [v for _, sensor, v in stored if sensor == s] for s in ("temp", "hum")}
    assert by_sensor == {"temp": [21.5, 21.625, 22.0, 22.25], "hum": [40.0, 40.5, 41.0, 41.5]}
    # Ticks are a sampling interval apart on the device's clock.
    temp_times = [t for t, sensor, _ in stored if sensor == "temp"]
    assert all(40 <= b - a <= 1000 for a, b in itertools.pairwise(temp_times))
    # The two failed reads (empty cell, text) travel as nulls and are counted, not stored.
    wait_until(lambda: ingest.counters().get("failed_reads", 0) - counters_before.get("failed_reads", 0) == 2)
    assert json.loads(result.stdout.rsplit("stopped: ", 1)[1])["read_errors"] == 2


def test_api_lists_devices_and_latest_readings(stack: StackInfo, ingest: IngestInfo, uid: str, workdir: Path) -> None:
    import httpx

    device = f"api-{uid}"
    bundle = stack.add_device(device, sample_interval_ms=50, batch_max_readings=10, batch_max_age_ms=10000)
    csv = workdir / "raw.csv"
    csv.write_text("temp\n1.5\n2.5\n3.5\n")
    assert run_node(bundle, replay=csv).returncode == 0
    wait_until(lambda: len(stack.points(device)) == 3)

    devices = httpx.get(f"{ingest.url}/api/devices").json()
    mine = [d for d in devices if d["id"] == device]
    assert len(mine) == 1
    assert mine[0]["status"] == "active"
    assert mine[0]["last_seen_ms"] is not None
    latest = httpx.get(f"{ingest.url}/api/devices/{device}/latest").json()
    last_time = max(t for t, _, _ in stack.points(device))
    expected = {"device": device, "readings": {"temp": {"time_ms": last_time, "value": 3.5}}, "source": "database"}
    assert latest == expected
    # A service started afresh (nothing in memory) shows the same: it reads InfluxDB.
    assert _fresh_service(stack).get(f"/api/devices/{device}/latest").json() == expected
    assert mine[0]["last_seen_ms"] == last_time  # the device's own time, kept in the registry
    series = httpx.get(f"{ingest.url}/api/devices/{device}/series", params={"range_s": 600, "points": 300}).json()
    assert series["interval_ms"] == 2000 and series["until_ms"] - series["since_ms"] == 600_000
    values = [value for _, value in series["sensors"]["temp"]]  # means of 2 s intervals
    assert values and all(1.5 <= v <= 3.5 for v in values)
    missing = httpx.get(f"{ingest.url}/api/devices/nobody-{uid}/latest")
    assert missing.status_code == 404
    assert "not registered" in missing.json()["detail"]


def _fresh_service(stack: StackInfo) -> Any:
    """The service's app with the local stack's settings and nothing in memory, as after a restart
    (its lifespan, and so a second MQTT consumer, stays off; the database reader is set as it would)."""
    from fastapi.testclient import TestClient

    from ingest import Registry, Settings, create_app
    from ingest._consumer import Stats
    from ingest._influx_read import InfluxReader
    from tools._home import Home
    from tools.cli import _stack_fallbacks

    settings = Settings(**_stack_fallbacks(Home(stack.home)))
    app = create_app(settings)
    app.state.registry, app.state.stats = Registry(settings.registry_path), Stats()
    app.state.reader = InfluxReader.for_settings(settings)
    return TestClient(app, base_url="http://127.0.0.1")


def test_a_devices_status_is_stored_as_health_points(stack: StackInfo, ingest: IngestInfo, uid: str) -> None:
    from tests.support import mqtt_client, publish

    device = f"health-{uid}"
    bundle = stack.add_device(device)
    t = int(time.time() * 1000) - 2000
    status = {
        "v": 1,
        "online": True,
        "t": t,
        "counters": {"queued": 4, "dropped": 0},
        "health": {"uptime_s": 120, "heap_free": 4100, "rssi_dbm": -71, "reset_cause": "power_on", "fw": "0.2.0"},
    }
    client = mqtt_client(stack.mqtt_port, bundle / "ca.pem", bundle / "cert.pem", bundle / "key.pem", device)
    try:
        publish(client, f"fl/v1/{device}/status", json.dumps(status).encode())
    finally:
        client.loop_stop()
        client.disconnect()

    def rows() -> list[dict[str, object]]:
        series = stack.query(f"SELECT * FROM health WHERE \"device\" = '{device}'")
        return [dict(zip(s["columns"], values, strict=True)) for s in series for values in s["values"]]

    (row,) = wait_until(rows)
    assert row == {
        "time": t,
        "device": device,
        "online": True,
        "queued": 4,
        "dropped": 0,
        "uptime_s": 120,
        "heap_free": 4100,
        "rssi_dbm": -71,
        "reset_cause": "power_on",
        "fw": "0.2.0",
        # Columns of the measurement that this point does not have (other devices' fields).
        **{
            column: None
            for column in row
            if column not in status["health"] and column not in ("time", "device", "online", "queued", "dropped")
        },
    }


def test_simulated_nodes_get_seeds_of_their_own(stack: StackInfo, uid: str) -> None:
    # So that the nodes of `make run` read different values, as real ones would.
    seeds = []
    for device in (f"seed-{uid}-1", f"seed-{uid}-2"):
        config = json.loads((stack.add_device(device) / "config.json").read_text())
        seeds.append([sensor["seed"] for sensor in config["sensors"]])
    assert len(set(seeds[0] + seeds[1])) == 6
