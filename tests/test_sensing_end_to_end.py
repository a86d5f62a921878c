"""Raw readings replayed on the real firmware go through a configured filter chain; InfluxDB holds exactly
what the filter semantics predict (computed here with the same shared code on CPython)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from shared.filter_config import build_chain
from tests.support import IngestInfo, StackInfo, run_node, trace_readings
from tools._config import check_sensing
from tools._devices import configure_device
from tools._home import Home

TEMP = [21.0, 21.4, 35.0, 21.6, 21.2, 21.8, None, 22.4, 22.0, 22.2, 19.0, 22.6]
HUM = [40.0, 40.5, 41.2, 120.0, 43.0, 43.1, 44.5, -5.0, 44.0, 47.2, 47.0, 48.1]
FILTERS = {
    "temp": [
        {"offset": -0.5},
        {"median": {"window_size": 3, "send_every": 1}},
        {"multiply": 1.8},
        {"offset": 32},
        {"round": 1},
    ],
    "hum": [
        {"clamp": {"min_value": 0, "max_value": 100, "ignore_out_of_range": True}},
        {"delta": 1.0},
        {"round_to_multiple_of": 0.5},
    ],
}


def _predict(name: str, raw: list[float | None]) -> list[float]:
    chain = build_chain(FILTERS[name])
    out = []
    for i, value in enumerate(raw):
        result = chain.process(math.nan if value is None else value, i * 50)
        if result is not None:
            out.append(result)
    return out


def test_configured_chain_on_the_firmware_stores_the_predicted_values(
    stack: StackInfo, ingest: IngestInfo, uid: str, workdir: Path
) -> None:
    device = f"filtered-{uid}"
    stack.add_device(device)
    sensing = check_sensing(
        {
            "sample_interval_ms": 50,
            "batch": {"max_readings": 5, "max_age_ms": 60000},
            "sensors": [{"name": n, "type": "sim", "signal": "temperature", "filters": f} for n, f in FILTERS.items()],
        }
    )
    configure_device(Home(stack.home), device, sensing)
    csv = workdir / "raw.csv"
    csv.write_text("temp,hum\n" + "".join(f"{'' if t is None else t},{h}\n" for t, h in zip(TEMP, HUM, strict=True)))
    trace = workdir / "trace.jsonl"

    result = run_node(stack.home / "devices" / device, replay=csv, trace=trace)

    assert result.returncode == 0, result.stdout + result.stderr
    expected = {"temp": _predict("temp", TEMP), "hum": _predict("hum", HUM)}
    assert len(expected["temp"]) == 12  # the median skips the NaN: every tick passes a value
    assert len(expected["hum"]) < 12  # clamp and delta hold some back
    produced = trace_readings(trace)
    stored = stack.wait_points(device, len(produced))
    assert stored == produced
    by_sensor = {name: [v for _, s, v in sorted(stored) if s == name] for name in FILTERS}
    assert by_sensor == expected
    stopped = json.loads(result.stdout.rsplit("stopped: ", 1)[1])
    assert stopped["read_errors"] == 1  # the empty temperature cell


def test_node_falls_back_to_its_last_good_config_and_says_why(
    stack: StackInfo, ingest: IngestInfo, uid: str, workdir: Path
) -> None:
    import httpx

    from tests.support import wait_until

    device = f"fallback-{uid}"
    bundle = stack.add_device(device, sample_interval_ms=50, batch_max_readings=10, batch_max_age_ms=60000)
    csv = workdir / "raw.csv"
    csv.write_text("temperature\n1.0\n2.0\n3.0\n")  # replayed columns take the filters of same-named sensors
    first = run_node(bundle, replay=csv)
    assert first.returncode == 0, first.stdout
    assert (bundle / "config.last-good.json").read_text() == (bundle / "config.json").read_text()

    # A config the node cannot use: a filter it does not know (written by hand, past the host's checks).
    config = json.loads((bundle / "config.json").read_text())
    config["sensors"][0]["filters"] = [["smoothen", 3]]
    (bundle / "config.json").write_text(json.dumps(config))
    second = run_node(bundle, replay=csv)

    assert second.returncode == 0, second.stdout
    assert (
        "config error: sensor 'temperature': filter 0: unknown ['smoothen', 3] ; running on the last good config"
        in (second.stdout)
    )
    assert len(stack.wait_points(device, 6)) == 6  # both runs stored their three readings

    def report() -> dict[str, object] | None:
        devices = httpx.get(f"{ingest.url}/api/devices").json()
        mine = next(d for d in devices if d["id"] == device)
        return mine["report"] if mine["report"] and mine["report"]["error"] else None

    status = wait_until(report)
    assert status["error"] == "sensor 'temperature': filter 0: unknown ['smoothen', 3]"
    assert status["online"] is False  # the node said goodbye at the end of its replay
