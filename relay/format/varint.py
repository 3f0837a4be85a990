"""LEB128 unsigned varints: 7 bits a byte, low bits first, the high bit set on
every byte but the last. The bundle format and Opus clips count their
lengths with them."""

from __future__ import annotations


def put_uvarint(out: bytearray, value: int) -> None:
    if value < 0:
        raise ValueError(f"uvarint cannot hold {value}")
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def get_uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    """(value, position after it); IndexError when it runs past the end."""
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise IndexError("varint runs past the end")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")
