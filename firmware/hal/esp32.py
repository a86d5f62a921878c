# The ESP32 board: Wi-Fi, NTP time, the watchdog and the ADC. Only this module (with hal/) imports
# machine, network and ntptime, and only when an Esp32Board is made, never at import of the firmware.
import asyncio
import time

import machine
import network
import ntptime

from firmware.hal import ConfigError

# MicroPython ports whose epoch is 2000-01-01 need this added to reach Unix time.
_EPOCH_2000_MS = 946684800000
_ATTENUATIONS = {"0db": "ATTN_0DB", "2.5db": "ATTN_2_5DB", "6db": "ATTN_6DB", "11db": "ATTN_11DB"}


class AnalogSensor:
    """An ADC pin with linear calibration: value = volts * scale + offset."""

    def __init__(self, pin, attenuation="11db", scale=1.0, offset=0.0):
        if attenuation not in _ATTENUATIONS:
            raise ConfigError("adc attenuation " + repr(attenuation) + " is not one of "
                              + ", ".join(sorted(_ATTENUATIONS)))
        self.adc = machine.ADC(machine.Pin(pin))
        self.adc.atten(getattr(machine.ADC, _ATTENUATIONS[attenuation]))
        self.scale = scale
        self.offset = offset

    def read(self, now_ms):
        return self.adc.read_uv() / 1000000 * self.scale + self.offset


class Esp32Board:
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

    async def connect_network(self, config):
        """Join the configured Wi-Fi (waiting up to 20 s) and set the clock once by NTP."""
        wifi = config.get("wifi") or {}
        if not self._wlan.isconnected():
            if not wifi.get("ssid"):
                raise ConfigError("the config has no wifi.ssid")
            self._wlan.active(True)
            self._wlan.connect(wifi["ssid"], wifi.get("password", ""))
            for _ in range(200):
                if self._wlan.isconnected():
                    break
                self._wdt.feed()
                await asyncio.sleep(0.1)
        if self._wlan.isconnected() and not self._time_set:
            try:
                ntptime.host = wifi.get("ntp_host", "pool.ntp.org")
                ntptime.settime()
                self._time_set = True
            except OSError as exc:
                print("ntp failed:", repr(exc))
        return self._wlan.isconnected()

    def sensors(self, config):
        result = []
        for spec in config.get("sensors") or []:
            kind = spec.get("type")
            if kind == "adc":
                sensor = AnalogSensor(spec["pin"], spec.get("attenuation", "11db"),
                                      spec.get("scale", 1.0), spec.get("offset", 0.0))
            else:
                raise ConfigError("sensor " + repr(spec.get("name")) + " has unknown type " + repr(kind))
            result.append((spec["name"], sensor))
        return result

    def before_sample(self):
        return True  # a board samples until it loses power

    def trace(self, payload):
        pass

    def feed_watchdog(self):
        self._wdt.feed()

    def read_file(self, path):
        with open(path, "rb") as f:
            return f.read()

    def fatal(self, message):
        print("fatal:", message)
        time.sleep(5)
        machine.reset()
