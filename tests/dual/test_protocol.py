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
    exc = raises(decode.UnsupportedVersion, decode.decode_batch, b'{"v":2,"seq":0,"t0":0,"s":["t"],"r":[]}')
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
        "v": 1,
        "online": True,
        "error": "bad filter",
    }


def test_status_decodes_and_is_checked():
    assert decode.decode_status(protocol.encode_status(True, {"dropped": 3}, "bad filter")) == (
        True,
        {"dropped": 3},
        "bad filter",
        None,
    )
    assert decode.decode_status(protocol.encode_status(False)) == (False, {}, None, None)
    assert decode.decode_status(protocol.encode_status(True, None, None, "0123456789abcdef")) == (
        True,
        {},
        None,
        "0123456789abcdef",
    )
    for bad in (
        b"nope",
        b'{"v":1}',
        b'{"v":1,"online":1}',
        b'{"v":1,"online":true,"counters":{"x":"y"}}',
        b'{"v":1,"online":true,"error":5}',
        b'{"v":1,"online":true,"cert":"0123"}',
        b'{"v":1,"online":true,"cert":"0123456789ABCDEF"}',
    ):
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


# --- strictness: nothing a payload holds escapes as anything but its ProtocolError ----------------------

_STATUS = b'{"v":1,"online":true'


def _nested(depth, open_=b"[", close=b"]", inner=b""):
    return open_ * depth + inner + close * depth


def _refused(decoder, limit, prefix, depth, suffix, open_=b"[", close=b"]", inner=b""):
    # One payload at a time: MicroPython's default heap (2 MB) holds a few of 200 KB, not many.
    payload = prefix + _nested(depth, open_, close, inner) + suffix
    expected = decode.PayloadTooLarge if len(payload) > limit else decode.MalformedPayload
    raises(expected, decoder, payload)


def test_deep_nesting_is_malformed_or_too_large_never_a_crash():
    batch, status = decode.decode_batch, decode.decode_status
    batch_limit, status_limit = protocol.MAX_PAYLOAD_BYTES, decode.MAX_STATUS_BYTES
    envelope = b'{"v":1,"seq":0,"t0":0,"s":["t"],"r":'
    for depth in (1000, 100000):
        # As the whole payload, and in the places a payload holds values.
        _refused(batch, batch_limit, b"", depth, b"")
        _refused(batch, batch_limit, envelope, depth, b"}")
        _refused(batch, batch_limit, envelope + b"[[0,0,", depth, b"]]}")
        _refused(batch, batch_limit, b'{"v":1,"seq":', depth, b',"t0":0,"s":["t"],"r":[]}')
        _refused(batch, batch_limit, envelope + b"[", depth - 2, b"]}")
        _refused(status, status_limit, b"", depth, b"")
        _refused(status, status_limit, _STATUS + b',"error":', depth, b"}")
        _refused(status, status_limit, _STATUS + b',"counters":', depth, b"}")
    # Objects nest 1000 deep only: five bytes a level would not fit MicroPython's default heap.
    _refused(batch, batch_limit, envelope + b"[", 1000, b"]}", b'{"a":', b"}", b"1")
    _refused(status, status_limit, _STATUS + b',"counters":', 1000, b"}", b'{"a":', b"}", b"1")
    _refused(status, status_limit, _STATUS + b',"counters":', 300, b"}", b'{"a":', b"}", b"1")


def test_deep_nesting_within_the_size_limits_is_malformed():
    # As deep as the byte limits allow: past CPython's recursion limit, and deep enough that showing
    # such a value would recurse on MicroPython.
    depth = (protocol.MAX_PAYLOAD_BYTES - 100) // 2
    for payload in (
        b'{"v":1,"seq":0,"t0":0,"s":["t"],"r":[' + _nested(depth) + b"]}",
        b'{"v":1,"seq":0,"t0":0,"s":["t"],"r":[[0,0,' + _nested(depth) + b"]]}",
        b'{"v":1,"seq":0,"t0":0,"s":[' + _nested(depth) + b'],"r":[]}',
        _nested(depth),
    ):
        assert len(payload) <= protocol.MAX_PAYLOAD_BYTES
        assert raises(decode.MalformedPayload, decode.decode_batch, payload).reason == "malformed"
    depth = (decode.MAX_STATUS_BYTES - 40) // 2
    for payload in (
        _STATUS + b',"error":' + _nested(depth) + b"}",
        _nested(depth),
        _STATUS + b',"counters":{"a":' + _nested(depth) + b"}}",
    ):
        assert len(payload) <= decode.MAX_STATUS_BYTES
        assert raises(decode.MalformedPayload, decode.decode_status, payload).reason == "malformed"


def test_the_parser_itself_survives_100000_levels():
    # Beyond the byte limits, as if they were raised: the parser's own failure (RecursionError on
    # CPython, MemoryError on MicroPython's default heap) is still MalformedPayload.
    raises(decode.MalformedPayload, decode._loads, _nested(100000), "payload")
    raises(decode.MalformedPayload, decode._loads, b'{"a":' + _nested(100000) + b"}", "payload")


def test_huge_integers_are_malformed():
    huge = b"1" + b"0" * 400
    longest = b"9" * 5000  # past CPython's limit on integer text (4300 digits)
    cases = [
        b'{"v":1,"seq":' + huge + b',"t0":0,"s":["t"],"r":[]}',
        b'{"v":1,"seq":0,"t0":' + huge + b',"s":["t"],"r":[]}',
        b'{"v":1,"seq":9007199254740993,"t0":0,"s":["t"],"r":[]}',
        b'{"v":1,"seq":-' + huge + b',"t0":0,"s":["t"],"r":[]}',
        b'{"v":1,"seq":0,"t0":0,"s":["t"],"r":[[' + huge + b",0,1.0]]}",
        b'{"v":1,"seq":0,"t0":0,"s":["t"],"r":[[2147483649,0,1.0]]}',
        b'{"v":1,"seq":0,"t0":0,"s":["t"],"r":[[0,' + huge + b",1.0]]}",
        b'{"v":1,"seq":0,"t0":0,"s":["t"],"r":[[0,0,' + huge + b"]]}",
        b'{"v":1,"seq":0,"t0":0,"s":["t"],"r":[[0,0,-' + huge + b"]]}",
        b'{"v":1,"seq":0,"t0":0,"s":["t"],"r":[[0,0,' + longest + b"]]}",
        b'{"v":1,"seq":' + longest + b',"t0":0,"s":["t"],"r":[]}',
        b'{"v":1,"seq":1e400,"t0":0,"s":["t"],"r":[]}',
    ]
    for case in cases:
        assert raises(decode.MalformedPayload, decode.decode_batch, case).reason == "malformed"
    for counters in (
        b'{"x":' + huge + b"}",
        b'{"x":-1}',
        b'{"x":9007199254740993}',
        b'{"x":1.0}',
        b'{"x":true}',
        b'{"x":' + b"9" * 1900 + b"}",
    ):
        payload = _STATUS + b',"counters":' + counters + b"}"
        assert raises(decode.MalformedPayload, decode.decode_status, payload).reason == "malformed"
    # The largest of each still passes.
    assert decode.decode_batch(b'{"v":1,"seq":9007199254740992,"t0":0,"s":["t"],"r":[[2147483648,0,1e308]]}') == (
        9007199254740992,
        [(2147483648, "t", 1e308)],
    )


def test_the_version_is_the_integer_one():
    for version in (b"true", b"1.0", b'"1"', b"null", b"[1]", b"{}", b"0", b"-1", b"1e0", b"2"):
        batch = b'{"v":' + version + b',"seq":0,"t0":0,"s":["t"],"r":[]}'
        assert raises(decode.UnsupportedVersion, decode.decode_batch, batch).reason == "bad_version"
        status = b'{"v":' + version + b',"online":true}'
        assert raises(decode.UnsupportedVersion, decode.decode_status, status).reason == "bad_version"


def test_duplicate_keys_are_refused():
    if not decode.STRICT_JSON:
        return  # MicroPython's json keeps the last; only the service (CPython) must refuse them
    for batch in (
        b'{"v":1,"seq":0,"seq":1,"t0":0,"s":["t"],"r":[]}',
        b'{"v":1,"v":1,"seq":0,"t0":0,"s":["t"],"r":[]}',
        b'{"v":1,"seq":0,"t0":0,"s":["t"],"r":[],"x":{"a":1,"a":1}}',
    ):
        assert raises(decode.MalformedPayload, decode.decode_batch, batch).reason == "malformed"
    for status in (b'{"v":1,"online":true,"online":false}', b'{"v":1,"online":true,"counters":{"a":1,"a":2}}'):
        assert raises(decode.MalformedPayload, decode.decode_status, status).reason == "malformed"


def test_status_error_text_is_bounded_unicode():
    longest = "e" * decode.MAX_ERROR_LENGTH
    assert decode.decode_status(protocol.encode_status(True, None, longest))[2] == longest
    assert decode.decode_status(protocol.encode_status(True, None, "x\n2026 CRITICAL forged"))[2] == (
        "x\n2026 CRITICAL forged"
    )  # kept, and escaped where it is logged
    too_long = _STATUS + b',"error":"' + b"e" * (decode.MAX_ERROR_LENGTH + 1) + b'"}'
    for bad in (too_long, _STATUS + b',"error":"\\ud800"}', _STATUS + b',"error":["x"]}', _STATUS + b',"error":true}'):
        assert raises(decode.MalformedPayload, decode.decode_status, bad).reason == "malformed"


def test_not_json_text_is_malformed():
    good = protocol.encode_batch(0, 5, ["t"], [(0, 0, 1.0)])
    cases = [
        b"\xff\xfe",
        good[:-1],
        good[:10],
        b"",
        b'{"v":1,"seq":0,"t0":0,"s":["t"],"r":[[0,0,NaN]]}',
        b'{"v":1,"seq":0,"t0":0,"s":["t"],"r":[[0,0,Infinity]]}',
        b'{"v":1,"seq":0,"t0":0,"s":["\xff"],"r":[]}',
        b'{"v":1,"seq":0,"t0":0,"s":["t"],"r":[]} x',
        b"\xef\xbb\xbf" + good,
    ]
    for case in cases:
        assert raises(decode.MalformedPayload, decode.decode_batch, case).reason == "malformed", case
    for case in (b"\xff", b'{"v":1,"online":true,"error":"\xc3"}', b"{", b"null", b"[]"):
        assert raises(decode.MalformedPayload, decode.decode_status, case).reason == "malformed", case


def test_decode_batch_t0_gives_the_start_even_without_readings():
    assert decode.decode_batch_t0(b'{"v":1,"seq":3,"t0":1700000000000,"s":["t"],"r":[]}') == (3, 1700000000000, [])


def test_a_long_config_error_is_cut_so_the_status_still_passes():
    error = "x" * (protocol.MAX_ERROR_LENGTH + 50)
    assert decode.decode_status(protocol.encode_status(True, {"dropped": 1}, error)) == (
        True,
        {"dropped": 1},
        "x" * protocol.MAX_ERROR_LENGTH,
        None,
    )


def test_the_service_ack_is_compact_json_bounded_per_list():
    assert protocol.ack_topic("node-1") == "fl/v1/node-1/ack"
    # (MicroPython's dicts keep no order: compare the objects, and the compactness apart.)
    assert json.loads(decode.encode_ack([17, 18], [19])) == {"v": 1, "stored": [17, 18], "refused": [19]}
    assert json.loads(decode.encode_ack([], [4])) == {"v": 1, "refused": [4]}
    assert json.loads(decode.encode_ack([2**53], [])) == {"v": 1, "stored": [2**53]}
    assert b" " not in decode.encode_ack([1, 2], [3])
    raises(ValueError, decode.encode_ack, list(range(decode.MAX_ACK_SEQS + 1)), [])


def test_the_longest_ack_fits_what_the_node_takes_and_decodes():
    from firmware.mqtt import MQTTClient

    most = [2**53 - i for i in range(decode.MAX_ACK_SEQS)]
    payload = decode.encode_ack(most, most)
    topic = protocol.ack_topic("d" * protocol.MAX_ID_LENGTH)
    assert 2 + len(topic) + len(payload) <= MQTTClient.max_incoming  # a QoS 0 PUBLISH's variable part
    assert protocol.decode_ack(payload) == (most, most)


def _status(**fields):
    obj = {"v": 1, "online": True}
    obj.update(fields)
    return json.dumps(obj).encode()


def test_a_status_reports_its_time_and_health():
    health = {
        "uptime_s": 3600,
        "heap_free": 4096,
        "heap_largest": 2048,
        "rssi_dbm": -67,
        "reset_cause": "watchdog",
        "boot_count": 3,
        "ntp": "synced",
        "fw": "0.2.0",
        "from_a_newer_node": 1,  # not known: left out
    }
    report = decode.decode_status_report(_status(t=1795311729979, counters={"dropped": 2}, health=health))
    del health["from_a_newer_node"]
    assert report == {
        "online": True,
        "counters": {"dropped": 2},
        "error": None,
        "cert": None,
        "t": 1795311729979,
        "health": health,
    }
    assert decode.decode_status_report(_status())["health"] == {}
    assert decode.decode_status_report(_status())["t"] is None


def test_a_status_health_out_of_bounds_is_malformed():
    bad = [
        {"t": -1},
        {"t": 2**53 + 1},
        {"t": "now"},
        {"health": []},
        {"health": {"rssi_dbm": 5}},
        {"health": {"rssi_dbm": -128}},
        {"health": {"uptime_s": -1}},
        {"health": {"heap_free": 1.5}},
        {"health": {"boot_count": True}},
        {"health": {"reset_cause": "gremlins"}},
        {"health": {"ntp": "maybe"}},
        {"health": {"fw": "1.0 beta"}},
        {"health": {"fw": "x" * 33}},
        {"health": {"fw": 2}},
        {"counters": {"rssi_dbm": 1}},  # a counter may not take a health field's name
        {"counters": {"fw": 1}},
        {"counters": {"online": 1}},
    ]
    for fields in bad:
        raises(decode.MalformedPayload, decode.decode_status_report, _status(**fields))


def test_a_status_with_health_and_time_decodes_and_fits_the_status_limit():
    # The node's status (firmware/health.py) at its longest: every counter large, every health field.
    counters = {
        name: 2**53
        for name in (
            "dropped", "read_errors", "driver_errors", "reconnects", "queued", "queued_bytes", "refused",
            "resent", "bad_acks", "unsynced",
        )
    }  # fmt: skip
    health = {
        "uptime_s": 2**40,
        "heap_free": 2**31,
        "heap_largest": 2**31,
        "rssi_dbm": -127,
        "reset_cause": "deep_sleep",
        "boot_count": 2**40,
        "ntp": "unsynced",
        "fw": "x" * 32,
    }
    payload = protocol.encode_status(True, counters, "e" * 300, "0123456789abcdef", 1795000000000, health)
    assert len(payload) <= decode.MAX_STATUS_BYTES
    online, got, error, cert = decode.decode_status(payload)
    assert (online, got, len(error), cert) == (True, counters, protocol.MAX_ERROR_LENGTH, "0123456789abcdef")
    report = decode.decode_status_report(payload)
    assert (report["t"], report["health"]) == (1795000000000, health)
    assert "t" not in json.loads(protocol.encode_status(True, counters, None, None, 0, health))
