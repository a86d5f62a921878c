# Entry point. On a board, boot runs /main.py, which calls run(); on the unix port:
#   MICROPYPATH=<repo> micropython firmware/main.py BUNDLE_DIR [--replay FILE.csv] [--trace FILE]
#                                                   [--duration SECONDS]
import asyncio
import sys

from firmware.app import Node, load_config
from firmware.hal import ConfigError, make_board

_USAGE = "usage: main.py BUNDLE_DIR [--replay FILE.csv] [--trace FILE] [--duration SECONDS]"


def parse_args(argv):
    options = {"bundle": None}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("--replay", "--trace", "--duration"):
            if i + 1 >= len(argv):
                raise ConfigError(arg + " needs a value; " + _USAGE)
            value = argv[i + 1]
            if arg == "--duration":
                try:
                    value = float(value)
                except ValueError:
                    raise ConfigError("--duration takes seconds, got " + repr(value))
            options[arg[2:]] = value
            i += 2
        elif arg.startswith("-"):
            raise ConfigError("unknown option " + arg + "; " + _USAGE)
        else:
            options["bundle"] = arg
            i += 1
    if options["bundle"] is None:
        raise ConfigError(_USAGE)
    return options


def run(argv=None):
    try:
        options = parse_args(sys.argv[1:] if argv is None else argv)
        board = make_board(options)
        base = options["bundle"].rstrip("/")
        config = load_config(board.read_file(base + "/config.json"))
        node = Node(board, config, base_dir=base)
    except (ConfigError, OSError) as exc:
        print("fieldlink node: " + str(exc))
        sys.exit(2)
    print("node", config["device_id"], "starting on", board.name, "with sensors", node.sensor_names)
    asyncio.run(node.run())


if __name__ == "__main__":
    run()
