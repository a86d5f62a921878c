"""Bad payloads are counted and logged, and the service goes on with the next message."""

from __future__ import annotations

import time

from shared.decode import MAX_STATUS_BYTES
from shared.protocol import encode_status
from tests.support import IngestInfo, StackInfo, batch, mqtt_client, publish, wait_until


def test_bad_payloads_are_counted_logged_and_skipped(stack: StackInfo, ingest: IngestInfo, uid: str) -> None:
    device = f"sloppy-{uid}"
    bundle = stack.add_device(device)
    topic = f"fl/v1/{device}/data"
    now = int(time.time() * 1000)
    # A batch over MAX_PAYLOAD_BYTES never reaches the service: the broker's message_size_limit drops it
    # (tests/test_broker_security.py). A status has a smaller limit of its own, which the service checks.
    oversized = encode_status(True)[:-1] + b" " * MAX_STATUS_BYTES + b"}"
    before = ingest.counters()
    client = mqtt_client(stack.mqtt_port, bundle / "ca.pem", bundle / "cert.pem", bundle / "key.pem", device)
    try:
        publish(client, topic, b"{this is not json")
        publish(client, f"fl/v1/{device}/status", oversized)
        publish(client, topic, b'{"v":99,"seq":0,"t0":0,"s":["temp"],"r":[]}')
        publish(client, topic, batch(1, now, ["temp"], [[0, 0, 1e999]]))  # Infinity: not a reading
        publish(client, topic, batch(2, now + 10 * 3600 * 1000, ["temp"], [[0, 0, 3.0]]))  # 10 h ahead
        publish(client, topic, batch(2, now - 40 * 86_400_000, ["temp"], [[0, 0, 3.0]]))  # 40 days back
        publish(client, topic, batch(2, 0, ["temp"], [[0, 0, 3.0]]))  # 1970
        publish(client, topic, batch(3, now, ["temp"], [[0, 0, 42.5], [100, 0, 43.0]]))
    finally:
        client.loop_stop()
        client.disconnect()

    assert stack.wait_points(device, 2) == [(now, "temp", 42.5), (now + 100, "temp", 43.0)]
    after = ingest.counters()  # messages are handled in order: the last one is stored, so all were seen

    def delta(name: str) -> int:
        return after.get(name, 0) - before.get(name, 0)

    assert delta("rejected_malformed") == 2
    assert delta("rejected_too_large") == 1
    assert delta("rejected_bad_version") == 1
    assert delta("rejected_clock_skew") == 1
    assert delta("rejected_too_old") == 2
    assert delta("rejected") == 7
    assert delta("stored_messages") == 1
    log = ingest.log.read_text()
    assert f"rejected message on 'fl/v1/{device}/data' (malformed): payload is not JSON" in log
    assert f"rejected status on 'fl/v1/{device}/status' (too_large): status of {len(oversized)} bytes exceeds" in log
    assert "(bad_version): protocol version 99 is not supported (expected 1)" in log
    assert ingest.health()["status"] == "ok"


def test_device_text_cannot_forge_log_lines(stack: StackInfo, ingest: IngestInfo, uid: str) -> None:
    device = f"liar-{uid}"
    bundle = stack.add_device(device)
    forged = f"2026-01-01 00:00:00 CRITICAL fieldlink.ingest: forged-{uid}"
    before = ingest.counters()
    client = mqtt_client(stack.mqtt_port, bundle / "ca.pem", bundle / "cert.pem", bundle / "key.pem", device)
    try:
        publish(client, f"fl/v1/{device}/status", encode_status(True, None, "bad config\n" + forged + "\x1b[2J"))
        # A refusal that quotes what the device sent: a sensor name with a newline in it.
        publish(client, f"fl/v1/{device}/data", batch(0, int(time.time() * 1000), ["x\n" + forged], [[0, 0, 1.0]]))
    finally:
        client.loop_stop()
        client.disconnect()
    wait_until(lambda: ingest.counters().get("rejected_malformed", 0) > before.get("rejected_malformed", 0))
    wait_until(lambda: ingest.counters().get("status_accepted", 0) > before.get("status_accepted", 0))
    log = ingest.log.read_text()
    assert f"device {device} reports: bad config\\n{forged}\\x1b[2J" in log
    assert f"sensor name 'x\\n{forged[:30]}" in log
    assert not any(line.startswith(forged) for line in log.splitlines())
    assert "\x1b" not in log
