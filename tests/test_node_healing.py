"""A node that heals itself (issue 10, item 4, docs/reliability.md), with real processes: the firmware
under the MicroPython unix port, the session's Mosquitto, InfluxDB and ingest service; only hardware
is faked. The simulated board (firmware/sim/) shows safe mode and the boot counter across power cuts;
the deployed file set on the faked ESP32 (tests/esp32_fake/: firmware/hal/esp32.py really runs) shows
the watchdog, the reset cause and a lost Wi-Fi."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.boards import fake_tools_env, field_device, run_cli
from tests.support import IngestInfo, StackInfo, run_node, wait_until
from tools._process import stop_pid
from tools._simulate import micropython_binary, node_command, node_env

FAKES = Path(__file__).resolve().parent / "esp32_fake"


def health_rows(stack: StackInfo, device: str) -> list[dict[str, Any]]:
    """The device's points of the `health` measurement, oldest first."""
    series = stack.query(f"SELECT * FROM health WHERE \"device\" = '{device}'")
    rows = [dict(zip(s["columns"], values, strict=True)) for s in series for values in s["values"]]
    return sorted(rows, key=lambda row: row["time"])


def report(ingest: IngestInfo, device: str) -> dict[str, Any] | None:
    """The device's last status as the service holds it (its `error` included)."""
    devices = httpx.get(f"{ingest.url}/api/devices", timeout=10).json()
    mine: dict[str, Any] | None = next(d for d in devices if d["id"] == device)["report"]
    return mine


# --- the faked ESP32 --------------------------------------------------------------------------------


@dataclass
class Esp32:
    device: str
    board: Path  # the board's filesystem: the deployed files

    def start(self, log: Path, **fakes: str) -> subprocess.Popen[bytes]:
        """The deployed files started as a board starts them, with the hardware fakes' settings."""
        env = dict(
            os.environ,
            MICROPYPATH=f":.frozen:{FAKES}",
            FAKE_WIFI="plant-iot:secret-passphrase",
            FAKE_ADC_UV="1000000",
            **fakes,
        )
        with log.open("ab") as out:
            return subprocess.Popen(
                [micropython_binary(), "-c", "import fake_esp32; fake_esp32.install(); import main"],
                cwd=self.board,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )


@pytest.fixture
def esp32(stack: StackInfo, uid: str, tmp_path: Path) -> Esp32:
    """A device made and deployed with the real commands onto a fake board's folder; its broker is the
    stack's by the name its certificate carries."""
    device, _ = field_device(stack.home, uid, broker="localhost", port=stack.mqtt_port)
    master, slave = os.openpty()
    port = os.ttyname(slave)
    os.close(slave)
    board = tmp_path / "board"
    board.mkdir()
    try:
        result = run_cli(stack.home, "deploy", port, device, env=fake_tools_env(board, tmp_path / "tools.log"))
    finally:
        os.close(master)
    assert result.returncode == 0, result.stderr
    return Esp32(device, board)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Nodes a test starts; whatever still runs at its end is stopped."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            stop_pid(process.pid)
            process.wait()


def test_watchdog_fed_while_sampling_fires_when_a_read_hangs_and_the_reset_is_reported(
    stack: StackInfo, ingest: IngestInfo, esp32: Esp32, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    # The fake watchdog fires 1.5 s after its last feed (the firmware asks for 30 s, which a test
    # need not wait for); the node's housekeeping feeds it every 100 ms while sampling keeps going.
    # From 4 s on, the ADC read never returns: the loop stops, so does the feeding, and the watchdog
    # resets the board.
    first = tmp_path / "first.log"
    node = esp32.start(first, FAKE_WDT_MS="1500", FAKE_ADC_HANG_AT="4")
    processes.append(node)
    assert node.wait(timeout=30) == -9  # SIGKILL: the fake's reset
    lines = first.read_text().splitlines()
    assert "fake wdt: timeout 30000" in lines  # what the firmware asked of the hardware
    hung = lines.index("fake adc: the read hangs")
    assert lines.index("fake wdt: first feed") < hung
    (reset,) = [line for line in lines if line.startswith("fake wdt: reset after ")]
    assert lines.index(reset) > hung
    feeds, hungry = int(reset.split()[4]), int(reset.split()[-2])
    assert feeds >= 20  # a healthy loop of four seconds fed it every 100 ms (about 35 times)
    assert hungry > 1500  # fired for want of a feed, not before
    assert stack.wait_points(esp32.device, 5)  # it sampled and sent before it hung

    # Powered on again after the watchdog's reset: the port reports WDT_RESET, the status says
    # "watchdog" and this is the bundle's second boot. A healthy loop keeps feeding: no reset while it
    # runs four times the watchdog's timeout.
    second = tmp_path / "second.log"
    node = esp32.start(second, FAKE_WDT_MS="1500", FAKE_RESET_CAUSE="WDT_RESET")
    processes.append(node)

    def rebooted() -> dict[str, Any] | None:
        rows = [row for row in health_rows(stack, esp32.device) if row["boot_count"] == 2]
        return rows[0] if rows else None

    row = wait_until(rebooted, timeout=20)
    assert (row["reset_cause"], row["online"], row["fw"]) == ("watchdog", True, "0.1.0")
    first_row = health_rows(stack, esp32.device)[0]
    assert (first_row["boot_count"], first_row["reset_cause"]) == (1, "power_on")
    time.sleep(6)
    assert node.poll() is None, second.read_text()
    text = second.read_text()
    assert "fake wdt: first feed" in text and "fake wdt: reset" not in text
    assert (esp32.board / "bundle" / "boot").read_text() == "2 2"  # two boots, both so far within five minutes


def test_lost_wifi_is_noticed_rejoined_and_every_reading_stored_once(
    stack: StackInfo, ingest: IngestInfo, esp32: Esp32, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    # Each ADC read gives 1 mV more than the one before (1.000 V, 1.001 V, ...; the config's scale 2
    # makes readings 2.000, 2.002, ...), so a stored reading names the read it came from. The station
    # loses its network 4 s after start, and none can be joined for 3 s after that.
    log = tmp_path / "node.log"
    node = esp32.start(log, FAKE_ADC_STEP_UV="1000", FAKE_WIFI_DROP_AT="4", FAKE_WIFI_DOWN_S="3")
    processes.append(node)

    def reads() -> list[int]:
        points = stack.points(esp32.device)
        return [round((value - 2.0) / 0.002) for _, _, value in points]

    # Sampled every 200 ms: 55 reads take 11 s, well past the outage (4 s to 7 s and the rejoin). Every
    # read up to the newest stored is there, once, in the order of its time: nothing lost or doubled.
    stored = wait_until(lambda: (r := reads()) and len(r) >= 55 and r == list(range(len(r))) and r, timeout=40)
    assert len(stored) >= 55
    stop_pid(node.pid)
    node.wait()
    lines = log.read_text().splitlines()
    dropped = lines.index("fake wifi: dropped")
    assert lines[dropped + 1] == "wifi: lost"  # the node asked the board, which told it at once
    assert "fake wifi: plant-iot -> 201" in lines[dropped:]  # rejoining while the network is away
    assert [line for line in lines if line.startswith("connected to ")] == [
        f"connected to localhost {stack.mqtt_port}"
    ] * 2
    assert lines.index("fake wifi: plant-iot -> 1010", dropped) < max(
        i for i, line in enumerate(lines) if line.startswith("connected to ")
    )
    # The status of the new connection counts the reconnect (the health point of the service).
    assert wait_until(lambda: [r for r in health_rows(stack, esp32.device) if r["reconnects"] and r["reconnects"] >= 1])


# --- the simulated board: the boot counter and safe mode ---------------------------------------------


def _boot_file(bundle: Path) -> str:
    return (bundle / "boot").read_text()


def test_early_ends_counted_across_power_cuts_lead_to_safe_mode_until_the_node_has_run_five_minutes(
    stack: StackInfo, ingest: IngestInfo, uid: str, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    device = f"safe-{uid}"
    bundle = stack.add_device(device, batch_max_age_ms=10000)
    good = json.loads((bundle / "config.json").read_text())
    assert [s["name"] for s in good["sensors"]] == ["temperature", "humidity", "pressure"]
    good["sensors"][2]["optional"] = True
    (bundle / "config.json").write_text(json.dumps(good))
    last_good, trying = bundle / "config.last-good.json", bundle / "config.trying.json"

    # The first boot, a clean stop: its config, the first, is the last good one at once.
    first = run_node(bundle, duration_s=1)
    assert first.returncode == 0, first.stdout
    assert json.loads(last_good.read_text()) == good
    assert _boot_file(bundle) == "1 0"  # a clean stop is no early end

    # A new config (a fourth sensor) with which the node loses its power 3 device seconds into each
    # boot (time scale 10), three times: each boot counted in the bundle's `boot` file across the
    # cuts, each an early end. The new config is only being tried: it has not run five minutes.
    new = {**good, "sensors": [*good["sensors"], {**good["sensors"][0], "name": "dewpoint"}]}
    (bundle / "config.json").write_text(json.dumps(new))
    for n in (2, 3, 4):
        cut = run_node(bundle, time_scale=10, faults=["power@3"])
        assert cut.returncode == -9, cut.stdout
        assert "safe mode" not in cut.stdout
        assert "with sensors ['temperature', 'humidity', 'pressure', 'dewpoint']" in cut.stdout
        assert _boot_file(bundle) == f"{n} {n - 1}"
        assert json.loads(last_good.read_text()) == good
        assert json.loads(trying.read_text()) == new

    # The fifth boot: safe mode, on the last good config without its optional sensor, says so in its
    # status. Device time runs 100 times faster, so its five minutes pass in three seconds; at 360
    # device seconds its power goes too, after it has run five minutes.
    trace, log = tmp_path / "safe.trace", tmp_path / "safe.log"
    with log.open("wb") as out:
        node = subprocess.Popen(
            node_command(bundle, trace=trace, time_scale=100, faults=["power@360"]),
            env=node_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    processes.append(node)
    message = "safe mode: 3 boots in a row ended within five minutes"

    def safe_report() -> dict[str, Any] | None:
        mine = report(ingest, device)
        return mine if mine and mine["error"] and mine["health"]["boot_count"] == 5 else None

    status = wait_until(safe_report, timeout=20)
    assert status["error"] == message
    assert (status["health"]["reset_cause"], status["health"]["boot_count"]) == ("power_on", 5)
    assert _boot_file(bundle) == "5 4"  # within its first five minutes it counts as an early end too
    assert node.wait(timeout=30) == -9
    text = log.read_text()
    assert message in text
    assert "starting on sim with sensors ['temperature', 'humidity']" in text
    sensors = {tuple(json.loads(line)["s"]) for line in trace.read_bytes().splitlines() if b'"s":' in line}
    assert sensors == {("temperature", "humidity")}
    assert _boot_file(bundle) == "5 0"  # five minutes up: the count of early ends started again
    assert json.loads(last_good.read_text()) == good  # safe mode proves nothing of the new config
    stored = [r for r in health_rows(stack, device) if r["boot_count"] == 5]
    assert stored and {r["reset_cause"] for r in stored} == {"power_on"}  # the service's health points

    # So the sixth boot is a normal one again: the new config, every sensor, no error; run to a clean
    # stop, the new config has worked and is the last good one.
    normal = run_node(bundle, duration_s=2)
    assert normal.returncode == 0, normal.stdout
    assert "safe mode" not in normal.stdout
    assert "starting on sim with sensors ['temperature', 'humidity', 'pressure', 'dewpoint']" in normal.stdout
    assert _boot_file(bundle) == "6 0"
    assert json.loads(last_good.read_text()) == new
    assert not trying.exists()

    def sixth() -> dict[str, Any] | None:
        rows = [r for r in health_rows(stack, device) if r["boot_count"] == 6]
        return rows[0] if rows else None

    assert wait_until(sixth)["reset_cause"] == "power_on"
    final = report(ingest, device)
    assert final is not None and final["error"] is None


def test_a_new_config_that_ran_five_minutes_is_the_last_good_one(stack: StackInfo, uid: str) -> None:
    # Five device minutes (time scale 100), then the power goes: no clean stop, the five minutes did it.
    bundle = stack.add_device(f"tried-{uid}", batch_max_age_ms=10000)
    first = run_node(bundle, duration_s=1)
    assert first.returncode == 0, first.stdout
    new = json.loads((bundle / "config.json").read_text())
    new["sample_interval_ms"] = 2000
    (bundle / "config.json").write_text(json.dumps(new))
    early = run_node(bundle, time_scale=100, faults=["power@200"])
    assert early.returncode == -9, early.stdout
    assert json.loads((bundle / "config.last-good.json").read_text()) != new
    assert json.loads((bundle / "config.trying.json").read_text()) == new
    stable = run_node(bundle, time_scale=100, faults=["power@360"])
    assert stable.returncode == -9, stable.stdout
    assert json.loads((bundle / "config.last-good.json").read_text()) == new
    assert not (bundle / "config.trying.json").exists()
    assert _boot_file(bundle) == "3 0"
