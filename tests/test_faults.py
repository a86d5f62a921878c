"""Outages delay data; they don't lose it: the radio link, the database, the ingest service, the broker
(killed while it holds what the service has not stored), the node's own power (killed mid-write with a
full spool). The node's faults come from its simulated board (firmware/sim/faults.py: --fault)."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import (
    IngestInfo,
    LinkCutter,
    StackInfo,
    batch,
    extra_ingest_identity,
    fieldlink,
    mqtt_client,
    publish,
    start_ingest,
    start_node,
    trace_readings,
    wait_until,
)
from tools._home import Home
from tools._process import free_port, stop_pid
from tools._simulate import node_command, node_env


def _point_bundle_at(bundle: Path, port: int, broker: dict[str, object] | None = None, **changes: object) -> None:
    config = json.loads((bundle / "config.json").read_text())
    config["broker"].update(broker or {}, port=port)
    config.update(changes)
    (bundle / "config.json").write_text(json.dumps(config))


def _final_counters(log: Path) -> dict[str, int]:
    counters: dict[str, int] = json.loads(log.read_text().rsplit("stopped: ", 1)[1].splitlines()[0])
    return counters


def _assert_nothing_lost_after_reconnecting(
    stack: StackInfo, link: LinkCutter, device: str, trace: Path, log: Path
) -> None:
    produced = trace_readings(trace)
    assert stack.wait_points(device, len(produced)) == produced
    counters = _final_counters(log)
    assert counters["dropped"] == 0
    assert counters["queued"] == 0
    assert counters["reconnects"] >= 1
    assert link.connections >= 2


@pytest.fixture
def link(stack: StackInfo) -> Iterator[LinkCutter]:
    cutter = LinkCutter(stack.mqtt_port)
    yield cutter
    cutter.close()


def test_network_outage_loses_nothing(
    stack: StackInfo, ingest: IngestInfo, link: LinkCutter, uid: str, workdir: Path
) -> None:
    device = f"outage-{uid}"
    bundle = stack.add_device(device, sample_interval_ms=100, batch_max_readings=50, batch_max_age_ms=300)
    _point_bundle_at(bundle, link.port)
    trace, log = workdir / "trace.jsonl", workdir / "node.log"

    node = start_node(bundle, log, trace=trace, duration_s=4.0)
    wait_until(lambda: link.connections >= 1, timeout=10)
    time.sleep(1.0)
    link.cut()
    time.sleep(2.0)
    link.restore()
    assert node.wait(timeout=60) == 0, log.read_text()
    _assert_nothing_lost_after_reconnecting(stack, link, device, trace, log)


def test_silent_link_is_detected_and_loses_nothing(
    stack: StackInfo, ingest: IngestInfo, link: LinkCutter, uid: str, workdir: Path
) -> None:
    # The connection stays open but nothing gets through either way: no error, no reset. The node
    # must notice by the missing PUBACK (or CONNACK), reconnect, and send the batches again.
    device = f"silent-{uid}"
    bundle = stack.add_device(device, sample_interval_ms=100, batch_max_readings=50, batch_max_age_ms=300)
    _point_bundle_at(bundle, link.port, broker={"timeout_ms": 1000})
    trace, log = workdir / "trace.jsonl", workdir / "node.log"

    node = start_node(bundle, log, trace=trace, duration_s=5.0)
    wait_until(lambda: link.connections >= 1, timeout=10)
    time.sleep(1.0)
    link.frozen = True
    time.sleep(3.0)
    link.frozen = False
    assert node.wait(timeout=60) == 0, log.read_text()
    _assert_nothing_lost_after_reconnecting(stack, link, device, trace, log)
    assert "no PUBACK for packet" in log.read_text()


def _batches(trace: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in trace.read_bytes().splitlines()]


def _readings(batches: list[dict[str, Any]]) -> list[tuple[int, str, float]]:
    return sorted((b["t0"] + off, b["s"][i], v) for b in batches for off, i, v in b["r"] if v is not None)


def _assert_only_the_oldest_dropped(stack: StackInfo, device: str, batches: list[dict[str, Any]], dropped: int) -> None:
    """What a full spool may lose: its oldest batches, each counted; everything after them is stored."""
    kept = batches[dropped:]
    expected = _readings(kept)
    try:
        stored = stack.wait_points(device, len(expected), timeout=30)
    except AssertionError:
        stored = stack.points(device)
        have = set(stored)
        missing = [b["seq"] for b in kept if not set(_readings([b])) <= have]
        raise AssertionError(f"{len(stored)} of {len(expected)} stored; batches missing: {missing}") from None
    assert stored == expected
    assert not set(stored) & set(_readings(batches[:dropped]))


def test_outage_longer_than_the_spool_drops_oldest_and_counts(
    stack: StackInfo, ingest: IngestInfo, uid: str, workdir: Path
) -> None:
    device = f"overflow-{uid}"
    bundle = stack.add_device(
        device, sample_interval_ms=50, batch_max_readings=2, batch_max_age_ms=10000, spool_max_bytes=4096,
        spool_segment_bytes=512,
    )  # fmt: skip
    trace, log = workdir / "trace.jsonl", workdir / "node.log"
    # No network from the start (the simulated board's cut): about 10 KB of batches for a 4 KB spool.
    node = start_node(bundle, log, trace=trace, duration_s=2.0, faults=["cut@0+2.5"])
    assert node.wait(timeout=60) == 0, log.read_text()

    batches = _batches(trace)
    counters = _final_counters(log)
    assert counters["dropped"] > 0
    assert counters["queued"] == 0
    assert sum(len(json.dumps(b, separators=(",", ":"))) + 14 for b in batches[counters["dropped"] :]) <= 4096
    _assert_only_the_oldest_dropped(stack, device, batches, counters["dropped"])


def _spool_records(spool: Path) -> tuple[list[int], int]:
    """The sequences of the valid records in a node's spool folder (firmware/spool.py's format), and
    how many segments end in a torn record."""
    seqs, torn = [], 0
    for path in sorted(spool.glob("*.r"), key=lambda p: int(p.stem)):
        data, at = path.read_bytes(), 0
        while at + 14 <= len(data):
            crc, length, seq = struct.unpack_from("<IHQ", data, at)
            payload = data[at + 14 : at + 14 + length]
            if len(payload) != length or zlib.crc32(payload, zlib.crc32(data[at + 4 : at + 14])) != crc:
                break
            seqs.append(seq)
            at += 14 + length
        torn += at != len(data)
    return seqs, torn


def test_power_cut_with_a_full_spool_loses_nothing_that_fit_and_never_reuses_a_sequence(
    stack: StackInfo, ingest: IngestInfo, uid: str, workdir: Path
) -> None:
    device = f"power-{uid}"
    bundle = stack.add_device(
        device, sample_interval_ms=50, batch_max_readings=2, batch_max_age_ms=10000, spool_max_bytes=4096,
        spool_segment_bytes=512,
    )  # fmt: skip
    trace, log = workdir / "trace.jsonl", workdir / "node.log"
    # No network, and the power goes in the middle of a spool write once the spool is full.
    first = subprocess.run(
        node_command(bundle, trace=trace, duration_s=10.0, faults=["cut@0", "power@2.5"]),
        env=node_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert first.returncode == -signal.SIGKILL, first.stdout + first.stderr
    before = _batches(trace)
    kept, torn = _spool_records(bundle / "spool")
    assert torn == 1  # the write the power cut short
    assert sum(len(json.dumps(b, separators=(",", ":"))) + 14 for b in before) > 4096  # the spool was full
    assert kept == [b["seq"] for b in before[len(before) - len(kept) :]]  # the newest batches, in order

    # Powered on again: the same bundle and spool, the network back; sampling slower now, so that the
    # spool empties before new batches could push anything out of it.
    _point_bundle_at(bundle, stack.mqtt_port, sample_interval_ms=500, batch={"max_readings": 60, "max_age_ms": 10000})
    node = start_node(bundle, log, trace=trace, duration_s=1.0)
    assert node.wait(timeout=60) == 0, log.read_text()
    assert _final_counters(log)["dropped"] == 0
    batches = _batches(trace)
    after = batches[len(before) :]
    seqs = [b["seq"] for b in batches]
    assert len(set(seqs)) == len(seqs)
    assert min(b["seq"] for b in after) > max(b["seq"] for b in before)
    assert all(seq < 2**53 for seq in seqs)
    assert _final_counters(log)["queued"] == 0
    # Lost: only the batches the full spool dropped before the power cut, the oldest ones.
    _assert_only_the_oldest_dropped(stack, device, batches, len(before) - len(kept))


def test_broker_killed_while_holding_what_the_service_never_stored_the_node_sends_it_again(
    own_stack: StackInfo, workdir: Path
) -> None:
    stack = own_stack
    home = Home(stack.home)
    env = dict(os.environ, FIELDLINK_HOME=str(stack.home))
    service_log = workdir / "ingest.log"
    service, _ = start_ingest(env, service_log)  # its persistent session: the broker queues for it
    stop_pid(service.pid)
    service.wait()

    device = "broker-crash"
    bundle = stack.add_device(device, sample_interval_ms=100, batch_max_readings=10, batch_max_age_ms=300)
    _point_bundle_at(bundle, stack.mqtt_port, drain_timeout_ms=60_000)
    trace, log = workdir / "trace.jsonl", workdir / "node.log"
    node = start_node(bundle, log, trace=trace, duration_s=6.0)
    # The broker takes the node's batches (PUBACK) and holds them for the absent service, in memory.
    wait_until(lambda: trace.exists() and len(_batches(trace)) >= 5 and "connected to" in log.read_text())
    time.sleep(1.0)
    os.kill(home.load_state().pids["mosquitto"], signal.SIGKILL)
    time.sleep(1.0)
    result = fieldlink(stack.home, "stack", "up")
    assert result.returncode == 0, result.stderr
    service, _ = start_ingest(env, service_log)
    try:
        assert node.wait(timeout=90) == 0, log.read_text()
        produced = trace_readings(trace)
        assert stack.wait_points(device, len(produced), timeout=30) == produced
        counters = _final_counters(log)
        assert counters["queued"] == 0
        assert counters["dropped"] == 0
        assert counters["reconnects"] >= 1
        assert counters["resent"] >= 1  # what the broker had taken, and lost, went again
    finally:
        stop_pid(service.pid)


def test_database_outage_loses_nothing(stack: StackInfo, ingest: IngestInfo, uid: str) -> None:
    device = f"dbdown-{uid}"
    bundle = stack.add_device(device)
    home = Home(stack.home)
    stop_pid(home.load_state().pids["influxdb"])
    spooled_before = ingest.counters().get("spooled_points", 0)
    now = int(time.time() * 1000)
    client = mqtt_client(stack.mqtt_port, bundle / "ca.pem", bundle / "cert.pem", bundle / "key.pem", device)
    try:
        for seq in range(5):
            publish(client, f"fl/v1/{device}/data", batch(seq, now + seq * 1000, ["temp"], [[0, 0, seq + 0.5]]))
        # The service's spool takes them (and the broker's queue stays empty) while InfluxDB is down.
        wait_until(lambda: ingest.counters().get("spooled_points", 0) >= spooled_before + 5)
    finally:
        client.loop_stop()
        client.disconnect()
        result = fieldlink(stack.home, "stack", "up")
        assert result.returncode == 0, result.stderr

    expected = [(now + seq * 1000, "temp", seq + 0.5) for seq in range(5)]
    assert stack.wait_points(device, 5, timeout=60) == expected


def test_ingest_restart_loses_nothing(stack: StackInfo, ingest: IngestInfo, uid: str, workdir: Path) -> None:
    """A second service with an identity and a persistent session of its own: what arrives while it is
    down waits in the broker and is stored by it after it comes back."""
    env = dict(os.environ, FIELDLINK_HOME=str(stack.home), **extra_ingest_identity(stack, uid))
    log = workdir / "ingest.log"

    device = f"restart-{uid}"
    bundle = stack.add_device(device)
    service, _ = start_ingest(env, log)
    service.send_signal(signal.SIGKILL)  # a crash: no clean disconnect
    service.wait()
    now = int(time.time() * 1000)
    client = mqtt_client(stack.mqtt_port, bundle / "ca.pem", bundle / "cert.pem", bundle / "key.pem", device)
    try:
        for seq in range(10):
            publish(client, f"fl/v1/{device}/data", batch(seq, now + seq, ["temp"], [[0, 0, float(seq)]]))
    finally:
        client.loop_stop()
        client.disconnect()

    service, url = start_ingest(env, log)
    try:
        # Its own count proves it received the backlog (the session fixture's service stores the same
        # points too: a point's identity makes that an overwrite).
        wait_until(lambda: httpx.get(f"{url}/healthz").json()["counters"].get("stored_messages") == 10)
        assert stack.points(device) == [(now + seq, "temp", float(seq)) for seq in range(10)]
    finally:
        stop_pid(service.pid)


# --- The fault suite (issue 10): three simulated nodes replaying a known CSV, one fault case each ---------
# Every node replays the same 150 rows (three sensors, one row a device second) at ten times real time,
# each with a trace of what it produced; after each case InfluxDB holds exactly the readings in the
# traces: none missing, none doubled, values and timestamps identical. The stack and the service are the
# suite's own (its broker and database are killed). Device seconds are real seconds times ten.
SCALE = 10
ROWS = 150


@dataclass
class Fleet:
    stack: StackInfo
    env: dict[str, str]
    csv: Path
    workdir: Path
    service: subprocess.Popen[bytes] | None = None

    def start_service(self) -> None:
        self.service, _ = start_ingest(self.env, self.workdir / "ingest.log")

    def kill_service(self) -> None:
        assert self.service is not None
        self.service.send_signal(signal.SIGKILL)
        self.service.wait()
        self.service = None

    def pid(self, name: str) -> int:
        return Home(self.stack.home).load_state().pids[name]

    def stack_up(self) -> None:
        result = fieldlink(self.stack.home, "stack", "up")
        assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("fault-suite")
    home = root / "home"
    ports = [str(free_port()) for _ in range(3)]
    result = fieldlink(
        home, "stack", "up", "--mqtt-port", ports[0], "--influx-port", ports[1], "--influx-rpc-port", ports[2]
    )
    assert result.returncode == 0, result.stderr
    csv = root / "readings.csv"
    rows = ["temp,hum,pres"]
    rows += [f"{20 + i * 0.01:.2f},{45 + (i % 17) * 0.5:.1f},{1013 - i * 0.02:.2f}" for i in range(ROWS)]
    csv.write_text("\n".join(rows) + "\n")
    env = dict(os.environ, FIELDLINK_HOME=str(home), FIELDLINK_MAX_CLOCK_SKEW_S="3600")
    suite = Fleet(StackInfo(home, int(ports[0]), int(ports[1])), env, csv, root)
    suite.start_service()
    try:
        yield suite
    finally:
        if suite.service is not None:
            stop_pid(suite.service.pid)
        fieldlink(home, "stack", "down")


class Node:
    """One simulated node of the fleet: its bundle, trace, log; started again after a power cut."""

    def __init__(self, fleet: Fleet, name: str, workdir: Path, **options: Any) -> None:
        self.device = name
        self.bundle = fleet.stack.add_device(
            name, sample_interval_ms=1000, batch_max_readings=30, batch_max_age_ms=5000
        )
        _point_bundle_at(self.bundle, fleet.stack.mqtt_port, drain_timeout_ms=120_000)
        self.trace, self.log = workdir / f"{name}.trace", workdir / f"{name}.log"
        self.options = dict(replay=fleet.csv, trace=self.trace, time_scale=SCALE, **options)
        self.boots = 0
        self.process = self.start()

    def start(self, **changes: Any) -> subprocess.Popen[bytes]:
        self.boots += 1
        with self.log.open("ab") as out:
            return subprocess.Popen(
                node_command(self.bundle, **{**self.options, **changes}),
                env=node_env(), stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def wait(self, timeout: float = 150) -> dict[str, int]:
        code = self.process.wait(timeout=timeout)
        assert code == 0, self.log.read_text()[-3000:]
        return _final_counters(self.log)


def _run_fleet(fleet: Fleet, case: str, actions: Any, **per_node: dict[str, Any]) -> dict[str, Any]:
    """Three nodes through a case: `actions(nodes)` does the harm while they run. Returns figures."""
    workdir = fleet.workdir / case
    workdir.mkdir()
    started = time.monotonic()
    nodes = [Node(fleet, f"{case}-{i}", workdir, **per_node.get(f"n{i}", {})) for i in range(3)]
    actions(nodes)
    counters = [node.wait() for node in nodes]
    figures: dict[str, Any] = {"case": case, "readings": 0}
    for node, count in zip(nodes, counters, strict=True):
        produced = trace_readings(node.trace)
        assert produced, node.log.read_text()[-2000:]
        stored = fleet.stack.wait_points(node.device, len(produced), timeout=60)
        assert stored == produced, f"{node.device}: {len(stored)} stored of {len(produced)} produced"
        assert count["queued"] == 0 and count["dropped"] == 0, count
        figures["readings"] += len(produced)
        for key in ("reconnects", "resent", "unsynced"):
            figures[key] = figures.get(key, 0) + count[key]
    figures["seconds"] = round(time.monotonic() - started, 1)
    print("fault suite:", json.dumps(figures))
    return figures


def test_suite_ingest_killed_mid_stream_and_restarted(fleet: Fleet) -> None:
    def actions(nodes: list[Node]) -> None:
        time.sleep(4)
        fleet.kill_service()
        time.sleep(4)
        fleet.start_service()

    _run_fleet(fleet, "a", actions)


def test_suite_database_stopped_30_s_then_killed_and_restarted(fleet: Fleet) -> None:
    def actions(nodes: list[Node]) -> None:
        time.sleep(2)
        stop_pid(fleet.pid("influxdb"))  # stopped (SIGTERM) for 30 s
        time.sleep(30)
        fleet.stack_up()
        time.sleep(2)
        os.kill(fleet.pid("influxdb"), signal.SIGKILL)
        time.sleep(1)
        fleet.stack_up()

    _run_fleet(fleet, "b", actions)


def test_suite_broker_killed_while_the_service_is_down_and_it_holds_the_queue(fleet: Fleet) -> None:
    def actions(nodes: list[Node]) -> None:
        time.sleep(2)
        fleet.kill_service()
        time.sleep(4)  # the broker takes the nodes' batches for the absent service, in memory
        os.kill(fleet.pid("mosquitto"), signal.SIGKILL)
        time.sleep(1)
        fleet.stack_up()
        fleet.start_service()

    figures = _run_fleet(fleet, "c", actions)
    assert figures["resent"] >= 1  # what the broker lost went again


def test_suite_a_nodes_link_cut_for_60_s_of_its_time(fleet: Fleet) -> None:
    figures = _run_fleet(fleet, "d", lambda nodes: None, n1={"faults": ["cut@30+60"]})
    assert figures["reconnects"] >= 1


def test_suite_a_node_boots_without_ntp_for_30_s_and_another_steps_its_clock(fleet: Fleet) -> None:
    # Node 0 has no clock for its first 30 s: those readings are stamped from boot and stored with their
    # true time. Node 2's clock steps back 5 s at 60 s and forward 20 s at 100 s (NTP corrections):
    # its timestamps never repeat or go back, so nothing overwrites anything.
    figures = _run_fleet(
        fleet, "f", lambda nodes: None, n0={"no_ntp_s": 30}, n2={"faults": ["step@60-5", "step@100+20"]}
    )
    assert figures["unsynced"] == 0
    early = [line for line in (fleet.workdir / "f" / "f-0.trace").read_bytes().splitlines() if b'"t0":-' in line]
    assert early  # batches were made before the clock was known
    stamps = [t for t, s, _ in trace_readings(fleet.workdir / "f" / "f-2.trace") if s == "temp"]
    assert stamps == sorted(set(stamps)) and len(stamps) == ROWS


def test_suite_a_node_power_cycled_before_it_knew_the_time(fleet: Fleet) -> None:
    # Power cut before the first NTP answer: what that boot made cannot be given a time, so it is
    # refused on the node (counted `unsynced`), never stored with a made-up one; the next boot's
    # readings are all stored. (A power cut with a full spool: test_power_cut_with_a_full_spool_...)
    def actions(nodes: list[Node]) -> None:
        assert nodes[0].process.wait(timeout=60) == -signal.SIGKILL
        nodes[0].process = nodes[0].start(faults=[], no_ntp_s=None)

    figures = _run_fleet(fleet, "e", actions, n0={"no_ntp_s": 200, "faults": ["power@40"]})
    assert figures["unsynced"] >= 1


def test_suite_all_at_once(fleet: Fleet) -> None:
    # (a)-(e) overlapping: a link cut, a power cut, the service killed, the database stopped, the broker
    # killed while the service is down, a clock step.
    def actions(nodes: list[Node]) -> None:
        time.sleep(3)
        fleet.kill_service()
        stop_pid(fleet.pid("influxdb"))
        time.sleep(3)
        os.kill(fleet.pid("mosquitto"), signal.SIGKILL)
        time.sleep(2)
        fleet.stack_up()
        fleet.start_service()
        assert nodes[2].process.wait(timeout=60) == -signal.SIGKILL
        nodes[2].process = nodes[2].start(faults=[])

    _run_fleet(fleet, "g", actions, n0={"faults": ["cut@40+60", "step@120-3"]}, n2={"faults": ["power@90"]})
