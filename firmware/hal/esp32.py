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
# A join that has not succeeded within this long gives way to the next network.
_JOIN_MS = 20000
_ATTENUATIONS = {"0db": "ATTN_0DB", "2.5db": "ATTN_2_5DB", "6db": "ATTN_6DB", "11db": "ATTN_11DB"}


class Esp32Board(Board):
    name = "esp32"

    def __init__(self, watchdog_ms=30000):
        self._epoch_ms = _EPOCH_2000_MS if time.gmtime(0)[0] == 2000 else 0
        self._wlan = network.WLAN(network.STA_IF)
        self._wdt = machine.WDT(timeout=watchdog_ms)
        self._time_set = False
        self._network = -1  # which of the config's networks is being joined; -1 before the first
        self._joining_since = time.ticks_ms()

    def now_ms(self):
        return time.time_ns() // 1000000 + self._epoch_ms

    def ticks_ms(self):
        return time.ticks_ms()

    def connect_network(self, wifi):
        """True once Wi-Fi is up, with the clock set by NTP once. Never waits: while the radio joins it
        returns False and the node asks again after its backoff, sampling meanwhile. The site's
        networks are tried in order: one that fails, or has not joined within _JOIN_MS, gives way to
        the next (a plant's second access point, a spare network)."""
        wifi = wifi or {}
        if self._wlan.isconnected():
            if not self._time_set:
                self._set_clock(wifi.get("ntp_hosts") or ("pool.ntp.org",))
            return True
        networks = wifi.get("networks")
        if not networks:
            raise ConfigError("the config has no wifi.networks")
        joining = self._network >= 0 and self._wlan.status() == network.STAT_CONNECTING
        if joining and time.ticks_diff(time.ticks_ms(), self._joining_since) < _JOIN_MS:
            return False
        self._network = (self._network + 1) % len(networks)
        chosen = networks[self._network]
        print("wifi: joining", chosen["ssid"])
        self._wlan.active(True)
        if joining:
            self._wlan.disconnect()  # connect() while a join is under way fails on the ESP32
        self._wlan.connect(chosen["ssid"], chosen.get("password", ""))
        self._joining_since = time.ticks_ms()
        return False

    def _set_clock(self, hosts):
        # TLS checks certificate dates: a clock still in 2000 fails every handshake, so each server is
        # asked in turn until one answers (the node asks again at its next connection otherwise).
        for host in hosts:
            try:
                ntptime.host = host
                ntptime.settime()
                self._time_set = True
                print("clock set from", host)
                return
            except OSError as exc:
                print("ntp failed:", host, repr(exc))

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
