# Checking and decoding the wire protocol (see shared/protocol.py and docs/protocol.md): what the
# service needs to trust nothing it did not check. Runs on MicroPython and CPython alike.
#
# Every way a payload can be wrong ends in a ProtocolError subclass, on both interpreters: the JSON
# parser's own errors, deep nesting (CPython raises RecursionError, MicroPython MemoryError while
# parsing or RuntimeError when such a value is shown), integers too large for a float (OverflowError)
# or for CPython's int-to-text limit (ValueError). A caller never sees anything else from bad input.
import json

from shared.protocol import (
    CERT_ID_LENGTH,
    MAX_ERROR_LENGTH,
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


MAX_STATUS_BYTES = 2048
# Sequences per list in one ack message (docs/protocol.md); more go in several messages. Sized so that
# the longest ack (both lists full of 16-digit sequences, to a 64-character device id) fits the 2,048
# bytes of an incoming packet that the node's MQTT client takes (MQTTClient.max_incoming).
MAX_ACK_SEQS = 56
# Integers a device sends (seq, t0, status counters) fit a float exactly, as JSON readers elsewhere need.
MAX_INT = 2**53
MAX_OFFSET_MS = 2**31

# What parsing or checking hostile input can raise besides ProtocolError: RecursionError is a
# RuntimeError on CPython, and MicroPython raises RuntimeError itself for too deep a recursion.
_BAD_INPUT = (ValueError, UnicodeError, RuntimeError, MemoryError, OverflowError)


def _refuse_constant(name):
    raise MalformedPayload("JSON has no " + name)


def _object_without_duplicates(pairs):
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise MalformedPayload("duplicate key " + _show(key))
            seen.add(key)
    return obj


# CPython's json takes hooks that refuse duplicate keys and NaN/Infinity; MicroPython's json.loads
# takes no keyword arguments, and its parser already refuses NaN and Infinity but keeps the last of
# duplicate keys. The service runs on CPython, so it gets the strict parser.
try:
    json.loads("{}", object_pairs_hook=_object_without_duplicates, parse_constant=_refuse_constant)
    STRICT_JSON = True
except TypeError:
    STRICT_JSON = False


def _loads(payload, what):
    """The JSON object in `payload` (UTF-8 bytes), or MalformedPayload."""
    try:
        text = payload.decode("utf-8") if isinstance(payload, (bytes, bytearray)) else payload
        if STRICT_JSON:
            obj = json.loads(text, object_pairs_hook=_object_without_duplicates, parse_constant=_refuse_constant)
        else:
            obj = json.loads(text)
    except ProtocolError:
        raise
    except _BAD_INPUT as exc:
        raise MalformedPayload(what + " is not JSON: " + _describe(exc))
    if not isinstance(obj, dict):
        raise MalformedPayload(what + " must be a JSON object")
    return obj


def _describe(exc):
    text = str(exc)
    if not text:
        text = type(exc).__name__
    return text[:120]


def _show(value):
    """A short, safe description of a value from a payload for an error message: never recursive,
    never the text of a huge integer, never long."""
    if value is None or isinstance(value, (bool, float)):
        return repr(value)
    if isinstance(value, int):
        if -MAX_INT * 1000 <= value <= MAX_INT * 1000:
            return repr(value)
        return "an integer too large"
    if isinstance(value, str):
        if len(value) > 40:
            return repr(value[:40]) + "..."
        return repr(value)
    if isinstance(value, list):
        return "a list of " + str(len(value)) + " items"
    if isinstance(value, dict):
        return "an object of " + str(len(value)) + " keys"
    return "a " + type(value).__name__


def parse_topic(topic):
    """Split 'fl/v1/<device>/<kind>' into (device, kind); raise BadTopic otherwise."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] + "/" + parts[1] != TOPIC_ROOT or not valid_id(parts[2]):
        raise BadTopic("topic " + _show(topic) + " is not " + TOPIC_ROOT + "/<device>/<kind>")
    return parts[2], parts[3]


def _is_int(value):
    # bool is an int on CPython (not on MicroPython): true is never a number here.
    return isinstance(value, int) and not isinstance(value, bool)


def _int(obj, key, low, high):
    value = obj.get(key)
    if not _is_int(value) or not low <= value <= high:
        raise MalformedPayload(
            "field " + repr(key) + " must be an integer in [" + str(low) + ", " + str(high) + "], got " + _show(value)
        )
    return value


def _version(obj):
    version = obj.get("v")
    # The integer 1 only: true == 1 and 1.0 == 1 in Python, and neither is the version.
    if not _is_int(version) or version != PROTOCOL_VERSION:
        raise UnsupportedVersion(
            "protocol version " + _show(version) + " is not supported (expected " + str(PROTOCOL_VERSION) + ")"
        )


def decode_batch(payload):
    """Decode and check one batch; returns (seq, readings) with readings as
    a list of (timestamp_ms, sensor_name, value) where value is a float or None."""
    seq, _, readings = decode_batch_t0(payload)
    return seq, readings


def decode_batch_t0(payload):
    """decode_batch, with the batch's start: (seq, t0_ms, readings)."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge("payload of " + str(len(payload)) + " bytes exceeds " + str(MAX_PAYLOAD_BYTES))
    obj = _loads(payload, "payload")
    try:
        return _batch(obj)
    except ProtocolError:
        raise
    except _BAD_INPUT as exc:  # a deep or huge value that passed the parser
        raise MalformedPayload("payload cannot be checked: " + _describe(exc))


def _batch(obj):
    _version(obj)
    seq = _int(obj, "seq", 0, MAX_INT)
    t0 = _int(obj, "t0", 0, MAX_INT)
    sensors = obj.get("s")
    if not isinstance(sensors, list) or not 0 < len(sensors) <= MAX_SENSORS:
        raise MalformedPayload("field 's' must be a list of 1 to " + str(MAX_SENSORS) + " sensor names")
    for name in sensors:
        if not valid_id(name):
            raise MalformedPayload("sensor name " + _show(name) + " is not a valid id")
    rows = obj.get("r")
    if not isinstance(rows, list) or len(rows) > MAX_READINGS:
        raise MalformedPayload("field 'r' must be a list of at most " + str(MAX_READINGS) + " readings")
    readings = []
    append = readings.append
    count = len(sensors)
    # The hot loop of the service: `type(x) is int` refuses bool too (on CPython, bool is an int
    # subclass), and `value - value` is 0.0 for every finite float and NaN for inf and NaN.
    for row in rows:
        if type(row) is not list or len(row) != 3:
            raise MalformedPayload("reading " + _show(row) + " must be [offset_ms, sensor_index, value]")
        offset, index, value = row
        if type(offset) is not int or not 0 <= offset <= MAX_OFFSET_MS:
            raise MalformedPayload(
                "reading offset " + _show(offset) + " must be an integer in [0, " + str(MAX_OFFSET_MS) + "]"
            )
        if type(index) is not int or not 0 <= index < count:
            raise MalformedPayload("reading sensor index " + _show(index) + " is out of range")
        if value is not None:
            if type(value) is not float:
                if type(value) is not int:
                    raise MalformedPayload("reading value " + _show(value) + " must be a number or null")
                try:
                    value = float(value)
                except OverflowError:
                    raise MalformedPayload("reading value " + _show(value) + " is too large")
            if value - value != 0.0:
                raise MalformedPayload("reading value must be finite")
        append((t0 + offset, sensors[index], value))
    return seq, t0, readings


def encode_ack(stored, refused):
    """The service's acknowledgement to a device: the sequences of its batches whose points are
    stored (in InfluxDB or the service's spool) and of those refused for good, each at most
    MAX_ACK_SEQS long."""
    if len(stored) > MAX_ACK_SEQS or len(refused) > MAX_ACK_SEQS:
        raise ValueError("at most " + str(MAX_ACK_SEQS) + " sequences per list")
    obj = {"v": PROTOCOL_VERSION}
    if stored:
        obj["stored"] = list(stored)
    if refused:
        obj["refused"] = list(refused)
    return json.dumps(obj, separators=(",", ":")).encode()


# A status's `health` (docs/protocol.md): integers in bounds, and words from a known set. Keys not
# listed are left out (a newer node may report more); counters may not take these names, so that a
# field of the service's `health` measurement always has one type.
HEALTH_INTS = {
    "uptime_s": (0, MAX_INT),
    "heap_free": (0, MAX_INT),
    "heap_largest": (0, MAX_INT),
    "boot_count": (0, MAX_INT),
    "rssi_dbm": (-127, 0),
}
HEALTH_WORDS = {
    "reset_cause": ("power_on", "hard", "watchdog", "deep_sleep", "soft", "brownout", "panic", "unknown"),
    "ntp": ("synced", "unsynced"),
}
MAX_FIRMWARE_VERSION = 32
# The counters a node reports (firmware/health.py). Others are left out, as unknown health keys are:
# each would become a field of the `health` measurement, and a device must not grow its schema.
STATUS_COUNTERS = (
    "dropped",
    "read_errors",
    "driver_errors",
    "reconnects",
    "queued",
    "queued_bytes",
    "refused",
    "resent",
    "bad_acks",
    "unsynced",
    "oom",
    "loop_errors",
)


def decode_status(payload):
    """Decode a device's status message; returns (online, counters dict, error or None, cert or None)."""
    report = decode_status_report(payload)
    return report["online"], report["counters"], report["error"], report["cert"]


def decode_status_report(payload):
    """Decode a device's status message whole: a dict of online, counters, error, cert (None when
    absent), t (the device's epoch ms when it made the status, or None) and health (a dict of the
    known health fields it reports, checked)."""
    if len(payload) > MAX_STATUS_BYTES:
        raise PayloadTooLarge("status of " + str(len(payload)) + " bytes exceeds " + str(MAX_STATUS_BYTES))
    obj = _loads(payload, "status")
    try:
        return _status(obj)
    except ProtocolError:
        raise
    except _BAD_INPUT as exc:
        raise MalformedPayload("status cannot be checked: " + _describe(exc))


def _health(obj):
    health = obj.get("health", {})
    if not isinstance(health, dict):
        raise MalformedPayload("status field 'health' must be an object")
    checked = {}
    for name, value in health.items():
        if name in HEALTH_INTS:
            low, high = HEALTH_INTS[name]
            if not _is_int(value) or not low <= value <= high:
                raise MalformedPayload(
                    "health "
                    + repr(name)
                    + " must be an integer in ["
                    + str(low)
                    + ", "
                    + str(high)
                    + "], got "
                    + _show(value)
                )
        elif name in HEALTH_WORDS:
            if value not in HEALTH_WORDS[name]:
                raise MalformedPayload("health " + repr(name) + " must be one of " + ", ".join(HEALTH_WORDS[name]))
        elif name == "fw":
            if not valid_id(value) or len(value) > MAX_FIRMWARE_VERSION:
                raise MalformedPayload(
                    "health 'fw' must be a version of at most "
                    + str(MAX_FIRMWARE_VERSION)
                    + " characters a-z 0-9 . - _"
                )
        else:
            continue
        checked[name] = value
    return checked


def _status(obj):
    _version(obj)
    online = obj.get("online")
    if not isinstance(online, bool):
        raise MalformedPayload("status field 'online' must be true or false")
    counters = obj.get("counters", {})
    if not isinstance(counters, dict):
        raise MalformedPayload("status field 'counters' must map names to integers")
    for name, count in counters.items():
        if not valid_id(name) or not _is_int(count) or not 0 <= count <= MAX_INT:
            raise MalformedPayload(
                "status counter "
                + _show(name)
                + " must be an integer in [0, "
                + str(MAX_INT)
                + "], got "
                + _show(count)
            )
    error = obj.get("error")
    if error is not None and not _is_text(error):
        raise MalformedPayload("status field 'error' must be text of at most " + str(MAX_ERROR_LENGTH) + " characters")
    cert = obj.get("cert")
    if cert is not None and not _is_cert_id(cert):
        raise MalformedPayload("status field 'cert' must be " + str(CERT_ID_LENGTH) + " lower-case hex digits")
    t = obj.get("t")
    if t is not None:
        t = _int(obj, "t", 0, MAX_INT)
    health = _health(obj)
    for name in counters:
        if name in HEALTH_INTS or name in HEALTH_WORDS or name == "fw" or name == "online":
            raise MalformedPayload("status counter " + _show(name) + " takes the name of a health field")
    known = {}
    for name in STATUS_COUNTERS:
        if name in counters:
            known[name] = counters[name]
    counters = known
    return {"online": online, "counters": counters, "error": error, "cert": cert, "t": t, "health": health}


def _is_text(value):
    """Text of at most MAX_ERROR_LENGTH characters, without lone surrogates (not Unicode text: they
    cannot be written out as UTF-8)."""
    if not isinstance(value, str) or len(value) > MAX_ERROR_LENGTH:
        return False
    for ch in value:
        if 0xD800 <= ord(ch) <= 0xDFFF:
            return False
    return True


def _is_cert_id(text):
    if not isinstance(text, str) or len(text) != CERT_ID_LENGTH:
        return False
    for ch in text:
        if ch not in "0123456789abcdef":
            return False
    return True
