# The fieldlink wire protocol, version 1: topics, ids and encoding, what a device needs.
# Checking and decoding, which only the service needs, is in shared/decode.py.
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
# At most this many readings per batch, so that the longest batch a node can make (MAX_SENSORS names
# of MAX_ID_LENGTH, offsets of 10 digits, values of 17 significant digits) stays within
# MAX_PAYLOAD_BYTES: a node never builds a batch the service must refuse.
MAX_READINGS = const(256)
MAX_SENSORS = const(64)
MAX_ID_LENGTH = const(64)
# A device names the certificate it connects with in its status: the first hex digits of the SHA-256
# of the certificate's DER form (what `fieldlink device show` lists), so rotation can see it in use.
CERT_ID_LENGTH = const(16)
# A status message's `error` text, in characters: the node cuts a longer one, the service refuses it.
MAX_ERROR_LENGTH = const(256)

_ID_FIRST = "abcdefghijklmnopqrstuvwxyz0123456789"
_ID_REST = _ID_FIRST + "-_."


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


def ack_topic(device_id):
    """Where the service names the device's batches it stored or refused (docs/protocol.md)."""
    return TOPIC_ROOT + "/" + device_id + "/ack"


def decode_ack(payload):
    """The service's acknowledgement (docs/protocol.md): (stored, refused), two lists of sequences, or
    None if the payload is not a version-1 ack (not JSON, `v` not the integer 1, a list that is not a
    list of at most 256 integers in 0..2**53). The node's decoder: tolerant of nothing, raises nothing."""
    try:
        obj = json.loads(payload)
        if type(obj) is not dict or type(obj.get("v")) is not int or obj["v"] != PROTOCOL_VERSION:
            return None
        lists = (obj.get("stored", []), obj.get("refused", []))
        for seqs in lists:
            if type(seqs) is not list or len(seqs) > 256:
                return None
            for seq in seqs:
                if type(seq) is not int or not 0 <= seq <= 9007199254740992:
                    return None
        return lists
    except Exception:  # ValueError, and what hostile nesting raises: RuntimeError, MemoryError
        return None


DATA_SUBSCRIPTION = TOPIC_ROOT + "/+/data"
STATUS_SUBSCRIPTION = TOPIC_ROOT + "/+/status"


def _dumps(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


def encode_batch(seq, t0_ms, sensors, readings):
    """Encode one batch.

    seq: the device's batch counter; t0_ms: epoch milliseconds of the batch start;
    sensors: list of sensor names; readings: iterable of (offset_ms, sensor_index, value),
    value a float or None (a failed read). Returns bytes. Written straight into one buffer: no list
    per reading, so a flush costs about twice the payload in RAM, not ten times.
    """
    out = bytearray(b'{"v":')
    out.extend(str(PROTOCOL_VERSION).encode())
    out.extend(b',"seq":')
    out.extend(str(seq).encode())
    out.extend(b',"t0":')
    out.extend(str(t0_ms).encode())
    out.extend(b',"s":')
    out.extend(_dumps(sensors))
    out.extend(b',"r":[')
    first = True
    for offset, index, value in readings:
        out.extend(b"[" if first else b",[")
        first = False
        out.extend(str(offset).encode())
        out.extend(b",")
        out.extend(str(index).encode())
        if value is None or value != value:  # NaN has no JSON form: a failed read is null
            out.extend(b",null]")
        else:
            out.extend(b",")
            out.extend(json.dumps(value).encode())
            out.extend(b"]")
    out.extend(b"]}")
    return bytes(out)


def encode_status(online, counters=None, error=None, cert=None, t=None, health=None):
    """The retained status message; `counters` is a dict of health counts (drops, errors), `error`
    says why the device runs on its last good config, if it does; `cert` names the certificate in use
    (CERT_ID_LENGTH hex digits of its SHA-256); `t` is the device's epoch ms when it was made (none
    while its clock is unknown); `health` the device's health (uptime_s, heap_free, heap_largest,
    rssi_dbm, reset_cause, boot_count, ntp, fw: docs/protocol.md)."""
    obj = {"v": PROTOCOL_VERSION, "online": bool(online)}
    if counters:
        obj["counters"] = counters
    if error:
        obj["error"] = error[:MAX_ERROR_LENGTH]
    if cert:
        obj["cert"] = cert
    if t:
        obj["t"] = t
    if health:
        obj["health"] = health
    return _dumps(obj)
