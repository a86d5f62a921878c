# Helpers for tests that run under both pytest and MicroPython (tests/mp_runner.py): no pytest here.


def raises(exc_type, fn, *args):
    """Call fn(*args); return the exception of exc_type it raised, or fail."""
    try:
        fn(*args)
    except exc_type as exc:
        return exc
    raise AssertionError("expected " + exc_type.__name__)
