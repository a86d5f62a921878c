# The ESP32 board: Wi-Fi, NTP time, the watchdog, and its wiring (I2C, 1-Wire, ADC) for the one driver
# dispatch in firmware/sensors.py. Only this module imports machine, network and ntptime, and only
# when an Esp32Board is made, never at import of the firmware.
import time

import machine
import network
import ntptime
import onewire

from firmware.errors import ConfigError
from firmware.hal import Board

# MicroPython ports whose epoch is 2000-01-01 need this added to reach Unix time.
_EPOCH_2000_MS = 946684800000
_ATTENUATIONS = {"0db": "ATTN_0DB", "2.5db": "ATTN_2_5DB", "6db": "ATTN_6DB", "11db": "ATTN_11DB"}


class Esp32Board(Board):
    name = "esp32"

    def __init__(self, watchdog_ms=30000):
        self._epoch_ms = _EPOCH_2000_MS if time.gmtime(0)[0] == 2000 else 0
        self._wlan = network.WLAN(network.STA_IF)
        self._wdt = machine.WDT(timeout=watchdog_ms)
        self._time_set = False

    def now_ms(self):
        return time.time_ns() // 1000000 + self._epoch_ms

    def ticks_ms(self):
        return time.ticks_ms()

    def connect_network(self, wifi):
        """True once Wi-Fi is up, with the clock set by NTP once. Never waits: while the radio joins it
        returns False and the node asks again after its backoff, sampling meanwhile."""
        wifi = wifi or {}
        if not self._wlan.isconnected():
            if not wifi.get("ssid"):
                raise ConfigError("the config has no wifi.ssid")
            if self._wlan.status() != network.STAT_CONNECTING:
                self._wlan.active(True)
                self._wlan.connect(wifi["ssid"], wifi.get("password", ""))
            return False
        if not self._time_set:
            try:
                ntptime.host = wifi.get("ntp_host", "pool.ntp.org")
                ntptime.settime()
                self._time_set = True
            except OSError as exc:
                print("ntp failed:", repr(exc))
        return True

    def wait_ms(self, ms, poller=None):
        """Up to ms; the poller (the MQTT socket) ends the wait when it is ready."""
        self._wdt.feed()
        if poller is None:
            time.sleep_ms(ms)
        else:
            poller.ipoll(ms)

    def feed_watchdog(self):
        self._wdt.feed()


class Esp32Wiring:
    """The wiring firmware/sensors.py asks for at start-up: the ESP32's buses and ADC pins."""

    def specs(self, config):
        return config.get("sensors")

    def source(self, spec, where):
        return None  # every sensor of a board is a chip on a bus or an ADC pin

    def bus(self, kind, spec):
        if kind == "i2c":
            return machine.I2C(
                spec.get("id", 0),
                scl=machine.Pin(spec["scl"]),
                sda=machine.Pin(spec["sda"]),
                freq=spec.get("freq", 100000),
            )
        return onewire.OneWire(machine.Pin(spec["pin"]))

    def adc(self, spec, where):
        attenuation = spec.get("attenuation", "11db")
        if attenuation not in _ATTENUATIONS:
            raise ConfigError(
                where + ": adc attenuation " + repr(attenuation) + " is not one of " + ", ".join(sorted(_ATTENUATIONS))
            )
        adc = machine.ADC(machine.Pin(spec["pin"]))
        adc.atten(getattr(machine.ADC, _ATTENUATIONS[attenuation]))
        return adc

    def chip(self, kind, bus, address):
        pass  # the chip is really there (or its driver counts the missing answers)
