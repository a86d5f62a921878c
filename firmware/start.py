# Start-up, phase one: the command line, the config checked and the sensors built, then that code
# dropped from RAM, this module too. Phase two, making the node (which loads MQTT, TLS and the rest),
# is firmware/assemble.py: start(). So start-up code and runtime code are never in RAM together, and
# a running node holds none of either (firmware/main.py).
import gc
import sys

from firmware.errors import ConfigError

# Modules needed only to start: dropped afterwards so that their bytecode does not sit in a small
# heap for the life of the node (the strings they interned stay: MicroPython never frees those).
STARTUP_ONLY = (
    "firmware.config",
    "firmware.sensors",
    "firmware.drivers.dispatch",
    "shared.filterlib",
    "firmware.sim.wiring",
    "firmware.seldom",  # the config file names' home; loaded again for each use (app.seldom)
)


def unload(names):
    for name in names:
        sys.modules.pop(name, None)
        parent, _, child = name.rpartition(".")
        package = sys.modules.get(parent)
        if package is not None and child in package.__dict__:
            delattr(package, child)
    gc.collect()


def prepare(argv):
    """Phase one: (options, board, config, TLS context, sensor names, groups, config error), with the
    code that made them dropped, this module too; exits with status 2 on a config error."""
    # Collect after every 1 KB allocated rather than only when the heap is full: allocation then
    # restarts from the bottom of the heap, so start-up garbage does not scatter long-lived objects
    # over all of it, and a 64 KB heap keeps room in one piece for the runtime's larger allocations
    # (the TLS socket, a batch). At 2 KB the node of this layout failed at 64 KB, at start-up or at
    # its first TLS socket, depending on the files in its bundle; at 1 KB and 512 bytes it runs
    # (docs/performance.md). A collection of so small a heap takes well under a millisecond.
    gc.threshold(1024)
    from firmware import config

    try:
        prepared = config.start(argv)
    except (ConfigError, OSError) as exc:
        print("fieldlink node: " + str(exc))
        sys.exit(2)
    del config
    unload(STARTUP_ONLY + ("firmware.start",))
    return prepared
