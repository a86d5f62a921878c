# Runs the test_* functions of the named modules under MicroPython (pytest runs the same files on CPython).
#   MICROPYPATH=.frozen:<repo> micropython tests/mp_runner.py tests.dual.test_protocol ...
import sys

passed = 0
failed = 0
for name in sys.argv[1:]:
    module = __import__(name, None, None, ["_"])
    for attr in sorted(dir(module)):
        if not attr.startswith("test_"):
            continue
        try:
            getattr(module, attr)()
            passed += 1
        except Exception as exc:
            failed += 1
            print("FAILED", name + "." + attr)
            sys.print_exception(exc)
print("micropython:", passed, "passed,", failed, "failed")
sys.exit(1 if failed else 0)
