# Emulated buses for the unix port: I2C and 1-Wire, with the calls of machine.I2C and
# onewire.OneWire, routed to the emulated chips of firmware/sim/chips.py attached to them. A missing
# chip answers as on a real bus: a NACK (ENODEV), no presence pulse, all ones.
import errno


class SimI2C:
    """machine.I2C's calls, routed to emulated chips by address; no chip: OSError(ENODEV)."""

    def __init__(self):
        self.devices = {}

    def attach(self, address, chip):
        self.devices[address] = chip
        return chip

    def _chip(self, address):
        chip = self.devices.get(address)
        if chip is None:
            raise OSError(errno.ENODEV)
        return chip

    def readfrom_mem_into(self, address, register, buf):
        self._chip(address).read_registers(register, buf)

    def writeto_mem(self, address, register, buf):
        self._chip(address).write_registers(register, buf)

    def readfrom_into(self, address, buf):
        self._chip(address).read(buf)

    def writeto(self, address, buf):
        self._chip(address).write(buf)
        return len(buf)


class SimOneWire:
    """onewire.OneWire's calls; the chips follow ROM and function commands as on a real bus."""

    def __init__(self):
        self.devices = []
        self._selected = []
        self._state = "idle"
        self._pending = bytearray()

    def attach(self, chip):
        self.devices.append(chip)
        return chip

    def reset(self, required=False):
        self._state = "rom"
        self._selected = []
        present = bool(self.devices)
        if required and not present:
            raise OSError(errno.EIO)
        return present

    def select_rom(self, rom):
        self.reset()
        self.writebyte(0x55)
        self.write(rom)

    def write(self, buf):
        for byte in buf:
            self.writebyte(byte)

    def writebyte(self, byte):
        state = self._state
        if state == "rom":
            if byte == 0xCC:
                self._selected = list(self.devices)
                self._state = "function"
            elif byte == 0x55:
                self._pending = bytearray()
                self._state = "match"
            else:
                self._state = "idle"
        elif state == "match":
            self._pending.append(byte)
            if len(self._pending) == 8:
                self._selected = [d for d in self.devices if d.rom == bytes(self._pending)]
                self._state = "function"
        elif state == "function":
            if byte == 0x44:
                for chip in self._selected:
                    chip.convert()
                self._state = "idle"
            elif byte == 0xBE:
                self._state = "read"
            elif byte == 0x4E:
                self._pending = bytearray()
                self._state = "write_scratchpad"
            else:
                self._state = "idle"
        elif state == "write_scratchpad":
            self._pending.append(byte)
            if len(self._pending) == 3:
                for chip in self._selected:
                    chip.write_scratchpad(self._pending)
                self._state = "idle"

    def readinto(self, buf):
        if self._state != "read" or len(self._selected) != 1:
            for i in range(len(buf)):  # nobody drives the bus (or several do): all ones
                buf[i] = 0xFF
            return
        scratchpad = self._selected[0].scratchpad
        for i in range(len(buf)):
            buf[i] = scratchpad[i] if i < 9 else 0xFF
