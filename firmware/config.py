# Start-up: the command line, the device config with the checks a node must make itself before it
# trusts a config (the host checks much more, see tools/_config.py), and the fallback to the last good
# config. Needed only at start-up: firmware/start.py unloads this module once the node is made.
import binascii
import hashlib
import json
import os
import ssl
import sys
import time

from firmware.errors import ConfigError
from firmware.seldom import LAST_GOOD, TRYING
from shared import protocol

# The node's version, reported in its health (at most 32 of a-z 0-9 . - _).
FIRMWARE_VERSION = "0.1.0"
# Safe mode: after this many boots in a row that ended within five minutes of starting (crashes,
# watchdog resets, power that keeps failing), the node starts on its last good config without the
# sensors marked optional, and says so in its status.
SAFE_MODE_AFTER = 3

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
    "[--time-scale N] [--stats-every SECONDS] [--no-ntp SECONDS] "
    "[--fault cut|freeze|power|step@SECONDS[+|-SECONDS]]..."
)
_NUMBERS = {"--duration": float, "--time-scale": int, "--stats-every": float, "--no-ntp": float}
CONFIG = "config.json"


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
    from firmware.sim.wiring import SimWiring, make_board

    board = make_board(
        trace_path=options.get("trace"),
        duration_s=options.get("duration"),
        time_scale=options.get("time-scale", 1),
        faults=options["fault"],
        no_ntp_s=options.get("no-ntp", 0),
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


def _boot(base):
    """(this boot's number, boots in a row before it that ended within five minutes): the file `boot`
    in the bundle holds both, this boot counted already; the node sets the second to 0 once it has
    run five minutes (firmware/app.py)."""
    try:
        count, early = (int(n) for n in _read_file(base + "/boot").split())
    except (OSError, ValueError):
        count = early = 0
    _write_file(base + "/boot", (str(count + 1) + " " + str(early + 1)).encode())
    return count + 1, early


def _safe(wiring, base, early):
    """Safe mode: the last good config (or the config, if none has worked yet), its optional sensors
    left out."""
    try:
        text = _read_file(base + "/" + LAST_GOOD)
    except OSError:
        text = _read_file(base + "/" + CONFIG)
    config = load_config(text)
    config["sensors"] = [s for s in config.get("sensors") or () if not (isinstance(s, dict) and s.get("optional"))]
    message = "safe mode: " + str(early) + " boots in a row ended within five minutes"
    print(message)
    return _prepare(wiring, base, config) + (message,)


def _load(wiring, base, early=0):
    """(config, TLS context, sensor names, groups, error) from config.json; if that config cannot be
    used, from the last good one, with the error kept for the status message. The first config
    becomes the last good one at once; a later one once it has run five minutes (or to a clean stop)
    without an error: until then it is only being tried (the file TRYING), so that the crashes it
    causes lead to safe mode on the config before it. After SAFE_MODE_AFTER early ends in a row:
    safe mode."""
    if early >= SAFE_MODE_AFTER:
        return _safe(wiring, base, early)
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
        unchanged = _read_file(base + "/" + LAST_GOOD) == text
    except OSError:
        _write_file(base + "/" + LAST_GOOD, text)  # the first config: nothing else to fall back on
        return prepared + (None,)
    if unchanged:
        try:
            os.remove(base + "/" + TRYING)  # a config tried before this one is no candidate any more
        except OSError:
            pass
        return prepared + (None,)
    try:
        tried = _read_file(base + "/" + TRYING) == text
    except OSError:
        tried = False
    if not tried:
        _write_file(base + "/" + TRYING, text)
    return prepared + (None,)


def new_spool(folder, max_bytes, segment_bytes, window, ack_timeout_ms, clock, write=None):
    """The node's spool (firmware/spool.py: Spool), not yet booted; ValueError for sizes below 1."""
    from firmware.spool import Spool

    self = Spool()
    if min(max_bytes, segment_bytes, window, ack_timeout_ms) < 1:
        raise ValueError("spool sizes and the ack timeout must be positive")
    self.folder = folder
    self.max_bytes = max_bytes
    self.segment_bytes = segment_bytes
    self.window = window
    self.ack_timeout_ms = self.wait_ms = ack_timeout_ms  # the wait doubles while no ack comes
    self.clock = clock  # ticks_diff(): the client's clock
    self.write = write  # write(file, bytes): how bytes reach a file; None: file.write
    # Counts: bytes of segment files, batches kept and not acknowledged, dropped (the spool was
    # full), refused by the service, sent again, records written (a flash write each).
    self.bytes = self.queued = self.dropped = self.refused = self.resent = self.writes = 0
    self.acks = True  # the service's acks can reach the node (else a PUBACK ends a batch's stay)
    self._hdr = bytearray(14)  # a record header (spool._HEADER)
    self._w = []  # the window, oldest send first: [seq, segment, offset, send time or -1: due]
    self._peek = None  # what next() gave: [seq, segment, offset, end, payload, window entry]
    self._first = 0  # segments on flash: _first.._last; none when _first > _last
    self._last = -1
    self._size = 0  # of segment _last
    self._open = False  # _last takes appends (only a segment this boot began does)
    self._seg = self._off = 0  # where the oldest record never sent lies (or the next will)
    self.epoch = self.seq = 0  # boot() (firmware/config.py, at start-up) sets both
    # epoch -> epoch ms at the boot that began it, for the boots whose batches made before the
    # clock was known are still here (the file `anchors`; firmware/app.py: Publisher._timed)
    self.anchors = {}
    return self


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
    # The anchors of earlier boots whose batches made before the clock was known may still be here
    # ("epoch boot_ms" lines, firmware/app.py writes them): kept while the spool can hold their batches.
    path = spool.folder + "/anchors"
    try:
        with open(path) as f:
            lines = f.read().split("\n")
    except OSError:
        lines = ()
    low = spool.epoch
    for segment in ids:
        first = spool._records(segment, 0, True)
        if first:
            low = first[0] >> 20  # the oldest batch's epoch
            break
    kept = []
    for line in lines:
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit() and int(parts[0]) >= low:
            spool.anchors[int(parts[0])] = int(parts[1])
            kept.append(line)
    if lines and len(kept) != len(lines) - 1:  # the file ends with a new line: one empty part
        if kept:
            _write_file(path, ("\n".join(kept) + "\n").encode())
        else:
            try:
                fs.remove(path)
            except OSError:
                pass
    return spool.seq


def _spool(base, board, limits):
    """The node's spool in the bundle's folder, booted: batches an earlier boot left go first."""
    try:
        spool = new_spool(
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
    count, early = _boot(base)
    loaded = _load(wiring, base, early)
    loaded[0]["spool"] = _spool(base, board, loaded[0]["spool"])
    loaded[0]["boot"] = (count, base + "/boot")
    loaded[0]["fw"] = FIRMWARE_VERSION
    if options["fault"]:  # the simulated board's sockets go through its faults
        from firmware.sim.faults import Context

        loaded = (loaded[0], Context(loaded[1], board)) + loaded[2:]
    return (options, board) + loaded
