# The ESP32 board: Wi-Fi, NTP time, the watchdog and the ADC. Only this module (with hal/) imports
# machine, network and ntptime, and only when an Esp32Board is made, never at import of the firmware.
import time

import machine
import network
import ntptime
import onewire

from firmware.hal import Board, ConfigError

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
        self._buses = {}
        self._drivers = {}

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

    def _bus(self, config, name, kind, where):
        bus = self._buses.get(name)
        if bus is not None:
            return bus
        spec = (config.get("buses") or {}).get(name)
        if not isinstance(spec, dict) or spec.get("type") != kind:
            raise ConfigError(where + ": bus " + repr(name) + " is not a configured " + kind + " bus")
        if kind == "i2c":
            bus = machine.I2C(
                spec.get("id", 0),
                scl=machine.Pin(spec["scl"]),
                sda=machine.Pin(spec["sda"]),
                freq=spec.get("freq", 100000),
            )
        else:
            bus = onewire.OneWire(machine.Pin(spec["pin"]))
        self._buses[name] = bus
        return bus

    def driver_for(self, spec, config, where):
        kind = spec.get("type")
        if kind in ("bme280", "sht3x"):
            address = spec.get("address", 0x76 if kind == "bme280" else 0x44)
            key = (kind, spec.get("bus"), address)
        elif kind == "ds18b20":
            key = (kind, spec.get("bus"), spec.get("rom"))
        else:
            key = (kind, spec.get("pin"), None)
        driver = self._drivers.get(key)
        if driver is not None:
            return driver
        # Drivers are imported when the config asks for them: RAM holds only the bytecode in use.
        if kind == "bme280":
            from firmware.drivers.bme280 import BME280

            driver = BME280(self._bus(config, spec.get("bus"), "i2c", where), address)
        elif kind == "sht3x":
            from firmware.drivers.sht3x import SHT3x

            driver = SHT3x(self._bus(config, spec.get("bus"), "i2c", where), address)
        elif kind == "ds18b20":
            from firmware.drivers.ds18b20 import DS18B20, parse_rom

            bus = self._bus(config, spec.get("bus"), "onewire", where)
            driver = DS18B20(bus, parse_rom(spec.get("rom"), where), spec.get("resolution", 12))
        elif kind == "adc":
            from firmware.drivers.analog import Analog

            attenuation = spec.get("attenuation", "11db")
            if attenuation not in _ATTENUATIONS:
                raise ConfigError(
                    where
                    + ": adc attenuation "
                    + repr(attenuation)
                    + " is not one of "
                    + ", ".join(sorted(_ATTENUATIONS))
                )
            adc = machine.ADC(machine.Pin(spec["pin"]))
            adc.atten(getattr(machine.ADC, _ATTENUATIONS[attenuation]))
            driver = Analog(adc, spec.get("scale", 1.0), spec.get("offset", 0.0))
        else:
            raise ConfigError(where + ": unknown sensor type " + repr(kind))
        self._drivers[key] = driver
        return driver

    def wait_ms(self, ms, poller=None):
        """Up to ms; the poller (the MQTT socket) ends the wait when it is ready."""
        self._wdt.feed()
        if poller is None:
            time.sleep_ms(ms)
        else:
            poller.ipoll(ms)

    def feed_watchdog(self):
        self._wdt.feed()
