"""The ingest service's errors: one hierarchy, re-exported from `ingest`."""

from __future__ import annotations


class IngestError(Exception):
    """Base of every error the ingest service raises on purpose."""


class SettingsError(IngestError):
    """The settings cannot be used as given (a missing file, an unsafe production default)."""


class RegistryError(IngestError):
    """The device registry refused an operation or cannot be opened."""


class UnknownDevice(RegistryError):
    """No device of that id is registered."""


class InvalidDeviceId(RegistryError):
    """Not a device id (shared.protocol.valid_id): refused before any file or row is touched."""


class InvalidLabels(RegistryError):
    """Labels beyond the registry's bounds (how many, how long)."""


class PKIError(IngestError):
    """The fleet CA cannot do what was asked (missing, unreadable)."""


class FleetError(IngestError):
    """A device lifecycle step cannot be done (unknown or revoked device, broker unreachable)."""


class StorageError(IngestError):
    """The database did not take a write; the message stays unacknowledged and is retried."""


class SpoolError(IngestError):
    """The spool folder cannot be used (in use by another process, unwritable, changed on disk)."""


class SpoolDamaged(SpoolError):
    """A spool record on disk is not what was written (changed, cut, removed under the service)."""


class SpoolFull(SpoolError):
    """The spool holds its bound: the batch stays with its messages, unacknowledged."""


class RejectedMessage(IngestError):
    """A message that will never be stored; `reason` is the counter it is counted under."""

    def __init__(
        self, reason: str, detail: str, batch: tuple[str, int] | None = None, dropped: int | None = None
    ) -> None:
        super().__init__(detail)
        self.reason = reason
        # A partial write: the database stored the other points of the request and dropped this many.
        self.dropped = dropped
        # (device, seq) of a batch refused for good for what it holds: the device is told so (its
        # ack topic) and stops sending it. Left None when the sender is not trusted (revoked,
        # unregistered) or the batch could not be read.
        self.batch = batch
