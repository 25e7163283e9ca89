"""SM2 signatures (GB/T 32918.2 / GM/T 0003.2) over SM3 (GB/T 32905), through Tongsuo.

The curve arithmetic is Tongsuo's (the ``tongsuopy`` binding, pinned in pyproject.toml);
this module only encodes keys and signatures and computes the standard's two hashes:

* ``Z = SM3(ENTL || ID || a || b || xG || yG || xA || yA)`` (GB/T 32918.2 §5.5): the
  signer's identity digest, where ID is the *distinguishing identifier* and ENTL its length
  in bits as two bytes. ``DEFAULT_DISTID`` is the one GM/T 0009 §10 fixes when none is
  agreed; Tongsuo (and ``openssl pkeyutl -pkeyopt distid:...``) uses it too.
* ``e = SM3(Z || M)``, the value the signature is over (§6.1 A1–A2).

Encodings, fixed width so that a key or a signature has exactly one form:

* private key: the 32-byte big-endian scalar d (1 <= d <= n-2);
* public key: the 65-byte uncompressed point ``04 || x || y`` (SEC 1 §2.3.3), checked to be
  on the curve when loaded;
* signature: ``r || s``, each 32 bytes big-endian (the pair (r, s) of §6.1 A7). X.509 and
  ``openssl`` carry it DER-encoded (GM/T 0009 §7.3); :func:`to_der` / :func:`from_der`
  convert.

With the default ID the signature goes through Tongsuo's public API (``EVP_DigestSign``,
which computes Z itself); with another ID Z is computed here and e is signed with
``EVP_PKEY_sign`` on the pinned binding's lib, the one path the public API lacks.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from tongsuopy.backends.tongsuo.backend import backend as _tongsuo
from tongsuopy.crypto import hashes as _hashes
from tongsuopy.crypto.asymciphers import ec as _ec
from tongsuopy.crypto.exceptions import InvalidSignature

DEFAULT_DISTID = b"1234567812345678"
# ENTL is the ID's length in bits as two bytes (GB/T 32918.2 §5.5): at most 8191 bytes.
MAX_DISTID = 8191
PRIVATE_LENGTH = 32
PUBLIC_LENGTH = 65
SIGNATURE_LENGTH = 64

# GB/T 32918.5 (GM/T 0003.5) recommended curve parameters, the inputs of Z.
P = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFF
A = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC
B = 0x28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93
N = 0xFFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123
GX = 0x32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7
GY = 0xBC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0
_CURVE_BYTES = b"".join(v.to_bytes(32, "big") for v in (A, B, GX, GY))


class Sm2Error(ValueError):
    """A key, identifier or signature that is not a valid SM2 one (the message says which)."""


def _sm3_hashlib(data: bytes) -> bytes:
    return hashlib.new("sm3", data).digest()


def _sm3_tongsuo(data: bytes) -> bytes:
    h = _hashes.Hash(_hashes.SM3())
    h.update(data)
    return bytes(h.finalize())


def _pick_sm3() -> Callable[[bytes], bytes]:
    """OpenSSL 3's SM3 through hashlib when the interpreter's OpenSSL has it (Debian's
    does), else Tongsuo's: the same function (the known-answer tests check both)."""
    try:
        hashlib.new("sm3")
    except ValueError:
        return _sm3_tongsuo
    return _sm3_hashlib


sm3: Callable[[bytes], bytes] = _pick_sm3()


def check_distid(distid: bytes) -> bytes:
    if not isinstance(distid, bytes) or not 1 <= len(distid) <= MAX_DISTID:
        raise Sm2Error(
            f"an SM2 distinguishing id is 1..{MAX_DISTID} bytes, got {len(distid)} bytes"
            if isinstance(distid, bytes)
            else f"an SM2 distinguishing id is bytes, got {distid!r:.40}"
        )
    return distid


def z_digest(public: bytes, distid: bytes = DEFAULT_DISTID) -> bytes:
    """Z of GB/T 32918.2 §5.5 for a 65-byte uncompressed public key."""
    check_distid(distid)
    point = _public_key(public).public_numbers()
    return sm3(
        (len(distid) * 8).to_bytes(2, "big")
        + distid
        + _CURVE_BYTES
        + point.x.to_bytes(32, "big")
        + point.y.to_bytes(32, "big")
    )


def generate_private() -> bytes:
    key = _ec.generate_private_key(_ec.SM2())
    return int(key.private_numbers().private_value).to_bytes(PRIVATE_LENGTH, "big")


@functools.lru_cache(maxsize=256)
def _private_key(private: bytes) -> Any:
    if len(private) != PRIVATE_LENGTH:
        raise Sm2Error(f"not a raw SM2 private key ({len(private)} bytes, want 32)")
    d = int.from_bytes(private, "big")
    # GB/T 32918.1 §6.1: d in [1, n-2] (n-1 has no inverse of 1+d, signing needs one).
    if not 1 <= d <= N - 2:
        raise Sm2Error("not an SM2 private key (the scalar is outside 1..n-2)")
    return _ec.derive_private_key(d, _ec.SM2())


@functools.lru_cache(maxsize=4096)
def _public_key(public: bytes) -> Any:
    if len(public) != PUBLIC_LENGTH or public[0] != 4:
        raise Sm2Error(
            f"not an uncompressed SM2 public key ({len(public)} bytes, want 65 starting 04)"
        )
    try:
        return _ec.EllipticCurvePublicKey.from_encoded_point(_ec.SM2(), public)
    except ValueError as exc:  # not on the curve, or the point at infinity
        raise Sm2Error(f"not a point on the SM2 curve: {exc}") from None


def check_public(public: bytes) -> None:
    """Sm2Error unless ``public`` is a 65-byte uncompressed point on the SM2 curve."""
    _public_key(public)


def public_from_private(private: bytes) -> bytes:
    n = _private_key(private).public_key().public_numbers()
    return bytes(b"\x04" + n.x.to_bytes(32, "big") + n.y.to_bytes(32, "big"))


def to_der(signature: bytes) -> bytes:
    """``r || s`` as the DER SEQUENCE of two INTEGERs (GM/T 0009 §7.3) openssl expects."""
    if len(signature) != SIGNATURE_LENGTH:
        raise Sm2Error(f"an SM2 signature is 64 bytes (r || s), got {len(signature)}")
    return bytes(
        encode_dss_signature(
            int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        )
    )


def from_der(der: bytes) -> bytes:
    """The DER form back to ``r || s``; Sm2Error if it is not one, or r or s is out of range."""
    try:
        r, s = decode_dss_signature(der)
    except ValueError as exc:
        raise Sm2Error(f"not a DER SM2 signature: {exc}") from None
    if not (1 <= r < N and 1 <= s < N):
        raise Sm2Error("an SM2 signature's r and s are in 1..n-1")
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def sign(private: bytes, message: bytes, distid: bytes = DEFAULT_DISTID) -> bytes:
    """The SM2 signature ``r || s`` of ``message`` by ``private`` with identifier ``distid``;
    Tongsuo draws the nonce k from its DRBG."""
    key = _private_key(private)
    if distid == DEFAULT_DISTID:
        der = key.sign(message, _ec.ECDSA(_hashes.SM3()))
    else:
        e = sm3(z_digest(public_from_private(private), distid) + message)
        der = _raw(key, e, None)
    return from_der(bytes(der))


def verify(public: bytes, message: bytes, signature: bytes, distid: bytes = DEFAULT_DISTID) -> bool:
    """Whether ``signature`` (``r || s``) is ``public``'s over ``message`` with ``distid``.
    False for a malformed key, signature or identifier: nothing here raises on input."""
    try:
        key = _public_key(public)
        check_distid(distid)
        der = to_der(signature)
    except Sm2Error:
        return False
    if distid == DEFAULT_DISTID:
        try:
            key.verify(der, message, _ec.ECDSA(_hashes.SM3()))
        except InvalidSignature:
            return False
        return True
    return bool(_raw(key, sm3(z_digest(public, distid) + message), der))


def _raw(key: Any, e: bytes, der: bytes | None) -> Any:
    """EVP_PKEY_sign (``der`` None) or EVP_PKEY_verify of the digest ``e`` itself: SM2's
    signing and verifying steps after e = SM3(Z || M) (GB/T 32918.2 §6.1 A3–A7, §7.1 B3–B7)."""
    lib, ffi = _tongsuo._lib, _tongsuo._ffi
    ctx = ffi.gc(lib.EVP_PKEY_CTX_new(key._evp_pkey, ffi.NULL), lib.EVP_PKEY_CTX_free)
    _tongsuo.openssl_assert(ctx != ffi.NULL)
    if der is None:
        _tongsuo.openssl_assert(lib.EVP_PKEY_sign_init(ctx) == 1)
        length = ffi.new("size_t *")
        _tongsuo.openssl_assert(lib.EVP_PKEY_sign(ctx, ffi.NULL, length, e, len(e)) == 1)
        buf = ffi.new("unsigned char[]", length[0])
        _tongsuo.openssl_assert(lib.EVP_PKEY_sign(ctx, buf, length, e, len(e)) == 1)
        return ffi.buffer(buf)[: length[0]]
    _tongsuo.openssl_assert(lib.EVP_PKEY_verify_init(ctx) == 1)
    ok = lib.EVP_PKEY_verify(ctx, der, len(der), e, len(e)) == 1
    _tongsuo._consume_errors()
    return ok
