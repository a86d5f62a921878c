# The ESP32's hardware modules, faked for the MicroPython unix port, so that the files `fieldlink deploy`
# puts on a board start here as they would there: sys.platform says "esp32" (firmware/config.py then
# makes the real Esp32Board and Esp32Wiring of firmware/hal/esp32.py), and machine, network, ntptime and
# onewire answer from the environment instead of hardware:
#   FAKE_WIFI      ssid:passphrase,... the networks in the air (a join with another passphrase fails)
#   FAKE_ADC_UV    what every ADC pin reads, in microvolts (default 1650000)
# NTP servers whose name starts with "ntp-down" do not answer. Each fake prints what it is asked, so
# a test reads the node's dealings with its hardware from its output.
#   MICROPYPATH=:tests/esp32_fake micropython -c "import fake_esp32; fake_esp32.install(); import main"
import os
import sys


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

    def active(self, on=None):
        if on is None:
            return self._active
        self._active = bool(on)

    def isconnected(self):
        return self._status == network.STAT_GOT_IP

    def status(self):
        return self._status

    def disconnect(self):
        self._status = network.STAT_IDLE

    def connect(self, ssid, password):
        if not self._active:
            raise OSError("wifi not active")
        air = _air()
        if ssid not in air:
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

    def read_uv(self):
        return int(os.getenv("FAKE_ADC_UV") or 1650000)


class WDT:
    def __init__(self, timeout=5000):
        self.timeout = timeout

    def feed(self):
        pass


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
