# The wire protocol, on both interpreters.
import json

from shared import decode, protocol
from tests.dual.helpers import raises


def test_round_trip_restores_timestamps_sensors_and_values():
    payload = protocol.encode_batch(
        7, 1700000000000, ["temperature", "humidity"], [(0, 0, 21.5), (0, 1, 40.25), (1000, 0, 21.75)]
    )
    seq, readings = decode.decode_batch(payload)
    assert seq == 7
    assert readings == [
        (1700000000000, "temperature", 21.5),
        (1700000000000, "humidity", 40.25),
        (1700000001000, "temperature", 21.75),
    ]


def test_nan_travels_as_null_and_decodes_as_none():
    payload = protocol.encode_batch(0, 5, ["t"], [(0, 0, float("nan")), (10, 0, 1.0)])
    assert b"null" in payload
    assert decode.decode_batch(payload)[1] == [(5, "t", None), (15, "t", 1.0)]


def test_encoding_is_compact_json():
    payload = protocol.encode_batch(1, 2, ["t"], [(0, 0, 3.5)])
    assert b" " not in payload
    assert json.loads(payload) == {"v": 1, "seq": 1, "t0": 2, "s": ["t"], "r": [[0, 0, 3.5]]}


def test_integer_values_decode_as_floats():
    _, readings = decode.decode_batch(b'{"v":1,"seq":0,"t0":0,"s":["t"],"r":[[0,0,21]]}')
    assert readings == [(0, "t", 21.0)]
    assert isinstance(readings[0][2], float)


def test_wrong_version_is_refused_by_name():
    exc = raises(
        decode.UnsupportedVersion, decode.decode_batch, b'{"v":2,"seq":0,"t0":0,"s":["t"],"r":[]}'
    )
    assert exc.reason == "bad_version"
    assert "2" in str(exc)


def test_missing_version_is_refused():
    raises(decode.UnsupportedVersion, decode.decode_batch, b'{"seq":0,"t0":0,"s":["t"],"r":[]}')


def test_oversized_payload_is_refused_before_parsing():
    exc = raises(decode.PayloadTooLarge, decode.decode_batch, b"x" * (protocol.MAX_PAYLOAD_BYTES + 1))
    assert exc.reason == "too_large"


def test_malformed_payloads_are_refused():
    cases = [
        b"{not json",
        b"[1, 2]",
        b'{"v":1,"seq":-1,"t0":0,"s":["t"],"r":[]}',
        b'{"v":1,"seq":0,"t0":"now","s":["t"],"r":[]}',
        b'{"v":1,"seq":0,"t0":0,"s":[],"r":[]}',
        b'{"v":1,"seq":0,"t0":0,"s":["Bad Name"],"r":[]}',
        b'{"v":1,"seq":0,"t0":0,"s":["t"],"r":[[0,1,2.0]]}',
        b'{"v":1,"seq":0,"t0":0,"s":["t"],"r":[[0,0]]}',
        b'{"v":1,"seq":0,"t0":0,"s":["t"],"r":[[-5,0,1.0]]}',
        b'{"v":1,"seq":0,"t0":0,"s":["t"],"r":[[0,0,"hot"]]}',
        b'{"v":1,"seq":0,"t0":0,"s":["t"],"r":[[0,0,true]]}',
        b'{"v":1,"seq":0,"t0":0,"s":["t"],"r":[[0,0,1e999]]}',
        b'{"v":1,"seq":0,"t0":0,"s":["t"],"r":"none"}',
    ]
    for case in cases:
        exc = raises(decode.MalformedPayload, decode.decode_batch, case)
        assert exc.reason == "malformed"


def test_too_many_readings_are_refused():
    rows = ",".join(["[0,0,1]"] * (protocol.MAX_READINGS + 1))
    raises(
        decode.MalformedPayload,
        decode.decode_batch,
        ('{"v":1,"seq":0,"t0":0,"s":["t"],"r":[' + rows + "]}").encode(),
    )


def test_topics():
    assert protocol.data_topic("node-1") == "fl/v1/node-1/data"
    assert protocol.status_topic("node-1") == "fl/v1/node-1/status"
    assert decode.parse_topic("fl/v1/node-1/data") == ("node-1", "data")
    for bad in ("fl/v1/node-1", "fl/v2/node-1/data", "fl/v1/+/data", "fl/v1/Node/data", "x/fl/v1/a/data"):
        assert raises(decode.BadTopic, decode.parse_topic, bad).reason == "bad_topic"


def test_valid_ids():
    for good in ("a", "node-1", "plant_3.line-2", "0" * 64):
        assert protocol.valid_id(good), good
    for bad in ("", "-a", "A", "a/b", "a+", "a#", "a b", "0" * 65, None, 5):
        assert not protocol.valid_id(bad), bad


def test_status_message():
    assert json.loads(protocol.encode_status(False)) == {"v": 1, "online": False}
    assert json.loads(protocol.encode_status(True, {"dropped": 2})) == {
        "v": 1,
        "online": True,
        "counters": {"dropped": 2},
    }


def test_status_message_carries_a_config_error():
    assert json.loads(protocol.encode_status(True, None, "bad filter")) == {
        "v": 1, "online": True, "error": "bad filter"}


def test_status_decodes_and_is_checked():
    assert decode.decode_status(protocol.encode_status(True, {"dropped": 3}, "bad filter")) == (
        True, {"dropped": 3}, "bad filter", None)
    assert decode.decode_status(protocol.encode_status(False)) == (False, {}, None, None)
    assert decode.decode_status(protocol.encode_status(True, None, None, "0123456789abcdef")) == (
        True, {}, None, "0123456789abcdef")
    for bad in (b"nope", b'{"v":1}', b'{"v":1,"online":1}', b'{"v":1,"online":true,"counters":{"x":"y"}}',
                b'{"v":1,"online":true,"error":5}', b'{"v":1,"online":true,"cert":"0123"}',
                b'{"v":1,"online":true,"cert":"0123456789ABCDEF"}'):
        raises(decode.MalformedPayload, decode.decode_status, bad)
    raises(decode.UnsupportedVersion, decode.decode_status, b'{"v":9,"online":true}')
    raises(decode.PayloadTooLarge, decode.decode_status, b" " * 3000)


def test_the_longest_batch_a_node_can_build_is_within_the_payload_limit():
    # Every limit at once: MAX_SENSORS names of MAX_ID_LENGTH, MAX_READINGS readings with 10-digit
    # offsets and values that need 17 significant digits. The service must accept what a node sends.
    names = [("s%02d" % i) + "x" * (protocol.MAX_ID_LENGTH - 3) for i in range(protocol.MAX_SENSORS)]
    value = -1.2345678901234567e-300
    rows = [(2147483647, protocol.MAX_SENSORS - 1, value)] * protocol.MAX_READINGS
    payload = protocol.encode_batch(4294967295, 1795311729979, names, rows)
    assert len(payload) <= protocol.MAX_PAYLOAD_BYTES, len(payload)
    seq, readings = decode.decode_batch(payload)
    assert seq == 4294967295
    assert len(readings) == protocol.MAX_READINGS
    assert readings[0] == (1795311729979 + 2147483647, names[-1], value)
