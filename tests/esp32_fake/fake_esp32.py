# The ESP32's hardware modules, faked for the MicroPython unix port, so that the files `fieldlink deploy`
# puts on a board start here as they would there: sys.platform says "esp32" (firmware/config.py then
# makes the real Esp32Board and Esp32Wiring of firmware/hal/esp32.py), and machine, network, ntptime and
# onewire answer from the environment instead of hardware:
#   FAKE_WIFI      ssid:passphrase,... the networks in the air (a join with another passphrase fails)
#   FAKE_ADC_UV    what every ADC pin reads, in microvolts (default 1650000)
#   FAKE_ADC_STEP_UV  added to FAKE_ADC_UV at each read (read n gives FAKE_ADC_UV + n * step), so that
#                  every reading is told apart from the others by its value
#   FAKE_ADC_HANG_AT  seconds after start from which an ADC read never returns (a hung driver)
#   FAKE_WIFI_DROP_AT seconds after start at which a joined station loses its network
#   FAKE_WIFI_DOWN_S  for how long after that drop no network of the air can be joined (default 0)
#   FAKE_RESET_CAUSE  what machine.reset_cause() says, by name (default PWRON_RESET)
#   FAKE_WDT_MS    the watchdog's timeout in ms whatever the firmware asks (default: what it asks);
#                  a watchdog not fed within it prints "fake wdt: reset ..." and kills the process
#                  (SIGKILL), as the hardware resets the board
# NTP servers whose name starts with "ntp-down" do not answer. Each fake prints what it is asked, so
# a test reads the node's dealings with its hardware from its output.
#   MICROPYPATH=:tests/esp32_fake micropython -c "import fake_esp32; fake_esp32.install(); import main"
import os
import sys
import time

_T0 = time.ticks_ms()


def _since_start_ms():
    return time.ticks_diff(time.ticks_ms(), _T0)


def _env_ms(name):
    """An environment variable in seconds, as ms; None when not set."""
    value = os.getenv(name)
    return None if value is None else int(float(value) * 1000)


class _Module:
    pass


class _Sys:
    platform = "esp32"

    def __getattr__(self, name):
        return getattr(_REAL_SYS, name)


_REAL_SYS = sys

# --- network -----------------------------------------------------------------------------------------
network = _Module()
network.STA_IF = 0
network.STAT_IDLE = 1000
network.STAT_CONNECTING = 1001
network.STAT_GOT_IP = 1010
network.STAT_NO_AP_FOUND = 201
network.STAT_WRONG_PASSWORD = 202
network.STAT_BEACON_TIMEOUT = 200


def _air():
    found = {}
    for item in (os.getenv("FAKE_WIFI") or "").split(","):
        if ":" in item:
            ssid, password = item.split(":", 1)
            found[ssid] = password
    return found


class WLAN:
    def __init__(self, interface):
        self._status = network.STAT_IDLE
        self._active = False
        self._drop_at = _env_ms("FAKE_WIFI_DROP_AT")  # once, at the first question from then on
        self._down_until = None

    def _lose(self):
        if self._drop_at is not None and _since_start_ms() >= self._drop_at and self._status == network.STAT_GOT_IP:
            self._drop_at = None
            self._status = network.STAT_BEACON_TIMEOUT  # the access point is gone
            self._down_until = _since_start_ms() + (_env_ms("FAKE_WIFI_DOWN_S") or 0)
            print("fake wifi: dropped")

    def active(self, on=None):
        if on is None:
            return self._active
        self._active = bool(on)

    def isconnected(self):
        self._lose()
        return self._status == network.STAT_GOT_IP

    def status(self, param=None):
        self._lose()
        if param == "rssi":
            if self._status != network.STAT_GOT_IP:
                raise OSError("not connected")
            return -60
        return self._status

    def disconnect(self):
        self._status = network.STAT_IDLE

    def connect(self, ssid, password):
        if not self._active:
            raise OSError("wifi not active")
        air = _air()
        if self._down_until is not None and _since_start_ms() < self._down_until:
            self._status = network.STAT_NO_AP_FOUND  # the network is still away
        elif ssid not in air:
            self._status = network.STAT_NO_AP_FOUND
        elif air[ssid] != password:
            self._status = network.STAT_WRONG_PASSWORD
        else:
            self._status = network.STAT_GOT_IP
        print("fake wifi:", ssid, "->", self._status)


network.WLAN = WLAN

# --- ntptime -----------------------------------------------------------------------------------------
ntptime = _Module()
ntptime.host = "pool.ntp.org"


def _settime():
    if ntptime.host.startswith("ntp-down"):
        raise OSError(110)  # ETIMEDOUT
    print("fake ntp: time from", ntptime.host)


ntptime.settime = _settime

# --- machine -----------------------------------------------------------------------------------------
machine = _Module()


class Pin:
    def __init__(self, number, *args, **kwargs):
        self.number = number


class ADC:
    ATTN_0DB = 0
    ATTN_2_5DB = 1
    ATTN_6DB = 2
    ATTN_11DB = 3

    def __init__(self, pin):
        self.pin = pin

    def atten(self, value):
        self.attenuation = value

    reads = 0  # by every pin

    def read_uv(self):
        hang_at = _env_ms("FAKE_ADC_HANG_AT")
        if hang_at is not None and _since_start_ms() >= hang_at:
            print("fake adc: the read hangs")
            while True:
                time.sleep_ms(100)
        n = ADC.reads
        ADC.reads += 1
        return int(os.getenv("FAKE_ADC_UV") or 1650000) + n * int(os.getenv("FAKE_ADC_STEP_UV") or 0)


PWRON_RESET = 1  # the ESP32 port's numbers
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5


def reset_cause():
    return globals()[os.getenv("FAKE_RESET_CAUSE") or "PWRON_RESET"]


class WDT:
    """The hardware watchdog: once made it cannot be stopped; not fed within its timeout, it resets the
    board (here: the process is killed). A thread of its own watches, so a call that blocks the
    firmware's loop cannot keep it from firing."""

    def __init__(self, timeout=5000):
        import _thread

        print("fake wdt: timeout", timeout)
        self.timeout = int(os.getenv("FAKE_WDT_MS") or timeout)
        self.feeds = 0
        self.fed = time.ticks_ms()
        _thread.start_new_thread(self._watch, ())

    def feed(self):
        if not self.feeds:
            print("fake wdt: first feed")
        self.feeds += 1
        self.fed = time.ticks_ms()

    def _watch(self):
        while True:
            time.sleep_ms(20)
            hungry = time.ticks_diff(time.ticks_ms(), self.fed)
            if hungry > self.timeout:
                print("fake wdt: reset after", self.feeds, "feeds, not fed for", hungry, "ms")
                os.system("kill -KILL $PPID")  # the shell's parent: this process


class I2C:
    def __init__(self, bus_id, scl=None, sda=None, freq=400000):
        self.bus_id = bus_id

    def readfrom_mem_into(self, address, register, buf):
        raise OSError(19)  # ENODEV: no chip answers on this fake bus

    def writeto_mem(self, address, register, data):
        raise OSError(19)

    def writeto(self, address, data):
        raise OSError(19)

    def readfrom_into(self, address, buf):
        raise OSError(19)


machine.Pin = Pin
machine.ADC = ADC
machine.WDT = WDT
machine.PWRON_RESET = PWRON_RESET
machine.HARD_RESET = HARD_RESET
machine.WDT_RESET = WDT_RESET
machine.DEEPSLEEP_RESET = DEEPSLEEP_RESET
machine.SOFT_RESET = SOFT_RESET
machine.reset_cause = reset_cause
machine.I2C = I2C

# --- onewire -----------------------------------------------------------------------------------------
onewire = _Module()


class OneWire:
    def __init__(self, pin):
        self.pin = pin

    def reset(self, required=False):
        return False  # no device answers


onewire.OneWire = OneWire


def install():
    modules = sys.modules
    modules["network"] = network
    modules["ntptime"] = ntptime
    modules["machine"] = machine
    modules["onewire"] = onewire
    modules["sys"] = _Sys()
