# CRC-8 for the bus drivers: the 1-Wire (DS18B20) and Sensirion (SHT3x) flavours.


def crc8(data, start, end, polynomial, init, reflected):
    """CRC-8 over data[start:end] (no slice is made); reflected (LSB first) for Dallas 1-Wire,
    MSB first for Sensirion."""
    crc = init
    for i in range(start, end):
        byte = data[i]
        if reflected:
            crc ^= byte
            for _ in range(8):
                crc = (crc >> 1) ^ polynomial if crc & 1 else crc >> 1
        else:
            crc ^= byte
            for _ in range(8):
                crc = ((crc << 1) ^ polynomial) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc
