# Entry point. On a board, boot runs /main.py, which calls run(["/bundle"]); on the unix port:
#   MICROPYPATH=.frozen:<repo> micropython -m firmware.main BUNDLE_DIR [--replay FILE.csv]
#       [--trace FILE] [--duration SECONDS] [--time-scale N] [--stats-every SECONDS]
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
)


def unload(names):
    for name in names:
        sys.modules.pop(name, None)
        parent, _, child = name.rpartition(".")
        package = sys.modules.get(parent)
        if package is not None and child in package.__dict__:
            delattr(package, child)
    gc.collect()


def run(argv=None):
    # Collect after every 2 KB allocated rather than only when the heap is full: allocation then
    # restarts from the bottom of the heap, so start-up garbage does not scatter long-lived objects
    # over all of it. In a 64 KB heap this is what leaves room for the runtime's larger pieces (the
    # TLS socket, a batch); with 4 KB the node of issue 10 could not open its TLS socket at 64 KB
    # (docs/performance.md). A collection of so small a heap takes well under a millisecond.
    gc.threshold(2048)
    # Two phases, so that start-up code and runtime code are never in RAM together: check the config
    # and build the sensors, drop that code, then load the node (MQTT, TLS) and run.
    from firmware import config

    try:
        options, board, settings, tls, names, groups, error = config.start(sys.argv[1:] if argv is None else argv)
    except (ConfigError, OSError) as exc:
        print("fieldlink node: " + str(exc))
        sys.exit(2)
    del config
    unload(STARTUP_ONLY)
    # The code that makes the node is loaded before the runtime modules it loads, and dropped once
    # the node is made.
    from firmware import assemble

    try:
        node = assemble.node(board, settings, tls, names, groups, error)
    except (ConfigError, OSError) as exc:
        print("fieldlink node: " + str(exc))
        sys.exit(2)
    del settings, assemble
    unload(("firmware.assemble",))
    print("node", node.device_id, "starting on", board.name, "with sensors", names)
    node.run(options.get("stats-every"))


if __name__ == "__main__":
    run()
