"""esptool's stand-in for tests: logs its arguments to $FAKE_LOG and answers as esptool does, or
fails as esptool does with no board answering ($FAKE_ESPTOOL_FAIL=connect). Writes nothing anywhere."""

from __future__ import annotations

import json
import os
import sys

args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps(["esptool", *args]) + "\n")
print("esptool v5.6.0")
if os.environ.get("FAKE_ESPTOOL_FAIL") == "connect":
    print("Connecting......................................")
    print("A fatal error occurred: Failed to connect to ESP32: No serial data received.")
    sys.exit(2)
for share in (0.0, 25.0, 50.0, 100.0):
    print(f"Writing at 0x{int(share * 100):08x} [{'=' * int(share / 10):10}] {share:5.1f}%", end="\r", flush=True)
print("\nHash of data verified.")
