# Types of shared/protocol.py for CPython's type checkers (the module itself stays MicroPython-plain).
from collections.abc import Iterable
from typing import Any

PROTOCOL_VERSION: int
TOPIC_ROOT: str
MAX_PAYLOAD_BYTES: int
MAX_READINGS: int
MAX_SENSORS: int
MAX_ID_LENGTH: int
CERT_ID_LENGTH: int
MAX_ERROR_LENGTH: int
DATA_SUBSCRIPTION: str
STATUS_SUBSCRIPTION: str

def valid_id(name: object) -> bool: ...
def data_topic(device_id: str) -> str: ...
def status_topic(device_id: str) -> str: ...
def ack_topic(device_id: str) -> str: ...
def decode_ack(payload: bytes) -> tuple[list[int], list[int]] | None: ...
def encode_batch(
    seq: int, t0_ms: int, sensors: list[str], readings: Iterable[tuple[int, int, float | None]]
) -> bytes: ...
def encode_status(
    online: bool, counters: dict[str, Any] | None = None, error: str | None = None, cert: str | None = None
) -> bytes: ...
