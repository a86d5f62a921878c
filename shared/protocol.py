# The fieldlink wire protocol, version 1: topics and the batch payload.
# Runs on MicroPython and CPython alike: no typing, no dataclasses, plain json.
# Documented in docs/protocol.md; change both together.
import json

try:
    from micropython import const
except ImportError:  # CPython

    def const(value):
        return value


PROTOCOL_VERSION = const(1)
TOPIC_ROOT = "fl/v1"
# Large enough for a batch of a few hundred readings, small enough for an ESP32's RAM.
MAX_PAYLOAD_BYTES = const(16384)
MAX_READINGS = const(1000)
MAX_SENSORS = const(64)
MAX_ID_LENGTH = const(64)

_ID_FIRST = "abcdefghijklmnopqrstuvwxyz0123456789"
_ID_REST = _ID_FIRST + "-_."


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


def valid_id(name):
    """True if `name` is a device or sensor id: lower-case letters, digits, '-', '_', '.'; 1-64 long."""
    if not isinstance(name, str) or not 0 < len(name) <= MAX_ID_LENGTH:
        return False
    if name[0] not in _ID_FIRST:
        return False
    for ch in name:
        if ch not in _ID_REST:
            return False
    return True


def data_topic(device_id):
    return TOPIC_ROOT + "/" + device_id + "/data"


def status_topic(device_id):
    return TOPIC_ROOT + "/" + device_id + "/status"


def config_topic(device_id):
    return TOPIC_ROOT + "/" + device_id + "/config"


DATA_SUBSCRIPTION = TOPIC_ROOT + "/+/data"
STATUS_SUBSCRIPTION = TOPIC_ROOT + "/+/status"


def parse_topic(topic):
    """Split 'fl/v1/<device>/<kind>' into (device, kind); raise BadTopic otherwise."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] + "/" + parts[1] != TOPIC_ROOT or not valid_id(parts[2]):
        raise BadTopic("topic " + repr(topic) + " is not " + TOPIC_ROOT + "/<device>/<kind>")
    return parts[2], parts[3]


def _dumps(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


def encode_batch(seq, t0_ms, sensors, readings):
    """Encode one batch.

    seq: the device's batch counter; t0_ms: epoch milliseconds of the batch start;
    sensors: list of sensor names; readings: iterable of (offset_ms, sensor_index, value),
    value a float or None (a failed read). Returns bytes.
    """
    rows = []
    for offset, index, value in readings:
        if value is not None and value != value:  # NaN has no JSON form; a failed read is null
            value = None
        rows.append([offset, index, value])
    return _dumps({"v": PROTOCOL_VERSION, "seq": seq, "t0": t0_ms, "s": sensors, "r": rows})


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


def encode_status(online, counters=None):
    """The retained status message; `counters` is a dict of health counts (drops, errors)."""
    obj = {"v": PROTOCOL_VERSION, "online": bool(online)}
    if counters:
        obj["counters"] = counters
    return _dumps(obj)
