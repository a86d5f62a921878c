"""The bench's load generator counts exactly: what it reports as acknowledged is what InfluxDB holds
once the real service has stored it (so `make bench` cannot silently miscount), at a tiny size."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.env import Bench
from bench.payloads import span_ms
from tests.support import IngestInfo, StackInfo

pytestmark = pytest.mark.stack


@pytest.mark.parametrize("shape", [1, 60])
def test_generator_count_equals_influxdb_count(
    stack: StackInfo, ingest: IngestInfo, uid: str, tmp_path: Path, shape: int
) -> None:
    bench = Bench(tmp_path, home_path=stack.home)
    devices = bench.provision(f"bt{uid}-{shape}", 3)
    messages = 40
    window = bench.window(messages * span_ms(shape))
    spec = {"mode": "fill", "shape": shape, "messages": messages, "base_ms": window.start_ms, "window": 10}
    (result,) = bench.finish(bench.generators(spec, devices, 1), timeout=60)
    assert result["acked_messages"] == messages * len(devices)
    assert result["acked_points"] == messages * len(devices) * shape
    mine = f"device =~ /^bt{uid}-{shape}-/"
    counted = bench.wait_count(window.start_ms, window.end_ms, result["acked_points"], timeout=30, where=mine)
    assert counted == result["acked_points"]
    # Nothing from these devices outside the window, nor more of them a moment later (nothing doubled).
    assert ingest.counters()["stored_messages"] >= messages * len(devices)
    assert bench.count(None, None, mine) == result["acked_points"]
