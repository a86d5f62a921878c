# The ESP32 board: Wi-Fi, NTP time, the watchdog, and its wiring (I2C, 1-Wire, ADC) for the one driver
# dispatch in firmware/sensors.py. Only this module imports machine, network and ntptime, and only
# when an Esp32Board is made, never at import of the firmware.
#
# Time: unknown (now_ms 0) until the first NTP answer after joining; from then on the ticks since that
# answer, added to it (a monotonic clock), asked again every hour (every minute while none answered).
# An answer that differs from the running clock by more than NTP's one-second resolution steps it,
# either way; the node's batcher keeps each sensor's timestamps in order across a step.
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
_NTP_EVERY_MS = 3600000
_NTP_RETRY_MS = 60000
_ATTENUATIONS = {"0db": "ATTN_0DB", "2.5db": "ATTN_2_5DB", "6db": "ATTN_6DB", "11db": "ATTN_11DB"}


class Esp32Board(Board):
    name = "esp32"

    def __init__(self, watchdog_ms=30000):
        self._epoch_ms = _EPOCH_2000_MS if time.gmtime(0)[0] == 2000 else 0
        self._wlan = network.WLAN(network.STA_IF)
        self._wdt = machine.WDT(timeout=watchdog_ms)
        self._base = 0  # epoch ms at _base_ticks; 0 until NTP has answered
        self._base_ticks = time.ticks_ms()
        self._ntp_at = time.ticks_ms()  # when to ask NTP next
        self._ntp_hosts = ("pool.ntp.org",)
        self._network = -1  # which of the config's networks is being joined; -1 before the first
        self._joining_since = time.ticks_ms()
        self._joined = False
        try:  # what the port tells apart (it reports a brown-out as a power-on, a panic as soft)
            self.reset_cause = {
                machine.PWRON_RESET: "power_on",
                machine.HARD_RESET: "hard",
                machine.WDT_RESET: "watchdog",
                machine.DEEPSLEEP_RESET: "deep_sleep",
                machine.SOFT_RESET: "soft",
            }.get(machine.reset_cause(), "unknown")
        except Exception:  # a port without it: "unknown"
            pass

    def now_ms(self):
        """Epoch ms from the ticks since the last NTP answer; 0 before the first."""
        if not self._base:
            return 0
        now = time.ticks_ms()
        elapsed = time.ticks_diff(now, self._base_ticks)
        if elapsed > 86400000:  # move the base along daily: ticks_diff only reaches 6 days
            self._base += elapsed
            self._base_ticks = now
            elapsed = 0
        return self._base + elapsed

    def ticks_ms(self):
        return time.ticks_ms()

    def connect_network(self, wifi):
        """True once Wi-Fi is up, with the clock set by NTP once. Never waits: while the radio joins it
        returns False and the node asks again each second, sampling meanwhile. The site's
        networks are tried in order: one that fails, or has not joined within _JOIN_MS, gives way to
        the next (a plant's second access point, a spare network)."""
        wifi = wifi or {}
        if self._wlan.isconnected():
            self._joined = True
            self._ntp_hosts = wifi.get("ntp_hosts") or self._ntp_hosts
            if not self._base:
                self._set_clock()
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

    def online(self):
        """False once Wi-Fi is lost (the node then reconnects, rejoining first); asks NTP when due."""
        if not self._wlan.isconnected():
            if self._joined:
                print("wifi: lost")
                self._joined = False
            return False
        if time.ticks_diff(time.ticks_ms(), self._ntp_at) >= 0:
            self._set_clock()
        return True

    def _set_clock(self):
        # TLS checks certificate dates: a clock still in 2000 fails every handshake, so each server is
        # asked in turn until one answers (again in a minute if none does). settime() sets the RTC
        # (for TLS); the node's clock follows it when it is more than a second off (a step).
        self._ntp_at = time.ticks_add(time.ticks_ms(), _NTP_RETRY_MS)
        for host in self._ntp_hosts:
            try:
                ntptime.host = host
                ntptime.settime()
            except OSError as exc:
                print("ntp failed:", host, repr(exc))
                continue
            now = time.time_ns() // 1000000 + self._epoch_ms
            if abs(now - self.now_ms()) > 1000:
                self._base = now
                self._base_ticks = time.ticks_ms()
            self._ntp_at = time.ticks_add(time.ticks_ms(), _NTP_EVERY_MS)
            print("clock set from", host)
            return

    def rssi(self):
        try:
            return self._wlan.status("rssi") if self._wlan.isconnected() else None
        except Exception:  # OSError between joins; a port without it
            return None

    def wait_ms(self, ms, poller=None):
        """Up to ms; the poller (the MQTT socket) ends the wait when it is ready. The watchdog is fed
        by the node, only while it samples on schedule."""
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
