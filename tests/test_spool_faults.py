"""The spool end to end, on a stack of the test's own (so no other ingest service sees its messages): the
real service killed with SIGKILL during a database outage with its spool full and a torn record at its
end, then restarted; and a clean stop (SIGTERM) while nothing can store, which must acknowledge nothing."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx

from tests.support import StackInfo, batch, fieldlink, mqtt_client, publish, start_ingest, wait_until
from tools._home import Home
from tools._process import stop_pid

MESSAGES = 200
READINGS = 3  # per message, each at its own millisecond


def counters(url: str) -> dict[str, int]:
    result: dict[str, int] = httpx.get(f"{url}/healthz", timeout=5).json()["counters"]
    return result


def publish_all(stack: StackInfo, device: str, t0: int) -> list[tuple[int, str, float]]:
    """MESSAGES messages of READINGS readings, each acknowledged by the broker; the readings sent."""
    bundle = stack.add_device(device)
    client = mqtt_client(stack.mqtt_port, bundle / "ca.pem", bundle / "cert.pem", bundle / "key.pem", device)
    sent: list[tuple[int, str, float]] = []
    try:
        for seq in range(MESSAGES):
            rows = [[seq * READINGS + i, 0, seq + i / 10] for i in range(READINGS)]
            publish(client, f"fl/v1/{device}/data", batch(seq, t0, ["temp"], rows))
            sent += [(t0 + offset, "temp", value) for offset, _, value in rows]
    finally:
        client.loop_stop()
        client.disconnect()
    return sorted(sent)


def test_killed_during_an_outage_with_a_full_spool_and_a_torn_record_every_point_is_stored_once(
    own_stack: StackInfo, tmp_path: Path
) -> None:
    home = Home(own_stack.home)
    env = dict(
        os.environ,
        FIELDLINK_HOME=str(own_stack.home),
        FIELDLINK_SPOOL_MAX_BYTES="12000",  # about 60 messages' points: the rest wait at the broker
        FIELDLINK_SPOOL_AFTER_S="0.5",
        FIELDLINK_WRITE_BATCH_POINTS="30",  # batches of 10 messages, 2 KB
        FIELDLINK_WRITE_BATCH_MS="20",
        FIELDLINK_WRITE_RETRY_MAX_S="0.5",
    )
    log = tmp_path / "ingest.log"
    service, url = start_ingest(env, log)
    stop_pid(home.load_state().pids["influxdb"])
    sent = publish_all(own_stack, "spooler", int(time.time() * 1000) - 60_000)
    wait_until(lambda: counters(url).get("spool_full", 0) >= 1)
    before = counters(url)
    assert 0 < before["spooled_points"] < MESSAGES * READINGS
    assert before.get("stored_points", 0) == 0

    service.send_signal(signal.SIGKILL)  # no clean stop: what is spooled is on disk, the rest unacknowledged
    service.wait()
    segments = sorted((own_stack.home / "spool" / "fieldlink_ingest").glob("*.spool"))
    assert segments
    with segments[-1].open("ab") as f:  # a crash in the middle of the next record's write
        f.write(b"FLS1\x00\x00\x01\x00torn")

    result = fieldlink(own_stack.home, "stack", "up")  # InfluxDB back
    assert result.returncode == 0, result.stderr
    service, url = start_ingest(env, log)
    try:
        assert own_stack.wait_points("spooler", len(sent), timeout=60) == sent
        after = wait_until(lambda: (c := counters(url)).get("spool_replayed_points") == before["spooled_points"] and c)
        assert after["spool_torn_records"] == 1
        # Everything not spooled before the crash came again from the broker and was written directly.
        # (A point stored twice would overwrite itself: the exact list above is the whole check.)
        assert after["stored_points"] >= MESSAGES * READINGS - before["spooled_points"]
    finally:
        stop_pid(service.pid)
        service.wait()


def test_a_clean_stop_while_nothing_can_store_acknowledges_nothing(own_stack: StackInfo, tmp_path: Path) -> None:
    home = Home(own_stack.home)
    env = dict(
        os.environ,
        FIELDLINK_HOME=str(own_stack.home),
        FIELDLINK_SPOOL_MAX_BYTES="0",  # no spool: an outage holds the messages
        FIELDLINK_WRITE_RETRY_MAX_S="0.5",
    )
    log = tmp_path / "ingest.log"
    service, url = start_ingest(env, log)
    stop_pid(home.load_state().pids["influxdb"])
    sent = publish_all(own_stack, "stopper", int(time.time() * 1000) - 60_000)
    wait_until(lambda: counters(url).get("write_retries", 0) >= 2)
    service.send_signal(signal.SIGTERM)
    # uvicorn ends a clean shutdown by raising the signal it caught again.
    assert service.wait(timeout=30) in (0, -signal.SIGTERM)
    # All of them: the window (max_unacked_messages) holds more than were sent.
    assert f"stopping with {MESSAGES} messages not stored: the broker delivers them again" in log.read_text()

    result = fieldlink(own_stack.home, "stack", "up")
    assert result.returncode == 0, result.stderr
    service, url = start_ingest(env, log)
    try:
        # Had the stop acknowledged anything unstored, the broker would not deliver it again.
        assert own_stack.wait_points("stopper", len(sent), timeout=60) == sent
        assert counters(url)["stored_points"] == len(sent)
    finally:
        stop_pid(service.pid)
        service.wait()
