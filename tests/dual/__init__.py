# Under CPython, the firmware's `from micropython import const` needs a stand-in (MicroPython has it).
try:
    import micropython  # noqa: F401
except ImportError:
    import sys

    class _MicroPython:
        @staticmethod
        def const(value):
            return value

    sys.modules["micropython"] = _MicroPython()
