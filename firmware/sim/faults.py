# Faults the simulated board injects at given device times, so that outages are tested without touching
# the machine's network (`--fault KIND@SECONDS[+SECONDS]`, device seconds since this boot; firmware/
# config.py parses them, firmware/sim/board.py asks when each is on):
#   cut@S+D     the network is gone from S for D seconds: the open connection is reset, and no new one
#               can be made (the board reports no network) until it is back
#   freeze@S+D  connections stay open but every byte either way is lost, as when a radio's link dies
#               without a word; new connections open but nothing gets through
#   power@S     the power goes at the first spool write from S on: half the bytes of that write reach
#               the file, then the process is killed (SIGKILL: nothing is flushed, closed or said);
#               whoever started it powers it on again by starting it with the same bundle
#   step@S+D    the clock steps by D seconds at S (step@S-D: back), as an NTP correction does; the
#               node's timestamps stay in order and never repeat (firmware/batcher.py)
# Loaded only when a fault is asked for, so a simulated node without faults holds none of this.
import errno
import io
import os

KINDS = ("cut", "freeze", "power", "step")


def parse(text):
    """(kind, start_ms, end_ms) from "kind@seconds[+seconds]" (a step's third item: its size in ms,
    "step@S+D" or "step@S-D"); ValueError if it is not one."""
    kind, _, when = text.partition("@")
    split = max(when.find("+", 1), when.find("-", 1))
    start, length = (when[:split], when[split:]) if split > 0 else (when, "")
    if kind not in KINDS or not start or kind == "step" and not length or kind == "power" and length:
        raise ValueError("a fault is cut|freeze@SECONDS[+SECONDS], power@SECONDS or step@SECONDS+|-SECONDS: " + text)
    start_ms = int(float(start) * 1000)
    length_ms = int(float(length or "0") * 1000)
    if kind == "step":
        return kind, start_ms, length_ms
    if length_ms < 0:
        raise ValueError("a fault cannot last less than nothing: " + text)
    return kind, start_ms, start_ms + length_ms if length else -1


class Context:
    """The TLS context, as the MQTT client uses it: its sockets go through the board's faults."""

    def __init__(self, context, board):
        self.context = context
        self.board = board

    def wrap_socket(self, sock, **options):
        return Socket(self.context.wrap_socket(sock, **options), sock.fileno(), self.board)


class Socket(io.IOBase):
    """A TLS socket that loses everything while the link is frozen and fails while it is cut."""

    def __init__(self, sock, fd, board):
        self.sock = sock
        self.fd = fd
        self.board = board

    def _check(self):
        if self.board.fault("cut"):
            raise OSError(errno.ECONNRESET, "link cut (simulated)")
        return self.board.fault("freeze")

    def write(self, data):
        return len(data) if self._check() else self.sock.write(data)

    def readinto(self, buf):
        return None if self._check() else self.sock.readinto(buf)

    def setblocking(self, flag):
        self.sock.setblocking(flag)

    def close(self):
        self.sock.close()

    def ioctl(self, request, arg):
        if request == 10:  # MP_STREAM_GET_FILENO: poll the real socket
            return self.fd
        return 0


def power_off(f, data):
    """Half of this write reaches the file; then the power is gone."""
    f.write(data[: len(data) // 2])
    os.system("kill -KILL $PPID")  # the shell's parent: this process
    raise SystemExit(137)  # not reached
