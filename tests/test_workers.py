"""Several ingest workers behind an MQTT shared subscription (`fieldlink ingest --workers N`).

First what Mosquitto 2.0 does with a shared subscription while a member is away (the design follows
from it; docs/architecture.md, "Workers and shared subscriptions"), then the service on the real broker
and database: a worker killed mid-stream loses nothing, a run with fewer workers than the last one
loses nothing, the parent stops its workers; the pool and the command line alone, in milliseconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ingest import Settings, WorkerPool, plan_workers
from ingest import _workers as workers_module
from shared.identities import INGEST_SHARED_GROUP, worker_identity
from shared.protocol import DATA_SUBSCRIPTION
from tests.support import (
    StackInfo,
    batch,
    extra_ingest_identity,
    fieldlink,
    mqtt_client,
    publish,
    start_ingest,
    wait_until,
)
from tools._home import Home
from tools._process import free_port, pid_alive, stop_pid

ROOT = Path(__file__).resolve().parent.parent

# --- what the broker does -----------------------------------------------------------------------------


class Member:
    """A shared-subscription member in a process of its own (tests/mqtt_member.py)."""

    def __init__(self, stack: StackInfo, identity: dict[str, str], log: Path, topic: str, *flags: str) -> None:
        self.client_id = identity["FIELDLINK_MQTT_CLIENT_ID"]
        self.log = log
        ca = Home(stack.home).pki_files.ca_cert
        argv = [str(stack.mqtt_port), str(ca), identity["FIELDLINK_MQTT_CERT"], identity["FIELDLINK_MQTT_KEY"]]
        with log.open("w") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.mqtt_member", *argv, self.client_id, topic, *flags], stdout=out, cwd=ROOT
            )
        self.session_present = wait_until(self._ready, timeout=10)[0]

    def _lines(self) -> list[list[str]]:
        return [line.split() for line in self.log.read_text().splitlines()]

    def _ready(self) -> list[bool]:
        return [line[1] == "1" for line in self._lines() if line[0] == "ready"]

    def got(self) -> list[tuple[int, bool]]:
        """(seq, DUP flag) of every message received, in order."""
        return [(int(line[1]), line[2] == "1") for line in self._lines() if line[0] == "got"]

    def seqs(self) -> set[int]:
        return {seq for seq, _ in self.got()}

    def stop(self, signum: int = signal.SIGTERM) -> None:
        self.process.send_signal(signum)
        self.process.wait()


def test_mosquitto_keeps_a_members_share_for_its_session_alone(stack: StackInfo, uid: str, workdir: Path) -> None:
    """Two members on persistent sessions, QoS 1, manual acks; B acknowledges nothing and is killed."""
    topic = f"$share/{uid}/{DATA_SUBSCRIPTION}"
    device = f"share-{uid}"
    bundle = stack.add_device(device)
    ids = {name: extra_ingest_identity(stack, f"{uid}-{name}") for name in ("a", "b")}
    broker_log = stack.home / "logs" / "mosquitto.log"
    a = Member(stack, ids["a"], workdir / "a.log", topic, "--ack")
    b = Member(stack, ids["b"], workdir / "b1.log", topic)
    publisher = mqtt_client(stack.mqtt_port, bundle / "ca.pem", bundle / "cert.pem", bundle / "key.pem", device)
    now = int(time.time() * 1000)

    def send(seqs: range) -> None:
        for seq in seqs:
            publish(publisher, f"fl/v1/{device}/data", batch(seq, now + seq, ["t"], [[0, 0, float(seq)]]))

    def killed(member: Member) -> None:
        closed = f"Client {member.client_id} closed its connection."
        before = broker_log.read_text().count(closed)
        member.stop(signal.SIGKILL)
        wait_until(lambda: broker_log.read_text().count(closed) > before)  # the broker knows it is gone

    try:
        # Round robin: each member gets every other message.
        send(range(0, 6))
        wait_until(lambda: len(a.seqs() | b.seqs()) == 6)
        in_flight = b.seqs()
        assert len(in_flight) == 3 and a.seqs() == set(range(6)) - in_flight
        # B dies holding 3 unacknowledged messages. Its session stays in the round robin: half of what
        # comes now is queued for it, not given to A.
        killed(b)
        send(range(6, 12))
        wait_until(lambda: len(a.seqs()) == 6)
        time.sleep(0.5)
        queued = set(range(6, 12)) - a.seqs()
        assert len(queued) == 3
        assert a.seqs().isdisjoint(in_flight | queued)
        # B comes back on its session and leaves the group: it gets the 3 messages it held (again, DUP
        # set) and the 3 queued for it, and nothing that comes after it left.
        b = Member(stack, ids["b"], workdir / "b2.log", "", "--ack", "--leave", topic)
        assert b.session_present
        wait_until(lambda: len(b.got()) == 6)
        assert sorted(b.got()) == sorted([(s, True) for s in in_flight] + [(s, False) for s in queued])
        send(range(12, 16))
        wait_until(lambda: set(range(12, 16)) <= a.seqs())
        assert b.seqs() == in_flight | queued
        b.stop()
        # B joins again and dies with messages queued for it; it comes back with a clean session: the
        # broker throws them away, and no one ever gets them.
        b = Member(stack, ids["b"], workdir / "b3.log", topic)
        killed(b)
        send(range(16, 22))
        wait_until(lambda: len(a.seqs() & set(range(16, 22))) == 3)
        b = Member(stack, ids["b"], workdir / "b4.log", "", "--clean")
        assert not b.session_present
        b.stop()
        b = Member(stack, ids["b"], workdir / "b5.log", "", "--ack")
        time.sleep(1.0)
        assert b.got() == [] and len(a.seqs() & set(range(16, 22))) == 3  # 3 messages lost
        b.stop()
        # A member on a clean session that dies leaves the group at once, and what it held is lost too.
        b = Member(stack, ids["b"], workdir / "b6.log", topic, "--clean")
        send(range(22, 26))
        wait_until(lambda: len(b.seqs()) == 2 and len(a.seqs() & set(range(22, 26))) == 2)
        held = b.seqs()
        killed(b)
        send(range(26, 30))
        wait_until(lambda: set(range(26, 30)) <= a.seqs())
        b = Member(stack, ids["b"], workdir / "b7.log", "", "--ack")
        time.sleep(1.0)
        assert b.got() == [] and a.seqs().isdisjoint(held)
    finally:
        publisher.loop_stop()
        publisher.disconnect()
        for member in (a, b):
            member.stop()


# --- the service --------------------------------------------------------------------------------------


def _own_database(stack: StackInfo, name: str) -> None:
    """A database of the test's own that the service's writer may write to: the session's service
    subscribes to all data and stores it in `fieldlink`, so that database cannot tell what the
    workers under test lost."""
    writer = json.loads((stack.home / "influxdb" / "credentials.json").read_text())["writer"]["username"]
    for statement in (f'CREATE DATABASE "{name}"', f'GRANT WRITE ON "{name}" TO "{writer}"'):
        response = httpx.post(f"{stack.influx_url}/query", data={"q": statement}, auth=stack.influx_admin, timeout=10)
        response.raise_for_status()
        assert "error" not in response.json()["results"][0]


def _stored(stack: StackInfo, database: str) -> list[tuple[str, int, float]]:
    """Every point in `database` as (device, time_ms, value), sorted."""
    response = httpx.get(
        f"{stack.influx_url}/query",
        params={"db": database, "q": 'SELECT "value", "device" FROM readings', "epoch": "ms"},
        auth=stack.influx_admin,
        timeout=10,
    )
    response.raise_for_status()
    rows = []
    for series in response.json()["results"][0].get("series", []):
        rows += [(device, t, value) for t, value, device in series["values"]]
    return sorted(rows)


def _service_env(stack: StackInfo, name: str) -> dict[str, str]:
    """A service of the test's own: its identity, group and database."""
    _own_database(stack, name)
    return dict(
        os.environ,
        FIELDLINK_HOME=str(stack.home),
        FIELDLINK_MQTT_SHARED_GROUP=name,
        FIELDLINK_INFLUX_DATABASE=name,
        **extra_ingest_identity(stack, name),
    )


class Devices:
    """Devices publishing numbered one-reading batches; `sent` is what InfluxDB must end up holding."""

    def __init__(self, stack: StackInfo, prefix: str, count: int) -> None:
        self.ids = [f"{prefix}-{i}" for i in range(count)]
        self.clients = []
        for device in self.ids:
            bundle = stack.add_device(device)
            files = (bundle / "ca.pem", bundle / "cert.pem", bundle / "key.pem")
            self.clients.append(mqtt_client(stack.mqtt_port, *files, device))
        self.t0 = int(time.time() * 1000)
        self.sent: list[tuple[str, int, float]] = []

    def send(self, count: int, pause_s: float = 0.0) -> None:
        for _ in range(count):
            seq = len(self.sent)
            i = seq % len(self.ids)
            device = self.ids[i]
            publish(self.clients[i], f"fl/v1/{device}/data", batch(seq, self.t0 + seq, ["t"], [[0, 0, float(seq)]]))
            self.sent.append((device, self.t0 + seq, float(seq)))
            time.sleep(pause_s)

    def close(self) -> None:
        for client in self.clients:
            client.loop_stop()
            client.disconnect()


@pytest.fixture
def devices(stack: StackInfo, uid: str) -> Iterator[Devices]:
    devices = Devices(stack, f"w-{uid}", 3)
    try:
        yield devices
    finally:
        devices.close()


def _health(url: str) -> dict[str, object]:
    result: dict[str, object] = httpx.get(f"{url}/healthz", timeout=5).json()
    return result


def _worker_pids(url: str) -> list[int | None]:
    rows = _health(url)["workers"]
    assert isinstance(rows, list)
    return [row["pid"] for row in rows]


def _stored_by_worker(url: str) -> list[int]:
    """Each worker's stored messages, as /healthz's rows have them (worker 1 first)."""
    rows = _health(url)["workers"]
    assert isinstance(rows, list)
    return [row["counters"].get("stored_messages", 0) for row in rows]


def _until_both_take_a_share(stack: StackInfo, database: str, url: str, devices: Devices) -> None:
    """Send pairs of messages until each worker has stored some: then both are in the group (a worker
    that is connected may not have subscribed yet)."""

    def shared() -> bool:
        devices.send(2)
        wait_until(lambda: len(_stored(stack, database)) == len(devices.sent))
        deadline = time.monotonic() + 2.0  # worker 2's counts come with its next report, within a second
        while not all(_stored_by_worker(url)) and time.monotonic() < deadline:
            time.sleep(0.1)
        return all(_stored_by_worker(url))

    wait_until(shared, timeout=20, interval=0.2)


def test_two_workers_one_killed_mid_stream_nothing_lost(
    stack: StackInfo, uid: str, workdir: Path, devices: Devices
) -> None:
    name = f"wk{uid}"
    # Batches of a second: the killed worker surely dies holding messages it has not acknowledged.
    env = dict(_service_env(stack, name), FIELDLINK_WRITE_BATCH_MS="1000")
    service, url = start_ingest(env, workdir / "ingest.log", "--workers", "2")
    try:
        wait_until(lambda: all(_worker_pids(url)) and _health(url)["status"] == "ok")
        first_pid, second_pid = _worker_pids(url)
        assert first_pid == service.pid
        _until_both_take_a_share(stack, name, url, devices)
        stream = threading.Thread(target=devices.send, args=(240, 0.01))
        stream.start()
        wait_until(lambda: len(devices.sent) >= 80)
        os.kill(second_pid, signal.SIGKILL)
        # The parent says so: 503, naming the worker, until it runs again under its own identity.
        down = wait_until(lambda: _health(url)["problems"], timeout=5, interval=0.02)
        stream.join()
        assert down == [
            f"ingest worker 2 ({worker_identity(env['FIELDLINK_MQTT_CLIENT_ID'], 2)}) is down: pid {second_pid} was "
            "killed by SIGKILL; starting it again in 0.5 s"
        ]
        wait_until(lambda: len(_stored(stack, name)) >= len(devices.sent), timeout=30)
        time.sleep(1.5)  # a redelivered message would overwrite its point: nothing may be added
        assert _stored(stack, name) == sorted(devices.sent)
        health = _health(url)
        assert health["status"] == "ok", health
        assert isinstance(health["workers"], list) and health["workers"][1]["restarts"] == 1
        restarted = health["workers"][1]["pid"]
        assert restarted not in (None, second_pid)
        # Both workers had a share: worker 1 stored some, and not all.
        assert isinstance(health["workers"], list)
        assert 0 < health["workers"][0]["counters"]["stored_messages"] < len(devices.sent)
        # A killed parent takes its workers with it.
        service.send_signal(signal.SIGKILL)
        service.wait()
        wait_until(lambda: not pid_alive(restarted), timeout=10)
    finally:
        stop_pid(service.pid)
        log = (workdir / "ingest.log").read_text()
        assert "Traceback" not in log, log


def _metric_samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(f"{url}/metrics", timeout=5)
    response.raise_for_status()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def _metrics_stored(url: str) -> float:
    return _metric_samples(url)[("fieldlink_messages_stored_total", ())]


def test_metrics_and_healthz_count_every_workers_messages_across_a_restart(
    stack: StackInfo, uid: str, workdir: Path, devices: Devices
) -> None:
    """/metrics and /healthz show the whole service: exactly the messages stored, whichever worker
    stored them; a worker killed and started again takes nothing back from the total."""
    name = f"wm{uid}"
    env = _service_env(stack, name)
    service, url = start_ingest(env, workdir / "ingest.log", "--workers", "2")
    try:
        _until_both_take_a_share(stack, name, url, devices)
        devices.send(60)
        wait_until(lambda: len(_stored(stack, name)) == len(devices.sent))
        sent = len(devices.sent)
        wait_until(lambda: _metrics_stored(url) == sent, timeout=5)  # worker 2's part: within a second
        time.sleep(1.2)  # a report later: still exact, nothing counted twice
        found = _metric_samples(url)
        assert found[("fieldlink_messages_stored_total", ())] == sent
        assert found[("fieldlink_points_written_total", ())] == sent  # one reading each
        assert found[("fieldlink_messages_received_total", (("kind", "data"),))] == sent
        parts = [found[("fieldlink_worker_messages_stored_total", (("worker", w),))] for w in ("1", "2")]
        assert sum(parts) == sent and all(parts)  # both had a share; the parts add up to the total
        assert found[("fieldlink_mqtt_connected", ())] == 1
        assert found[("fieldlink_worker_mqtt_connected", (("worker", "2"),))] == 1
        writes = found[("fieldlink_write_duration_seconds_count", (("outcome", "ok"),))]
        assert (
            writes >= 2
            and found[("fieldlink_write_duration_seconds_bucket", (("le", "+Inf"), ("outcome", "ok")))] == writes
        )
        health = _health(url)
        assert health["counters"]["stored_messages"] == sent  # type: ignore[index]
        assert _stored_by_worker(url) == [int(p) for p in parts]

        # Worker 2 is killed while idle (its last report holds all it stored) and started again, its
        # new process counting from 0: the total holds, and never went down meanwhile.
        second_pid = _worker_pids(url)[1]
        assert second_pid is not None
        totals: list[float] = []
        watching = threading.Event()

        def watch() -> None:
            while not watching.is_set():
                totals.append(_metrics_stored(url))
                time.sleep(0.02)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            time.sleep(0.2)
            os.kill(second_pid, signal.SIGKILL)
            wait_until(lambda: _worker_pids(url)[1] not in (None, second_pid), timeout=10)
            # The new process reports, connected: the pool has its counts from 0 on.
            wait_until(lambda: _health(url)["workers"][1]["mqtt_connected"] is True, timeout=15)  # type: ignore[index]
            time.sleep(0.5)
        finally:
            watching.set()
            watcher.join()
        assert len(totals) > 10
        assert totals == sorted(totals), totals
        assert totals[-1] == sent
        assert _stored_by_worker(url) == [int(p) for p in parts]

        # The restarted worker's new counts go on from its old ones.
        devices.send(20)
        wait_until(lambda: len(_stored(stack, name)) == len(devices.sent))
        wait_until(lambda: _metrics_stored(url) == len(devices.sent), timeout=5)
        assert _health(url)["counters"]["stored_messages"] == len(devices.sent)  # type: ignore[index]
        after = _stored_by_worker(url)
        assert after[1] > parts[1] and sum(after) == len(devices.sent)
        assert _health(url)["workers"][1]["restarts"] == 1  # type: ignore[index]
    finally:
        stop_pid(service.pid)
        log = (workdir / "ingest.log").read_text()
        assert "Traceback" not in log, log


def test_fewer_workers_than_before_lose_nothing(stack: StackInfo, uid: str, workdir: Path, devices: Devices) -> None:
    """Worker 2's session stays in the group after the run that had it: a run with one worker retires
    it, storing what was queued for it, and it gets nothing more."""
    name = f"wr{uid}"
    env = _service_env(stack, name)
    log = workdir / "ingest.log"
    service, url = start_ingest(env, log, "--workers", "2")
    _until_both_take_a_share(stack, name, url, devices)
    pids = _worker_pids(url)
    stop_pid(service.pid)  # SIGTERM: the parent stops its worker
    assert service.wait() == 0
    assert not any(pid_alive(pid) for pid in pids if pid is not None)

    before = len(devices.sent)
    devices.send(40)  # while both are away: half is queued for each session
    service, url = start_ingest(env, log)
    try:
        wait_until(lambda: _stored(stack, name) == sorted(devices.sent), timeout=20)
        rows = [_worker_row(env, 1, service.pid, "running"), _worker_row(env, 2, None, "retired")]
        wait_until(lambda: _rows(url) == rows)
        # Half for each session; the retired identity's 20, from its last report, count in the total.
        assert _stored_by_worker(url) == [20, 20]
        assert _health(url)["counters"]["stored_messages"] == 40  # type: ignore[index]
        devices.send(10)  # all of it to worker 1 now
        wait_until(lambda: _stored_by_worker(url) == [30, 20])
        assert _health(url)["counters"]["stored_messages"] == 50  # type: ignore[index]
        assert len(devices.sent) == before + 50
        assert _stored(stack, name) == sorted(devices.sent)
    finally:
        stop_pid(service.pid)
    assert "Traceback" not in log.read_text(), log.read_text()


def _worker_row(env: dict[str, str], number: int, pid: int | None, state: str) -> dict[str, object]:
    identity = worker_identity(env["FIELDLINK_MQTT_CLIENT_ID"], number)
    return {"worker": number, "identity": identity, "pid": pid, "restarts": 0, "state": state}


def _rows(url: str) -> list[dict[str, object]]:
    """/healthz's worker rows without their counts."""
    rows = _health(url)["workers"]
    assert isinstance(rows, list)
    return [{k: row[k] for k in ("worker", "identity", "pid", "restarts", "state")} for row in rows]


# --- the pool and the command line alone ----------------------------------------------------------------


def test_the_pool_restarts_a_dead_worker_and_stops_them_all(monkeypatch: pytest.MonkeyPatch) -> None:
    async def nothing(*_: object) -> None:
        pass

    monkeypatch.setattr(workers_module, "drop_subscriptions", nothing)
    plan = plan_workers(Settings(mqtt_tls=False), 3)
    # Worker 3 ignores SIGTERM: the stop kills it after its time.
    sleeper = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN if {} else signal.SIG_DFL); time.sleep(60)"
    )

    def command(number: int, retire: bool) -> list[str]:
        return [sys.executable, "-c", sleeper.format(number == 3)]

    async def scenario() -> None:
        pool = WorkerPool(plan, command=command, stop_timeout_s=0.5, first_backoff_s=0.3)
        async with pool:
            await _until(lambda: all(row["pid"] for row in pool.status()))
            assert pool.problems() == []
            second = pool.status()[1]["pid"]
            os.kill(second, signal.SIGKILL)
            await _until(lambda: pool.problems() != [])
            assert [row["state"] for row in pool.status()] == ["running", "down", "running"]
            assert pool.problems() == [
                f"ingest worker 2 (fieldlink:ingest:worker-2) is down: pid {second} was killed by SIGKILL; "
                "starting it again in 0.3 s"
            ]
            await _until(lambda: pool.problems() == [] and pool.status()[1]["pid"] not in (None, second))
            assert [row["restarts"] for row in pool.status()] == [0, 1, 0]
            pids = [row["pid"] for row in pool.status()[1:]]
        assert not any(pid_alive(pid) for pid in pids)

    asyncio.run(scenario())


def test_a_retiring_identity_that_is_done_is_not_started_again(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    async def nothing(*_: object) -> None:
        pass

    monkeypatch.setattr(workers_module, "drop_subscriptions", nothing)
    files = _tls_files(tmp_path)
    settings = Settings(mqtt_ca=files[0], mqtt_cert=files[1], mqtt_key=files[2])
    for number in (2, 3):  # left by a run with three workers
        for path in workers_module.worker_credentials(files[1], files[2], number):
            path.write_text("-")
    plan = plan_workers(settings, 1)
    assert (plan.count, plan.group, plan.retired, plan.needs_pool) == (1, None, (2, 3), True)
    runs: list[int] = []

    def command(number: int, retire: bool) -> list[str]:
        assert retire
        runs.append(number)
        code = 1 if number == 3 and runs.count(3) == 1 else 0  # 3 fails once, then is done
        return [sys.executable, "-c", f"raise SystemExit({code})"]

    async def scenario() -> None:
        pool = WorkerPool(plan, command=command, first_backoff_s=0.05)
        async with pool:
            await _until(lambda: [row["state"] for row in pool.status()] == ["running", "retired", "retired"])
            assert pool.problems() == []

    asyncio.run(scenario())
    assert sorted(runs) == [2, 3, 3]


def test_worker_plans() -> None:
    one = plan_workers(Settings(mqtt_tls=False), 1)
    assert (one.group, one.needs_pool, one.settings(1).mqtt_shared_group) == (None, False, None)
    three = plan_workers(Settings(mqtt_tls=False, mqtt_client_id="fieldlink:ingest-eu"), 3)
    assert three.group == INGEST_SHARED_GROUP
    assert [three.settings(n).mqtt_client_id for n in (1, 2, 3)] == [
        "fieldlink:ingest-eu",
        "fieldlink:ingest-eu:worker-2",
        "fieldlink:ingest-eu:worker-3",
    ]
    # The spool folder is named by the identity: no two workers share one.
    assert len({three.settings(n).spool_path for n in (1, 2, 3)}) == 3
    assert workers_module.stale_filters(INGEST_SHARED_GROUP) == [DATA_SUBSCRIPTION]
    assert workers_module.stale_filters(None) == [f"$share/{INGEST_SHARED_GROUP}/{DATA_SUBSCRIPTION}"]
    assert workers_module.worker_credentials(Path("p/ingest.pem"), Path("p/ingest.key"), 2) == (
        Path("p/ingest.worker-2.pem"),
        Path("p/ingest.worker-2.key"),
    )
    # A group of one's own is kept, and a single worker may use it too (several hosts, one worker each).
    assert plan_workers(Settings(mqtt_tls=False, mqtt_shared_group="eu"), 1).group == "eu"


def test_workers_on_the_command_line(tmp_path: Path) -> None:
    zero = fieldlink(tmp_path, "ingest", "--workers", "0")
    assert zero.returncode == 2
    assert "Invalid value for '--workers'" in zero.stderr and "Traceback" not in zero.stderr
    # Not the local stack: the operator provides each worker's certificate, and is told which.
    ca, cert, key = _tls_files(tmp_path)
    env = {"FIELDLINK_MQTT_CA": str(ca), "FIELDLINK_MQTT_CERT": str(cert), "FIELDLINK_MQTT_KEY": str(key)}
    result = subprocess.run(
        [sys.executable, "-m", "tools", "ingest", "--port", str(free_port()), "--workers", "2"],
        env=dict(os.environ, FIELDLINK_HOME=str(tmp_path / "home"), **env),
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(
        f"error: --workers 2: each worker connects with a certificate of its own, and these are missing: "
        f"{tmp_path}/ingest.worker-2.pem and {tmp_path}/ingest.worker-2.key (CN fieldlink:ingest:worker-2)."
    )
    assert "Traceback" not in result.stderr


def _tls_files(folder: Path) -> tuple[Path, Path, Path]:
    files = folder / "ca.pem", folder / "ingest.pem", folder / "ingest.key"
    for path in files:
        path.write_text("-")
    return files


async def _until(condition: object, timeout: float = 10.0) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met"
        await asyncio.sleep(0.02)
