# An analog input through the ADC: volts from the ADC's own calibration (read_uv), then a linear
# calibration to the physical unit: value = volts * scale + offset, or through two points.
from firmware.drivers import Driver


def two_point(v1, x1, v2, x2):
    """scale and offset of the line through (v1, x1) and (v2, x2)."""
    if v1 == v2:
        raise ValueError("calibration points need different voltages")
    scale = (x2 - x1) / (v2 - v1)
    return scale, x1 - scale * v1


class Analog(Driver):
    channels = ("value",)

    def __init__(self, adc, scale=1.0, offset=0.0):
        super().__init__()
        self.adc = adc
        self.scale = scale
        self.offset = offset

    def measure(self, now):
        try:
            microvolts = self.adc.read_uv()
        except OSError as exc:
            return self._fail("adc: " + repr(exc))
        self.values[0] = microvolts / 1000000 * self.scale + self.offset
        return True
