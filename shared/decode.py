# Checking and decoding the wire protocol (see shared/protocol.py and docs/protocol.md): what the
# service needs to trust nothing it did not check. Runs on MicroPython and CPython alike.
import json

from shared.protocol import (
    CERT_ID_LENGTH,
    MAX_PAYLOAD_BYTES,
    MAX_READINGS,
    MAX_SENSORS,
    PROTOCOL_VERSION,
    TOPIC_ROOT,
    valid_id,
)


class ProtocolError(ValueError):
    """Base of every protocol error; `reason` is a short stable word for counters."""

    reason = "malformed"


class MalformedPayload(ProtocolError):
    reason = "malformed"


class PayloadTooLarge(ProtocolError):
    reason = "too_large"


class UnsupportedVersion(ProtocolError):
    reason = "bad_version"


class BadTopic(ProtocolError):
    reason = "bad_topic"


def parse_topic(topic):
    """Split 'fl/v1/<device>/<kind>' into (device, kind); raise BadTopic otherwise."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] + "/" + parts[1] != TOPIC_ROOT or not valid_id(parts[2]):
        raise BadTopic("topic " + repr(topic) + " is not " + TOPIC_ROOT + "/<device>/<kind>")
    return parts[2], parts[3]


def _int(obj, key, low, high):
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise MalformedPayload("field " + repr(key) + " must be an integer in [" + str(low) + ", "
                               + str(high) + "], got " + repr(value))
    return value


def decode_batch(payload):
    """Decode and check one batch; returns (seq, readings) with readings as
    a list of (timestamp_ms, sensor_name, value) where value is a float or None."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge("payload of " + str(len(payload)) + " bytes exceeds "
                              + str(MAX_PAYLOAD_BYTES))
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeError) as exc:
        raise MalformedPayload("payload is not JSON: " + str(exc))
    if not isinstance(obj, dict):
        raise MalformedPayload("payload must be a JSON object")
    version = obj.get("v")
    if version != PROTOCOL_VERSION:
        raise UnsupportedVersion("protocol version " + repr(version) + " is not supported (expected "
                                 + str(PROTOCOL_VERSION) + ")")
    seq = _int(obj, "seq", 0, 2**53)
    t0 = _int(obj, "t0", 0, 2**53)
    sensors = obj.get("s")
    if not isinstance(sensors, list) or not 0 < len(sensors) <= MAX_SENSORS:
        raise MalformedPayload("field 's' must be a list of 1 to " + str(MAX_SENSORS) + " sensor names")
    for name in sensors:
        if not valid_id(name):
            raise MalformedPayload("sensor name " + repr(name) + " is not a valid id")
    rows = obj.get("r")
    if not isinstance(rows, list) or len(rows) > MAX_READINGS:
        raise MalformedPayload("field 'r' must be a list of at most " + str(MAX_READINGS) + " readings")
    readings = []
    for row in rows:
        if not isinstance(row, list) or len(row) != 3:
            raise MalformedPayload("reading " + repr(row) + " must be [offset_ms, sensor_index, value]")
        offset, index, value = row
        if not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset <= 2**31:
            raise MalformedPayload("reading offset " + repr(offset) + " must be a non-negative integer")
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(sensors):
            raise MalformedPayload("reading sensor index " + repr(index) + " is out of range")
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise MalformedPayload("reading value " + repr(value) + " must be a number or null")
            value = float(value)
            if value != value or value in (float("inf"), float("-inf")):
                raise MalformedPayload("reading value must be finite")
        readings.append((t0 + offset, sensors[index], value))
    return seq, readings


MAX_STATUS_BYTES = 2048


def decode_status(payload):
    """Decode a device's status message; returns (online, counters dict, error or None, cert or None)."""
    if len(payload) > MAX_STATUS_BYTES:
        raise PayloadTooLarge("status of " + str(len(payload)) + " bytes exceeds " + str(MAX_STATUS_BYTES))
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeError) as exc:
        raise MalformedPayload("status is not JSON: " + str(exc))
    if not isinstance(obj, dict):
        raise MalformedPayload("status must be a JSON object")
    if obj.get("v") != PROTOCOL_VERSION:
        raise UnsupportedVersion("protocol version " + repr(obj.get("v")) + " is not supported (expected "
                                 + str(PROTOCOL_VERSION) + ")")
    online = obj.get("online")
    counters = obj.get("counters", {})
    error = obj.get("error")
    if not isinstance(online, bool):
        raise MalformedPayload("status field 'online' must be true or false")
    if not isinstance(counters, dict) or not all(
            valid_id(k) and isinstance(v, int) and not isinstance(v, bool) for k, v in counters.items()):
        raise MalformedPayload("status field 'counters' must map names to integers")
    if error is not None and not isinstance(error, str):
        raise MalformedPayload("status field 'error' must be text")
    cert = obj.get("cert")
    if cert is not None and not _is_cert_id(cert):
        raise MalformedPayload("status field 'cert' must be " + str(CERT_ID_LENGTH) + " lower-case hex digits")
    return online, counters, error, cert


def _is_cert_id(text):
    if not isinstance(text, str) or len(text) != CERT_ID_LENGTH:
        return False
    for ch in text:
        if ch not in "0123456789abcdef":
            return False
    return True
