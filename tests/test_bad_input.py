"""Bad payloads are counted and logged, and the service goes on with the next message."""

from __future__ import annotations

import time

from shared.protocol import MAX_PAYLOAD_BYTES
from tests.support import IngestInfo, StackInfo, batch, mqtt_client, publish


def test_bad_payloads_are_counted_logged_and_skipped(stack: StackInfo, ingest: IngestInfo, uid: str) -> None:
    device = f"sloppy-{uid}"
    bundle = stack.add_device(device)
    topic = f"fl/v1/{device}/data"
    now = int(time.time() * 1000)
    oversized = batch(0, now, ["temp"], [[0, 0, 1.0]] * 2000)
    assert len(oversized) > MAX_PAYLOAD_BYTES
    before = ingest.counters()
    client = mqtt_client(stack.mqtt_port, bundle / "ca.pem", bundle / "cert.pem", bundle / "key.pem", device)
    try:
        publish(client, topic, b"{this is not json")
        publish(client, topic, oversized)
        publish(client, topic, b'{"v":99,"seq":0,"t0":0,"s":["temp"],"r":[]}')
        publish(client, topic, batch(1, now, ["temp"], [[0, 0, 1e999]]))  # Infinity: not a reading
        publish(client, topic, batch(2, now + 10 * 3600 * 1000, ["temp"], [[0, 0, 3.0]]))  # 10 h ahead
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
    assert delta("rejected") == 5
    assert delta("stored_messages") == 1
    log = ingest.log.read_text()
    assert f"rejected message on 'fl/v1/{device}/data' (malformed): payload is not JSON" in log
    assert f"(too_large): payload of {len(oversized)} bytes exceeds {MAX_PAYLOAD_BYTES}" in log
    assert "(bad_version): protocol version 99 is not supported (expected 1)" in log
    assert ingest.health()["status"] == "ok"
