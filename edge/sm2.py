"""SM2 signatures (GB/T 32918) over gmssl 3.2.2, hardened.

gmssl does the curve arithmetic; everything around it is done here, because its edges are unsafe
(see docs/sm-crypto notes): it draws nonces from ``random`` (we always pass k from ``secrets``), strips
the ``04`` point prefix with ``str.lstrip`` (we set a validated 128-hex X‖Y ourselves), and its verify
accepts out-of-range r, s and raises on junk (we check ranges and lengths first and return False on
anything odd). Z and e are computed with OpenSSL's SM3 through :mod:`edge.sm3`, and signatures are DER
``SEQUENCE{INTEGER r, INTEGER s}`` exactly as OpenSSL writes them, so the two interoperate byte for byte.
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from gmssl.sm2 import CryptSM2, default_ecc_table

from edge.errors import KeyFormatError, SignatureError
from edge.signing import DEFAULT_SM2_ID, key_id_for
from edge.sm3 import sm3

P = int(default_ecc_table["p"], 16)
N = int(default_ecc_table["n"], 16)
A = int(default_ecc_table["a"], 16)
B = int(default_ecc_table["b"], 16)
GX = int(default_ecc_table["g"][:64], 16)
GY = int(default_ecc_table["g"][64:], 16)

_OID_EC_PUBLIC_KEY = bytes.fromhex("06072a8648ce3d0201")
_OID_SM2 = bytes.fromhex("06082a811ccf5501822d")
_ALG_ID = b"\x30\x13" + _OID_EC_PUBLIC_KEY + _OID_SM2
MAX_ID_BYTES = 8191  # ENTL is a 16-bit count of bits
MAX_DER_SIG = 72


# ---------------------------------------------------------------------- minimal strict DER
def _der_len(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _tlv(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + _der_len(len(body)) + body


def _read_tlv(data: bytes, pos: int) -> tuple[int, bytes, int]:
    """One DER element at ``pos``: (tag, body, next position). Rejects non-minimal lengths."""
    if pos + 2 > len(data):
        raise ValueError("truncated DER")
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        nbytes = first & 0x7F
        if nbytes == 0 or nbytes > 2 or pos + nbytes > len(data):
            raise ValueError("bad DER length")
        length = int.from_bytes(data[pos:pos + nbytes], "big")
        if length < 0x80 or (nbytes == 2 and length < 0x100):
            raise ValueError("non-minimal DER length")
        pos += nbytes
    if pos + length > len(data):
        raise ValueError("truncated DER")
    return tag, data[pos:pos + length], pos + length


def _der_uint(body: bytes) -> int:
    if not body or body[0] & 0x80 or (len(body) > 1 and body[0] == 0 and not body[1] & 0x80):
        raise ValueError("DER INTEGER is negative or not minimal")
    return int.from_bytes(body, "big")


def encode_signature(r: int, s: int) -> bytes:
    def integer(v: int) -> bytes:
        return _tlv(0x02, v.to_bytes(v.bit_length() // 8 + 1, "big"))
    return _tlv(0x30, integer(r) + integer(s))


def decode_signature(sig: bytes) -> tuple[int, int]:
    """Strict DER decode; raises ``SignatureError`` for anything but a minimal SEQUENCE of two INTEGERs."""
    try:
        if not isinstance(sig, bytes) or len(sig) > MAX_DER_SIG:
            raise ValueError("signature too long")
        tag, body, end = _read_tlv(sig, 0)
        if tag != 0x30 or end != len(sig):
            raise ValueError("not a single DER SEQUENCE")
        t1, rb, p = _read_tlv(body, 0)
        t2, sb, p = _read_tlv(body, p)
        if t1 != 0x02 or t2 != 0x02 or p != len(body):
            raise ValueError("SEQUENCE must hold exactly two INTEGERs")
        return _der_uint(rb), _der_uint(sb)
    except ValueError as exc:
        raise SignatureError(f"malformed SM2 signature: {exc}") from exc


# ---------------------------------------------------------------------- curve helpers
def _on_curve(x: int, y: int) -> bool:
    return 0 <= x < P and 0 <= y < P and (y * y - (x * x * x + A * x + B)) % P == 0


def _point_hex(x: int, y: int) -> str:
    return f"{x:064x}{y:064x}"


def _z(x: int, y: int, uid: bytes) -> bytes:
    if len(uid) > MAX_ID_BYTES:
        raise SignatureError("SM2 user ID too long")
    entl = (len(uid) * 8).to_bytes(2, "big")
    return sm3(entl, uid, *(v.to_bytes(32, "big") for v in (A, B, GX, GY, x, y)))


def digest_e(message: bytes, x: int, y: int, uid: bytes = DEFAULT_SM2_ID) -> bytes:
    """e = SM3(Z ‖ M), the value SM2 actually signs."""
    return sm3(_z(x, y, uid), message)


# ---------------------------------------------------------------------- keys
@dataclass(frozen=True, slots=True)
class Sm2PublicKey:
    x: int
    y: int

    def __post_init__(self) -> None:
        if not _on_curve(self.x, self.y):
            raise KeyFormatError("SM2 public key is not a point on the curve")

    @property
    def point(self) -> bytes:
        return b"\x04" + self.x.to_bytes(32, "big") + self.y.to_bytes(32, "big")

    def spki_der(self) -> bytes:
        return _tlv(0x30, _ALG_ID + _tlv(0x03, b"\x00" + self.point))

    def pem(self) -> str:
        return _pem("PUBLIC KEY", self.spki_der())

    @classmethod
    def from_point(cls, point: bytes) -> Sm2PublicKey:
        if len(point) != 65 or point[0] != 0x04:
            raise KeyFormatError("SM2 public key must be an uncompressed point (65 bytes starting 04)")
        return cls(int.from_bytes(point[1:33], "big"), int.from_bytes(point[33:], "big"))

    @classmethod
    def from_spki_der(cls, der: bytes) -> Sm2PublicKey:
        try:
            tag, body, end = _read_tlv(der, 0)
            if tag != 0x30 or end != len(der):
                raise ValueError("not a SEQUENCE")
            t_alg, alg, p = _read_tlv(body, 0)
            t_bits, bits, p = _read_tlv(body, p)
            if t_alg != 0x30 or t_bits != 0x03 or p != len(body):
                raise ValueError("not a SubjectPublicKeyInfo")
            _check_alg(alg)
            if not bits or bits[0] != 0:
                raise ValueError("BIT STRING has unused bits")
        except ValueError as exc:
            raise KeyFormatError(f"not an SM2 SubjectPublicKeyInfo: {exc}") from exc
        return cls.from_point(bits[1:])


def _check_alg(alg: bytes) -> None:
    t1, _oid1, p = _read_tlv(alg, 0)
    if alg[:p] != _OID_EC_PUBLIC_KEY or t1 != 0x06:
        raise ValueError("algorithm is not id-ecPublicKey")
    if alg[p:] != _OID_SM2:
        raise ValueError("curve is not SM2 (1.2.156.10197.1.301)")


def _pem(label: str, der: bytes) -> str:
    b64 = base64.b64encode(der).decode("ascii")
    lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
    return f"-----BEGIN {label}-----\n" + "\n".join(lines) + f"\n-----END {label}-----\n"


_PEM_RE = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----\s*([A-Za-z0-9+/=\s]+?)\s*-----END \1-----")


def _unpem(text: str, label: str) -> bytes:
    m = _PEM_RE.search(text)
    if m is None or m.group(1) != label:
        raise KeyFormatError(f"expected a PEM block '-----BEGIN {label}-----'")
    try:
        return base64.b64decode("".join(m.group(2).split()), validate=True)
    except ValueError as exc:
        raise KeyFormatError(f"PEM body is not base64: {exc}") from exc


class Sm2Verifier:
    """Strict verification under one public key (implements :class:`edge.signing.Verifier`)."""

    def __init__(self, public_key: Sm2PublicKey) -> None:
        self.public_key = public_key
        self._key_id = key_id_for(public_key.spki_der())
        self._crypt = CryptSM2(private_key=None, public_key="")
        # Set directly: gmssl's constructor strips "04" with lstrip and would eat leading 0/4 digits of X.
        self._crypt.public_key = _point_hex(public_key.x, public_key.y)

    @property
    def key_id(self) -> str:
        return self._key_id

    def public_key_pem(self) -> str:
        return self.public_key.pem()

    def verify(self, message: bytes, signature: bytes, uid: bytes = DEFAULT_SM2_ID) -> bool:
        """True only for a valid DER signature with 1 <= r, s < n; never raises."""
        try:
            if not isinstance(message, bytes | bytearray) or not isinstance(signature, bytes):
                return False
            r, s = decode_signature(signature)
            if not (1 <= r < N and 1 <= s < N) or (r + s) % N == 0:
                return False
            e = digest_e(bytes(message), self.public_key.x, self.public_key.y, uid)
            return bool(self._crypt.verify(f"{r:064x}{s:064x}", e))
        except Exception:
            return False


class Sm2Signer(Sm2Verifier):
    """Signs with one private key (implements :class:`edge.signing.Signer`)."""

    def __init__(self, d: int, randbelow: Callable[[int], int] = secrets.randbelow) -> None:
        if not 1 <= d <= N - 2:
            raise KeyFormatError("SM2 private key must be in 1..n-2")
        crypt = CryptSM2(private_key=f"{d:064x}", public_key="")
        xy = crypt._kg(d, default_ecc_table["g"])
        super().__init__(Sm2PublicKey(int(xy[:64], 16), int(xy[64:], 16)))
        self._d = d
        self._crypt.private_key = f"{d:064x}"
        self._randbelow = randbelow

    def __repr__(self) -> str:  # never show the private key
        return f"Sm2Signer(key_id={self.key_id!r})"

    def sign(self, message: bytes, uid: bytes = DEFAULT_SM2_ID) -> bytes:
        e = digest_e(message, self.public_key.x, self.public_key.y, uid)
        for _ in range(64):
            k = self._randbelow(N - 1) + 1
            out = self._sign_with_k(e, k)
            if out is not None:
                return out
        raise SignatureError("SM2 signing failed repeatedly (random source broken?)")

    def _sign_with_k(self, e: bytes, k: int) -> bytes | None:
        """Deterministic given k: for known-answer tests only; real signing draws k from ``secrets``."""
        hexsig = self._crypt.sign(e, f"{k:064x}")
        if hexsig is None:
            return None
        r, s = int(hexsig[:64], 16), int(hexsig[64:], 16)
        if not (1 <= r < N and 1 <= s < N):
            return None
        return encode_signature(r, s)

    def private_key_pem(self) -> str:
        """PKCS#8 ``PRIVATE KEY`` as OpenSSL writes it (id-ecPublicKey, curve SM2, public key included)."""
        ec_key = _tlv(0x30, b"\x02\x01\x01" + _tlv(0x04, self._d.to_bytes(32, "big"))
                      + _tlv(0xA1, _tlv(0x03, b"\x00" + self.public_key.point)))
        return _pem("PRIVATE KEY", _tlv(0x30, b"\x02\x01\x00" + _ALG_ID + _tlv(0x04, ec_key)))


def generate_signer(randbelow: Callable[[int], int] = secrets.randbelow) -> Sm2Signer:
    return Sm2Signer(randbelow(N - 2) + 1, randbelow)


def load_private_key_pem(text: str) -> Sm2Signer:
    """Read an unencrypted PKCS#8 SM2 key (ours or OpenSSL's)."""
    der = _unpem(text, "PRIVATE KEY")
    try:
        tag, body, end = _read_tlv(der, 0)
        if tag != 0x30 or end != len(der):
            raise ValueError("not a SEQUENCE")
        t_ver, ver, p = _read_tlv(body, 0)
        t_alg, alg, p = _read_tlv(body, p)
        t_oct, inner, p = _read_tlv(body, p)
        if t_ver != 0x02 or ver != b"\x00" or t_alg != 0x30 or t_oct != 0x04:
            raise ValueError("not a PKCS#8 PrivateKeyInfo v0")
        _check_alg(alg)
        tag, ec, end = _read_tlv(inner, 0)
        if tag != 0x30 or end != len(inner):
            raise ValueError("ECPrivateKey is not a SEQUENCE")
        t_v, v, q = _read_tlv(ec, 0)
        t_d, dbytes, q = _read_tlv(ec, q)
        if t_v != 0x02 or v != b"\x01" or t_d != 0x04 or len(dbytes) != 32:
            raise ValueError("ECPrivateKey fields are not as expected")
        pub: bytes | None = None
        while q < len(ec):
            t, val, q = _read_tlv(ec, q)
            if t == 0xA0 and val != _OID_SM2:
                raise ValueError("ECPrivateKey parameters name another curve")
            if t == 0xA1:
                t_bits, bits, _ = _read_tlv(val, 0)
                if t_bits != 0x03 or not bits or bits[0] != 0:
                    raise ValueError("bad public key BIT STRING")
                pub = bits[1:]
    except ValueError as exc:
        raise KeyFormatError(f"not an SM2 PKCS#8 private key: {exc}") from exc
    signer = Sm2Signer(int.from_bytes(dbytes, "big"))
    if pub is not None and pub != signer.public_key.point:
        raise KeyFormatError("the public key stored with the private key does not match it")
    return signer


def load_public_key_pem(text: str) -> Sm2Verifier:
    return Sm2Verifier(Sm2PublicKey.from_spki_der(_unpem(text, "PUBLIC KEY")))
