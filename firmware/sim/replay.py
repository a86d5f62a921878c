# The rows of a CSV file as a driver: raw readings replayed through the real filters and batching.
import math

from firmware.drivers import Driver
from firmware.errors import ConfigError


class ReplayDriver(Driver):
    """Raw readings from a CSV file: a header of sensor names, then one row per sampling tick.
    An empty cell, or one that is not a number, is a failed read (NaN)."""

    def __init__(self, path):
        try:
            self._file = open(path)
        except OSError as exc:
            raise ConfigError("cannot open replay file " + repr(path) + ": " + str(exc))
        header = self._file.readline().strip()
        if not header:
            raise ConfigError("replay file " + repr(path) + " has no header row")
        self.channels = tuple(name.strip() for name in header.split(","))
        super().__init__()
        self.line = 1
        self.exhausted = False

    def start(self, now):
        """Move to the next row; at the end of the file the source is exhausted."""
        while True:
            text = self._file.readline()
            self.line += 1
            if not text:
                self.exhausted = True
                self._file.close()
                return False
            text = text.strip()
            if not text:
                continue
            cells = text.split(",")
            if len(cells) != len(self.channels):
                print("replay: line", self.line, "has", len(cells), "cells, expected", len(self.channels), "; skipped")
                continue
            for i in range(len(cells)):
                cell = cells[i].strip()
                try:
                    self.values[i] = float(cell) if cell else math.nan
                except ValueError:
                    print("replay: line", self.line, "cell", repr(cell), "is not a number; read as NaN")
                    self.values[i] = math.nan
            return True

    def measure(self, now):
        return True  # start() has read the row
