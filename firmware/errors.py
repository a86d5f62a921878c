# The firmware's errors, all in this one module.


class ConfigError(ValueError):
    """The device configuration cannot be used as given."""


class MQTTError(Exception):
    """The connection failed or was lost; the client is closed and the caller reconnects."""
