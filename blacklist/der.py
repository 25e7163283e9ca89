"""The few DER (ITU-T X.690 §10) encodings an X.509 certificate or CRL of the key hierarchy
needs, written and read. Not a general ASN.1 library: :mod:`blacklist.x509certs` builds its
own profile with these and parses what it receives with `cryptography` first (a strict DER
parser), then reads the parts that parser cannot hand over (the subject public key of a
suite it does not know, the private extensions) with :func:`read`.

Reading is strict where DER is: definite lengths in their shortest form, no trailing bytes
(:class:`DerError` otherwise), so one value has one encoding.
"""

from __future__ import annotations

import calendar
import datetime

from blacklist.errors import CodecError

BOOLEAN, INTEGER, BIT_STRING, OCTET_STRING, NULL, OID = 0x01, 0x02, 0x03, 0x04, 0x05, 0x06
UTF8_STRING, NUMERIC_STRING, UTC_TIME, GENERALIZED_TIME = 0x0C, 0x12, 0x17, 0x18
SEQUENCE, SET = 0x30, 0x31


class DerError(CodecError):
    """Bytes that are not the DER this module reads."""


def tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + content


def seq(*parts: bytes) -> bytes:
    return tlv(SEQUENCE, b"".join(parts))


def set_of(*parts: bytes) -> bytes:
    return tlv(SET, b"".join(sorted(parts)))  # X.690 §11.6: SET OF sorted by encoding


def integer(value: int) -> bytes:
    size = value.bit_length() // 8 + 1  # room for the sign bit
    return tlv(INTEGER, value.to_bytes(size, "big", signed=True))


def oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray()
    for arc in [40 * arcs[0] + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(chunk))
    return tlv(OID, bytes(out))


def octets(value: bytes) -> bytes:
    return tlv(OCTET_STRING, value)


def bits(value: bytes) -> bytes:
    """A BIT STRING of whole bytes (no unused bits), as keys and signatures are."""
    return tlv(BIT_STRING, b"\x00" + value)


def boolean(value: bool) -> bytes:
    return tlv(BOOLEAN, b"\xff" if value else b"\x00")


def utf8(text: str) -> bytes:
    return tlv(UTF8_STRING, text.encode("utf-8"))


def numeric(text: str) -> bytes:
    return tlv(NUMERIC_STRING, text.encode("ascii"))


def context(number: int, content: bytes, *, constructed: bool = True) -> bytes:
    """A context-specific tag [number]: EXPLICIT (constructed) or IMPLICIT primitive."""
    return tlv((0xA0 if constructed else 0x80) | number, content)


# RFC 5280 §4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050; both in whole seconds,
# "Z". The first second of year 1 and the last of 9999 bound what can be written.
_MIN_TIME = calendar.timegm((1, 1, 1, 0, 0, 0))
_MAX_TIME = calendar.timegm((9999, 12, 31, 23, 59, 59))
_UTC_YEARS = range(1950, 2050)
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def time_value(unix: int) -> bytes:
    if not _MIN_TIME <= unix <= _MAX_TIME:
        raise ValueError(f"time {unix} is outside the years 1..9999 X.509 can write")
    t = _EPOCH + datetime.timedelta(seconds=unix)
    if t.year in _UTC_YEARS:
        return tlv(UTC_TIME, t.strftime("%y%m%d%H%M%SZ").encode("ascii"))
    text = f"{t.year:04d}" + t.strftime("%m%d%H%M%SZ")
    return tlv(GENERALIZED_TIME, text.encode("ascii"))


def time_range() -> tuple[int, int]:
    """The unix seconds :func:`time_value` can write, inclusive."""
    return _MIN_TIME, _MAX_TIME


def read(data: bytes, pos: int = 0) -> tuple[int, bytes, int]:
    """The TLV at ``pos``: (tag, content, position after it). Raises DerError."""
    if pos + 2 > len(data):
        raise DerError(f"DER: truncated at byte {pos}")
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first < 0x80:
        n = first
    else:
        width = first & 0x7F
        if width == 0 or width > 4 or pos + width > len(data):
            raise DerError(f"DER: bad length form 0x{first:02x} at byte {pos - 1}")
        n = int.from_bytes(data[pos : pos + width], "big")
        if n < 0x80 or n.bit_length() <= 8 * (width - 1):
            raise DerError(f"DER: length {n} not in its shortest form at byte {pos - 1}")
        pos += width
    if pos + n > len(data):
        raise DerError(f"DER: {n} content bytes at byte {pos}, only {len(data) - pos} left")
    return tag, data[pos : pos + n], pos + n


def read_one(data: bytes, tag: int, what: str) -> bytes:
    """The content of ``data``, which must be exactly one TLV with ``tag``."""
    got, content, end = read(data)
    if got != tag or end != len(data):
        raise DerError(f"{what}: expected one element with tag 0x{tag:02x}, got 0x{got:02x}")
    return content


def elements(content: bytes) -> list[tuple[int, bytes, bytes]]:
    """The TLVs of a constructed value's content: (tag, content, whole encoding)."""
    out = []
    pos = 0
    while pos < len(content):
        tag, inner, end = read(content, pos)
        out.append((tag, inner, content[pos:end]))
        pos = end
    return out


def read_integer(content: bytes, what: str) -> int:
    if not content or (len(content) > 1 and content[0] == (0xFF if content[1] & 0x80 else 0)):
        raise DerError(f"{what}: integer not in its shortest form")
    return int.from_bytes(content, "big", signed=True)
