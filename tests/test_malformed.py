"""Generated malformed payloads (hypothesis): structured mutations of valid batches and status messages
(wrong types, deep nesting, huge integers, duplicate keys, bad versions, non-UTF-8 bytes,
truncation). In-process, nothing but ProtocolError / RejectedMessage may come out of decoding and
verifying them, and the consumer counts each one; against the real broker and service, ten thousand
of them cost exactly their counters and leave the service storing the next valid batch."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from ingest import Issued, Registry, RejectedMessage, Settings
from ingest._consumer import Consumer, Stats, Verifier
from shared import decode
from shared.protocol import MAX_PAYLOAD_BYTES, encode_status
from tests.support import IngestInfo, StackInfo, batch, mqtt_client, publish, wait_until

NOW = int(time.time() * 1000)
DEVICE = "fuzz-1"
SHA = "cd" * 32


class Raw(str):
    """JSON text put into a payload as it is (deep nesting, integers too long for json.dumps)."""


class Pairs(list[tuple[str, Any]]):
    """A JSON object as its key-value pairs, so that a key can appear twice."""


def dump(value: Any) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, Pairs):
        return "{" + ",".join(json.dumps(k) + ":" + dump(v) for k, v in value) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(dump(v) for v in value) + "]"
    return json.dumps(value)  # NaN and Infinity come out as the tokens JSON lacks


# --- the pieces ------------------------------------------------------------------------------------

names = st.one_of(st.sampled_from(["t", "h", "temp", "rh", "p", "soil.1"]), st.text(max_size=6))
huge_ints = st.builds(
    lambda sign, first, digits: Raw(sign + str(first) + "0" * digits),
    st.sampled_from(["", "-"]),
    st.integers(1, 9),
    st.one_of(st.integers(15, 40), st.integers(300, 330), st.integers(4290, 6000)),
)
odd_numbers = st.sampled_from([Raw("1e400"), Raw("-1e400"), Raw("1E0"), Raw("1.0"), Raw("-0"), Raw("9007199254740993")])


# Depths well below or at and above CPython's recursion limit (1000): in between, whether the parser
# gives up depends on how deep the stack already is, so the reason (malformed, or the error found
# first in what parsed) could differ between this process and the service.
_list_depths = st.one_of(st.integers(2, 50), st.integers(1000, 1100), st.integers(5000, 8000))
_object_depths = st.one_of(st.integers(2, 50), st.integers(1000, 1100), st.integers(2000, 2700))
_innermost = st.sampled_from(["1", "[]", "null"])


@st.composite
def deep(draw: st.DrawFn) -> Raw:
    if draw(st.booleans()):
        depth = draw(_list_depths)
        return Raw("[" * depth + "]" * depth)
    depth = draw(_object_depths)
    return Raw('{"a":' * depth + draw(_innermost) + "}" * depth)


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.text(max_size=12),
    huge_ints,
    odd_numbers,
    deep(),
)
junk = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.lists(st.tuples(st.text(max_size=4), inner), max_size=4).map(Pairs)
    ),
    max_leaves=8,
)
versions = st.sampled_from([True, False, 1.0, "1", 2, 0, -1, None, [1], Raw("1e0"), Raw("1.0"), Raw("01")])


_sensor_lists = st.lists(st.sampled_from(["t", "h", "temp", "rh", "p"]), min_size=1, max_size=4, unique=True)
_values = st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False), st.integers(-1000, 1000))
_rows = st.lists(st.tuples(st.integers(0, 100_000), st.integers(0, 3), _values), max_size=6)


@st.composite
def valid_batch(draw: st.DrawFn) -> Pairs:
    sensors = draw(_sensor_lists)
    rows = [[offset, index % len(sensors), value] for offset, index, value in draw(_rows)]
    seq = draw(st.integers(0, 2**32))
    return Pairs([("v", 1), ("seq", seq), ("t0", NOW - draw(st.integers(0, 10**7))), ("s", sensors), ("r", rows)])


_counters = st.lists(st.tuples(st.sampled_from(["dropped", "read_errors", "queued"]), st.integers(0, 10**6)))
_errors = st.text(max_size=40)
_certs = st.sampled_from([SHA[:16], "0123456789abcdef"])


@st.composite
def valid_status(draw: st.DrawFn) -> Pairs:
    pairs = Pairs([("v", 1), ("online", draw(st.booleans()))])
    counters = draw(_counters)
    if counters:
        pairs.append(("counters", Pairs(dict(counters).items())))
    if draw(st.booleans()):
        pairs.append(("error", draw(_errors)))
    if draw(st.booleans()):
        pairs.append(("cert", draw(_certs)))
    return pairs


def _replace(pairs: Pairs, key: str, value: Any) -> Pairs:
    out = Pairs((k, value if k == key else v) for k, v in pairs)
    if key not in dict(pairs):
        out.append((key, value))
    return out


_op_counts = st.integers(1, 3)
_ops = st.sampled_from(["replace", "delete", "deep", "huge", "version", "duplicate", "row", "wrap"])
_deep = deep()
_numbers = st.one_of(huge_ints, odd_numbers)
_elements = st.one_of(junk, huge_ints, _deep)
_row_ops = st.sampled_from(["element", "shorter", "longer"])
_wrap_depths = st.one_of(st.integers(1, 5), st.integers(1000, 5000))
_byte_ops = st.sampled_from(["none", "none", "truncate", "insert", "utf16"])
_bad_bytes = st.sampled_from([b"\xff", b"\x80", b"\xc3", b"\xed\xa0\x80", b"\xfe\xff", b"\xf4\x90\x80\x80"])


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[Pairs]) -> bytes:
    """A valid payload, then one to three structural mutations, then maybe a byte-level one."""
    pairs = draw(base)
    keys = [k for k, _ in pairs] + ["x"]
    for _ in range(draw(_op_counts)):
        op = draw(_ops)
        key = draw(st.sampled_from(keys))
        if op == "replace":
            pairs = _replace(pairs, key, draw(junk))
        elif op == "delete":
            pairs = Pairs((k, v) for k, v in pairs if k != key)
        elif op == "deep":
            pairs = _replace(pairs, key, draw(_deep))
        elif op == "huge":
            pairs = _replace(pairs, key, draw(_numbers))
        elif op == "version":
            pairs = _replace(pairs, "v", draw(versions))
        elif op == "duplicate":
            at = draw(st.integers(0, len(pairs)))
            value = draw(st.one_of(st.just(dict(pairs).get(key)), junk))
            pairs = Pairs([*pairs[:at], (key, value), *pairs[at:]])
        elif op == "row":
            current = dict(pairs).get("r")
            rows = [list(r) for r in current if isinstance(r, list)] if isinstance(current, list) else []
            rows = rows or [[0, 0, 1.0]]
            row = draw(st.integers(0, len(rows) - 1))
            how = draw(_row_ops)
            if how == "element" and rows[row]:
                rows[row][draw(st.integers(0, len(rows[row]) - 1))] = draw(_elements)
            elif how == "shorter" and rows[row]:
                rows[row] = rows[row][:-1]
            else:
                rows[row] = [*rows[row], draw(junk)]
            pairs = _replace(pairs, "r", rows)
        else:  # wrap the whole payload
            depth = draw(_wrap_depths)
            return ("[" * depth + dump(pairs) + "]" * depth).encode()
    payload = dump(pairs).encode("utf-8", "surrogatepass")
    cut = draw(_byte_ops)
    if cut == "truncate" and len(payload) > 1:
        payload = payload[: draw(st.integers(0, len(payload) - 1))]
    elif cut == "insert":
        at = draw(st.integers(0, len(payload)))
        bad = draw(_bad_bytes)
        payload = payload[:at] + bad + payload[at:]
    elif cut == "utf16":
        payload = payload.decode("utf-8", "surrogatepass").encode("utf-16", "surrogatepass")
    return payload


malformed_data = mutated(valid_batch())
malformed_status = mutated(valid_status())

FAST = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)


# --- in-process -----------------------------------------------------------------------------------


class NullWriter:
    async def write(self, lines: list[str]) -> None:
        pass

    async def close(self) -> None:
        pass


class InProcess:
    def __init__(self, path: Path) -> None:
        self.registry = Registry(path)
        self.registry.add(DEVICE, Issued(serial="cd", sha256=SHA, not_after=0.0))
        self.settings = Settings(mqtt_tls=False)
        self.verifier = Verifier(self.settings, self.registry)
        self.stats = Stats()
        self.consumer = Consumer(self.settings, self.registry, NullWriter(), self.stats)
        self.loop = asyncio.new_event_loop()

    def handle(self, topic: str, payload: bytes) -> None:
        self.loop.run_until_complete(self.consumer.handle(topic, payload))
        counters = self.stats.counters
        assert counters["rejected_internal_error"] == 0
        settled = counters["stored_messages"] + counters["status_accepted"] + counters["rejected"]
        assert counters["received"] + counters["status_received"] == settled
        reasons = sum(v for k, v in counters.items() if k.startswith("rejected_"))
        assert reasons == counters["rejected"]


@pytest.fixture(scope="module")
def in_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcess]:
    harness = InProcess(tmp_path_factory.mktemp("malformed") / "registry.db")
    yield harness
    harness.loop.close()
    harness.registry.close()


@settings(FAST, max_examples=5_000)
@given(payload=malformed_data)
def test_malformed_batches_only_ever_raise_protocol_errors(in_process: InProcess, payload: bytes) -> None:
    with contextlib.suppress(decode.ProtocolError):
        decode.decode_batch(payload)
    with contextlib.suppress(RejectedMessage):
        in_process.verifier.check(f"fl/v1/{DEVICE}/data", payload, int(time.time() * 1000))
    in_process.handle(f"fl/v1/{DEVICE}/data", payload)


@settings(FAST, max_examples=5_000)
@given(payload=malformed_status)
def test_malformed_status_only_ever_raises_protocol_errors(in_process: InProcess, payload: bytes) -> None:
    with contextlib.suppress(decode.ProtocolError):
        decode.decode_status(payload)
    with contextlib.suppress(RejectedMessage):
        in_process.verifier.check_status(DEVICE, payload)
    in_process.handle(f"fl/v1/{DEVICE}/status", payload)


# --- against the real broker and service ------------------------------------------------------------


def _generate(strategy: st.SearchStrategy[bytes], count: int) -> list[bytes]:
    found: list[bytes] = []

    @settings(FAST, max_examples=count, phases=[Phase.generate], derandomize=True)
    @given(strategy)
    def collect(payload: bytes) -> None:
        found.append(payload)

    collect()
    return found


def _refused(decoder: Any, payloads: list[bytes], reasons: Counter[str]) -> list[bytes]:
    """The payloads the decoder refuses and the broker carries, counting the reason of each."""
    kept = []
    for payload in payloads:
        if len(payload) > MAX_PAYLOAD_BYTES:
            continue  # the broker drops these (message_size_limit), so the service never counts them
        try:
            decoder(payload)
        except decode.ProtocolError as exc:
            reasons[exc.reason] += 1
            kept.append(payload)
    return kept


def _connect(stack: StackInfo, device: str) -> paho.Client:
    bundle = stack.home / "devices" / device
    return mqtt_client(stack.mqtt_port, bundle / "ca.pem", bundle / "cert.pem", bundle / "key.pem", device)


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {
        k: after.get(k, 0) - before.get(k, 0) for k in set(before) | set(after) if after.get(k, 0) != before.get(k, 0)
    }


def test_ten_thousand_malformed_payloads_through_the_real_broker(
    stack: StackInfo, ingest: IngestInfo, uid: str
) -> None:
    device = f"fuzz-{uid}"
    stack.add_device(device)
    reasons: Counter[str] = Counter()
    data = _refused(decode.decode_batch, _generate(malformed_data, 5_600), reasons)
    status = _refused(decode.decode_status, _generate(malformed_status, 5_600), reasons)
    assert len(data) + len(status) >= 10_000, (len(data), len(status))
    assert {"malformed", "bad_version", "too_large"} <= set(reasons)

    before = ingest.counters()
    client = _connect(stack, device)
    try:
        infos = [client.publish(f"fl/v1/{device}/data", p, qos=1) for p in data]
        infos += [client.publish(f"fl/v1/{device}/status", p, qos=1) for p in status]
        for info in infos:
            info.wait_for_publish(60)
            assert info.is_published()
        t0 = int(time.time() * 1000)
        publish(client, f"fl/v1/{device}/data", batch(1, t0, ["temp"], [[0, 0, 21.5], [1000, 0, 21.75]]))
    finally:
        client.loop_stop()
        client.disconnect()

    assert stack.wait_points(device, 2, timeout=60) == [(t0, "temp", 21.5), (t0 + 1000, "temp", 21.75)]
    wait_until(lambda: ingest.counters().get("stored_messages", 0) > before.get("stored_messages", 0), timeout=60)
    delta = _delta(before, ingest.counters())
    expected = {
        "received": len(data) + 1,
        "status_received": len(status),
        "rejected": len(data) + len(status),
        "stored_messages": 1,
        "stored_points": 2,
        "device_acks": 1,  # for the valid batch; a payload whose sequence cannot be read gets none
        **{f"rejected_{reason}": count for reason, count in reasons.items()},
    }
    assert delta == expected
    assert health_code(ingest) == 200
    assert stack.points(device) == [(t0, "temp", 21.5), (t0 + 1000, "temp", 21.75)]


def health_code(ingest: IngestInfo) -> int:
    return httpx.get(f"{ingest.url}/healthz", timeout=5).status_code


def test_deep_status_no_longer_stops_the_service(stack: StackInfo, ingest: IngestInfo, uid: str) -> None:
    # The regression of issue 7: a retained status of 1000 nested lists raised RecursionError outside the
    # handler, ended the consumer and, unacknowledged, ended a restarted one again.
    device = f"deep-{uid}"
    stack.add_device(device)
    before = ingest.counters()
    client = _connect(stack, device)
    try:
        info = client.publish(f"fl/v1/{device}/status", b"[" * 1000 + b"]" * 1000, qos=1, retain=True)
        info.wait_for_publish(10)
        t0 = int(time.time() * 1000)
        publish(client, f"fl/v1/{device}/data", batch(0, t0, ["temp"], [[0, 0, 19.0]]))
        # Leave a well-formed retained status behind.
        info = client.publish(f"fl/v1/{device}/status", encode_status(True), qos=1, retain=True)
        info.wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()
    assert stack.wait_points(device, 1) == [(t0, "temp", 19.0)]
    wait_until(lambda: _delta(before, ingest.counters()).get("status_received", 0) == 2)
    delta = _delta(before, ingest.counters())
    assert delta.get("rejected_malformed") == 1
    assert delta.get("rejected_internal_error", 0) == 0
    assert delta.get("consumer_restarts", 0) == 0
    assert health_code(ingest) == 200
    assert ingest.health()["status"] == "ok"
    assert f"rejected status on 'fl/v1/{device}/status' (malformed): status is not JSON" in ingest.log.read_text()
