"""Bounds-checked reading and writing of the binary layouts (varints, fixed-width integers).

Every read checks the remaining length first and raises :class:`CodecError` naming the field,
so that random or truncated bytes end in a clean error, never an IndexError or a huge
allocation. Varints are read in their shortest form only (a padded 0x80 0x00 is refused), so
that a value has one encoding and a signed container one byte string.
"""

from __future__ import annotations

import struct

from blacklist.errors import CodecError

_U8 = struct.Struct(">B")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_I64 = struct.Struct(">q")


class Writer:
    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def u8(self, value: int) -> None:
        self._parts.append(_U8.pack(value))

    def u32(self, value: int) -> None:
        self._parts.append(_U32.pack(value))

    def u64(self, value: int) -> None:
        self._parts.append(_U64.pack(value))

    def i64(self, value: int) -> None:
        self._parts.append(_I64.pack(value))

    def uvarint(self, value: int) -> None:
        """LEB128 unsigned varint (as in protobuf)."""
        if value < 0:
            raise ValueError(f"uvarint cannot encode negative {value}")
        out = bytearray()
        while True:
            byte = value & 0x7F
            value >>= 7
            if value:
                out.append(byte | 0x80)
            else:
                out.append(byte)
                break
        self._parts.append(bytes(out))

    def svarint(self, value: int) -> None:
        """Zig-zag signed varint (as protobuf sint64)."""
        self.uvarint((value << 1) if value >= 0 else ((-value << 1) - 1))

    def raw(self, data: bytes) -> None:
        self._parts.append(bytes(data))

    def blob(self, data: bytes) -> None:
        """Length-prefixed bytes."""
        self.uvarint(len(data))
        self._parts.append(bytes(data))

    def getvalue(self) -> bytes:
        return b"".join(self._parts)


class Reader:
    def __init__(self, data: bytes | memoryview, what: str = "data") -> None:
        self._data = memoryview(data).cast("B") if not isinstance(data, bytes) else data
        self._pos = 0
        self._what = what

    @property
    def pos(self) -> int:
        return self._pos

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def _take(self, n: int, field: str) -> bytes:
        if n < 0 or n > self.remaining:
            raise CodecError(
                f"{self._what} truncated: {field} needs {n} bytes at offset {self._pos}, "
                f"{self.remaining} left"
            )
        out = bytes(self._data[self._pos : self._pos + n])
        self._pos += n
        return out

    def u8(self, field: str) -> int:
        return int(_U8.unpack(self._take(1, field))[0])

    def u32(self, field: str) -> int:
        return int(_U32.unpack(self._take(4, field))[0])

    def u64(self, field: str) -> int:
        return int(_U64.unpack(self._take(8, field))[0])

    def i64(self, field: str) -> int:
        return int(_I64.unpack(self._take(8, field))[0])

    def uvarint(self, field: str, limit: int = 2**64 - 1) -> int:
        result = 0
        shift = 0
        while True:
            if self._pos >= len(self._data):
                raise CodecError(f"{self._what} truncated inside varint {field} at {self._pos}")
            byte = self._data[self._pos]
            self._pos += 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                # Canonical form only (one encoding per value, so one body per delta and one
                # container per body, issue #11): a final zero byte after others pads.
                if byte == 0 and shift:
                    raise CodecError(
                        f"{self._what}: varint {field} is padded (not its shortest encoding)"
                    )
                break
            shift += 7
            if shift > 63:
                raise CodecError(f"{self._what}: varint {field} is longer than 10 bytes")
        if result > limit:
            raise CodecError(f"{self._what}: {field} = {result} exceeds the limit {limit}")
        return result

    def svarint(self, field: str) -> int:
        z = self.uvarint(field)
        return (z >> 1) if not z & 1 else -((z + 1) >> 1)

    def raw(self, n: int, field: str) -> bytes:
        return self._take(n, field)

    def blob(self, field: str, limit: int | None = None) -> bytes:
        n = self.uvarint(field + " length", self.remaining if limit is None else limit)
        return self._take(n, field)

    def expect_end(self) -> None:
        if self.remaining:
            raise CodecError(f"{self._what}: {self.remaining} trailing bytes at offset {self._pos}")
