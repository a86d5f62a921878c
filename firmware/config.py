# Start-up: the command line, the device config with the checks a node must make itself before it
# trusts a config (the host checks much more, see tools/_config.py), and the fallback to the last good
# config. Needed only at start-up: firmware/main.py unloads this module once the node runs.
import binascii
import hashlib
import json
import ssl
import sys
import time

from firmware.errors import ConfigError
from shared import protocol

_DEFAULTS = {
    "sample_interval_ms": 1000,
    "batch": {"max_readings": 60, "max_age_ms": 5000},
    "spool": {"max_bytes": 1048576, "segment_bytes": 4096, "window": 8, "ack_timeout_ms": 20000},
    "drain_timeout_ms": 15000,
}


def load_config(text):
    """Parse and check the device config; raise ConfigError with what is wrong."""
    try:
        config = json.loads(text)
    except ValueError as exc:
        raise ConfigError("config is not JSON: " + str(exc))
    if not isinstance(config, dict):
        raise ConfigError("config must be a JSON object")
    for key, value in _DEFAULTS.items():
        if key not in config:
            config[key] = value
        elif isinstance(value, dict):
            if not isinstance(config[key], dict):
                raise ConfigError(key + " must be an object")
            for inner, default in value.items():
                config[key].setdefault(inner, default)
    if not protocol.valid_id(config.get("device_id")):
        raise ConfigError("device_id " + repr(config.get("device_id")) + " is not a valid id")
    broker = config.get("broker")
    if not isinstance(broker, dict) or not broker.get("host") or not isinstance(broker.get("port"), int):
        raise ConfigError("broker must give host and port")
    broker.setdefault("keepalive_s", 30)
    broker.setdefault("timeout_ms", 10000)
    tls = config.get("tls")
    if not isinstance(tls, dict) or not all(tls.get(k) for k in ("ca", "cert", "key")):
        raise ConfigError("tls must name the ca, cert and key files")
    interval = config["sample_interval_ms"]
    if isinstance(interval, bool) or not isinstance(interval, int) or interval < 10:
        raise ConfigError("sample_interval_ms must be an integer >= 10")
    for key in ("max_readings", "max_age_ms"):
        if not isinstance(config["batch"][key], int) or config["batch"][key] < 1:
            raise ConfigError("batch." + key + " must be a positive integer")
    for key in ("max_bytes", "segment_bytes", "window", "ack_timeout_ms"):
        if not isinstance(config["spool"][key], int) or config["spool"][key] < 1:
            raise ConfigError("spool." + key + " must be a positive integer")
    return config


_USAGE = (
    "usage: main.py BUNDLE_DIR [--replay FILE.csv] [--trace FILE] [--duration SECONDS] "
    "[--time-scale N] [--stats-every SECONDS] [--fault cut|freeze|power@SECONDS[+SECONDS]]..."
)
_NUMBERS = {"--duration": float, "--time-scale": int, "--stats-every": float}
CONFIG = "config.json"
LAST_GOOD = "config.last-good.json"


def parse_args(argv):
    options = {"bundle": None, "fault": []}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--fault" and i + 1 < len(argv):  # the simulated board's (firmware/sim/faults.py)
            from firmware.sim.faults import parse

            try:
                options["fault"].append(parse(argv[i + 1]))
            except ValueError as exc:
                raise ConfigError(str(exc))
            i += 2
        elif arg in ("--replay", "--trace") or arg in _NUMBERS:
            if i + 1 >= len(argv):
                raise ConfigError(arg + " needs a value; " + _USAGE)
            value = argv[i + 1]
            if arg in _NUMBERS:
                try:
                    value = _NUMBERS[arg](value)
                except ValueError:
                    raise ConfigError(arg + " takes a number, got " + repr(value))
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


def _make_board(options):
    """(board, wiring) for this interpreter: esp32 on a board, the simulator on the unix port. The
    wiring is what firmware/sensors.py makes the drivers from; it is needed only at start-up."""
    if sys.platform == "esp32":
        from firmware.hal.esp32 import Esp32Board, Esp32Wiring

        return Esp32Board(), Esp32Wiring()
    from firmware.sim.board import SimBoard
    from firmware.sim.wiring import SimWiring

    board = SimBoard(
        trace_path=options.get("trace"),
        duration_s=options.get("duration"),
        time_scale=options.get("time-scale", 1),
        faults=options["fault"],
    )
    return board, SimWiring(board, options.get("replay"))


def _read_file(path):
    with open(path, "rb") as f:
        return f.read()


def _write_file(path, data):
    with open(path, "wb") as f:
        f.write(data)


def _tls_context(base, tls):
    """(TLS context, certificate id): the id is what the status reports as the certificate in use,
    so that the service can tell a rotation has reached the device."""

    def path(name):
        return name if name.startswith("/") else base + "/" + name

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.verify_mode = ssl.CERT_REQUIRED  # the fleet CA is pinned: nothing else is trusted
    try:
        context.load_verify_locations(cadata=_read_file(path(tls["ca"])))
        cert = _read_file(path(tls["cert"]))
        context.load_cert_chain(cert, _read_file(path(tls["key"])))
    except (OSError, ValueError) as exc:
        raise ConfigError("cannot load TLS files: " + repr(exc))
    cert_id = binascii.hexlify(hashlib.sha256(cert).digest()).decode()[: protocol.CERT_ID_LENGTH]
    return context, cert_id


def _prepare(wiring, base, config):
    # The TLS context first, while the heap is nearly empty: mbedTLS wants a few kilobytes in one piece.
    context, config["cert_id"] = _tls_context(base, config["tls"])
    from firmware.sensors import build_sensors

    names, groups = build_sensors(config, wiring)
    # The sensor specs and their filter lists are built now: keep only what the runtime reads.
    for key in ("sensors", "buses"):
        config.pop(key, None)
    return config, context, names, groups


def _load(wiring, base):
    """(config, TLS context, sensor names, groups, error) from config.json; if that config cannot be
    used, from the last good one, with the error kept for the status message. A config that worked
    becomes the last good one."""
    text = _read_file(base + "/" + CONFIG)
    try:
        prepared = _prepare(wiring, base, load_config(text))
    except ConfigError as exc:
        try:
            fallback = _read_file(base + "/" + LAST_GOOD)
        except OSError:
            raise exc
        print("config error:", exc, "; running on the last good config")
        return _prepare(wiring, base, load_config(fallback)) + (str(exc),)
    try:
        if _read_file(base + "/" + LAST_GOOD) == text:
            return prepared + (None,)
    except OSError:
        pass
    _write_file(base + "/" + LAST_GOOD, text)
    return prepared + (None,)


def boot_spool(spool):
    """Find what earlier boots left in the spool's folder (its valid records are all queued again) and
    take an epoch above every sequence seen; returns this boot's first sequence. Start-up work, kept
    out of firmware/spool.py, which stays in RAM."""
    fs = spool.fs
    try:
        fs.mkdir(spool.folder)
    except OSError:
        pass  # it exists
    ids = sorted(int(n[:-2]) for n in fs.listdir(spool.folder) if n[-2:] == ".r" and n[:-2].isdigit())
    top = -1
    if ids:
        spool._first = spool._seg = ids[0]
        spool._last = ids[-1]
        spool._size = fs.stat(spool._path(spool._last))[6]
        for segment in ids:
            count, seq = spool._records(segment, 0, False)
            spool.queued += count
            top = max(top, seq)
            spool.bytes += spool._stat(segment)
    try:
        with open(spool.folder + "/epoch") as f:
            epoch = int(f.read())
    except (OSError, ValueError):
        epoch = 0
    spool._persist(max(epoch, top >> 20) + 1)
    spool.seq = spool.epoch << 20
    return spool.seq


def _spool(base, board, limits):
    """The node's spool in the bundle's folder, booted: batches an earlier boot left go first."""
    from firmware.spool import Spool

    try:
        spool = Spool(
            base + "/spool",
            limits["max_bytes"],
            limits["segment_bytes"],
            limits["window"],
            limits["ack_timeout_ms"],
            time,  # the MQTT client's clock: real time
            board.write,
        )
    except ValueError as exc:
        raise ConfigError(str(exc))
    boot_spool(spool)
    return spool


def start(argv):
    """(options, board, config, TLS context, sensor names, groups, config error): everything a node
    needs from the command line and its config; raises ConfigError or OSError if it cannot start."""
    options = parse_args(argv)
    board, wiring = _make_board(options)
    base = options["bundle"].rstrip("/")
    loaded = _load(wiring, base)
    loaded[0]["spool"] = _spool(base, board, loaded[0]["spool"])
    if options["fault"]:  # the simulated board's sockets go through its faults
        from firmware.sim.faults import Context

        loaded = (loaded[0], Context(loaded[1], board)) + loaded[2:]
    return (options, board) + loaded
