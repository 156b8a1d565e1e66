"""SM2 signatures (GB/T 32918.2) with gmssl 3.2.2 doing the curve arithmetic, hardened around it.

gmssl's maths is right but its edges are not (the list below), so this module keeps
gmssl to two jobs, scalar multiplication and the sign/verify equations on a precomputed ``e``, and
does everything else itself:

* the nonce is always ``secrets.randbelow(n - 1) + 1`` (gmssl would draw it from ``random``);
* gmssl's ``public_key`` attribute is set to a validated 128-hex ``X‖Y`` (its constructor strips the
  ``04`` prefix with ``str.lstrip`` and would eat leading ``0``/``4`` digits of X);
* Z = SM3(ENTL‖ID‖a‖b‖Gx‖Gy‖Px‖Py) and e = SM3(Z‖M) use OpenSSL's SM3 (:mod:`edge.sm3`), with the ID
  passed explicitly because OpenSSL's default is empty while GM/T 0009's is ``1234567812345678``;
* signatures are strict DER ``SEQUENCE{INTEGER r, INTEGER s}`` as OpenSSL writes them, and verification
  checks ranges and encodings first and never raises (gmssl accepts ``(r, s + n)`` and raises on junk);
* keys are read and written as PKCS#8 / SubjectPublicKeyInfo PEM, byte-identical to OpenSSL 3.

Limitation: gmssl's scalar multiplication is plain Python double-and-add, not constant time, so its
signing time reveals the nonce's bit length. It is therefore the fallback: :func:`make_signer` and
:func:`make_verifier` pick OpenSSL's libcrypto (:mod:`edge.sm2_libcrypto`) when it loads and passes
:func:`self_test`, and this module otherwise.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Final, Protocol, cast

from gmssl.sm2 import CryptSM2, default_ecc_table

from edge.errors import BackendUnavailable, KeyFormatError, SignatureError
from edge.signing import DEFAULT_SM2_ID, Signer, Verifier, key_id_for
from edge.sm3 import sm3

# ---------------------------------------------------------------------------------------- curve
# sm2p256v1 (GB/T 32918.5), taken from gmssl's own table so both sides provably use one curve.
P: Final = int(default_ecc_table["p"], 16)
N: Final = int(default_ecc_table["n"], 16)
A: Final = int(default_ecc_table["a"], 16)
B: Final = int(default_ecc_table["b"], 16)
GX: Final = int(default_ecc_table["g"][:64], 16)
GY: Final = int(default_ecc_table["g"][64:], 16)
_G_HEX: Final[str] = default_ecc_table["g"]

MAX_ID_BYTES: Final = 8191  # ENTL is the ID's length in *bits* as 16 bits
_MAX_SIGNATURE_DER: Final = 72  # 30 46 (02 21 00‖r) (02 21 00‖s)
_MAX_PEM_CHARS: Final = 16 * 1024  # keys are ~250 chars; PEM can arrive from the network (key topic)
_SIGN_ATTEMPTS: Final = 64  # a retry is needed with probability ~2^-255; 64 failures mean a broken RNG


class _GmsslSm2(Protocol):
    """The slice of ``gmssl.sm2.CryptSM2`` we rely on, typed (gmssl ships no annotations)."""

    private_key: str
    public_key: str

    def sign(self, data: bytes, K: str) -> str | None: ...

    def verify(self, Sign: str, data: bytes) -> bool | int: ...

    def _kg(self, k: int, Point: str) -> str | None: ...


def _gmssl(private_hex: str = "", public_hex: str = "") -> _GmsslSm2:
    """A CryptSM2 whose ``public_key`` bypasses the constructor's ``lstrip("04")``."""
    crypt = cast(_GmsslSm2, CryptSM2(private_key=private_hex, public_key=""))
    crypt.public_key = public_hex
    return crypt


_BASE: Final = _gmssl()  # stateless for ``_kg``; shared for scalar multiplications of G


def _on_curve(x: int, y: int) -> bool:
    return 0 <= x < P and 0 <= y < P and (y * y - (x * x * x + A * x + B)) % P == 0


def _multiply_g(d: int) -> tuple[int, int]:
    """d·G via gmssl, checked: a wrong public key would make every signature unverifiable."""
    xy = _BASE._kg(d, _G_HEX)
    if not isinstance(xy, str) or len(xy) != 128:
        raise KeyFormatError("scalar multiplication failed (point at infinity?)")
    x, y = int(xy[:64], 16), int(xy[64:], 16)
    if not _on_curve(x, y):
        raise KeyFormatError("scalar multiplication produced a point off the curve")
    return x, y


# ------------------------------------------------------------------------------------ strict DER
# Only what SM2 keys and signatures need: single-byte tags, definite lengths below 64 KiB, minimal
# encodings. Anything else is rejected, so one value has exactly one accepted encoding.
_INTEGER, _BIT_STRING, _OCTET_STRING, _NULL, _OID, _SEQUENCE = 0x02, 0x03, 0x04, 0x05, 0x06, 0x30
_CTX0, _CTX1, _CTX1_PRIMITIVE = 0xA0, 0xA1, 0x81

_OID_EC_PUBLIC_KEY: Final = bytes.fromhex("2a8648ce3d0201")  # 1.2.840.10045.2.1
_OID_SM2: Final = bytes.fromhex("2a811ccf5501822d")  # 1.2.156.10197.1.301


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _tlv(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + _der_length(len(body)) + body


def _der_uint(value: int) -> bytes:
    """A non-negative INTEGER: minimal big-endian, with a 00 prefix when the top bit is set."""
    return _tlv(_INTEGER, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def _read_tlv(data: bytes, pos: int) -> tuple[int, bytes, int]:
    """The element at ``pos`` as (tag, body, position after it); ValueError unless strict DER."""
    if pos + 2 > len(data):
        raise ValueError("truncated DER element")
    tag, first = data[pos], data[pos + 1]
    if tag & 0x1F == 0x1F:
        raise ValueError("multi-byte DER tags are not used here")
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 2:  # 0 = indefinite (BER only); >2 would mean >= 64 KiB
            raise ValueError("unsupported DER length form")
        if pos + count > len(data):
            raise ValueError("truncated DER length")
        length = int.from_bytes(data[pos : pos + count], "big")
        if length < 0x80 or length.bit_length() <= 8 * (count - 1):
            raise ValueError("DER length is not minimal")
        pos += count
    if pos + length > len(data):
        raise ValueError("truncated DER element")
    return tag, data[pos : pos + length], pos + length


def _read_all(data: bytes) -> list[tuple[int, bytes]]:
    """Every element of a constructed body, in order; the body must be fully consumed."""
    out: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(data):
        tag, body, pos = _read_tlv(data, pos)
        out.append((tag, body))
    return out


def _read_one(data: bytes, tag: int, what: str) -> bytes:
    """The body of the single element that makes up ``data``, which must carry ``tag``."""
    got, body, end = _read_tlv(data, 0)
    if got != tag or end != len(data):
        raise ValueError(f"{what} is not a single DER element with tag {tag:#04x}")
    return body


def _parse_uint(body: bytes) -> int:
    if not body:
        raise ValueError("empty INTEGER")
    if body[0] & 0x80:
        raise ValueError("negative INTEGER")
    if len(body) > 1 and body[0] == 0 and not body[1] & 0x80:
        raise ValueError("INTEGER is not minimally encoded")
    return int.from_bytes(body, "big")


def _parse_bit_string_octets(body: bytes) -> bytes:
    if not body or body[0] != 0:
        raise ValueError("BIT STRING must have 0 unused bits")
    return body[1:]


# ------------------------------------------------------------------------------------ signatures
def encode_signature(r: int, s: int) -> bytes:
    """DER ``SEQUENCE{INTEGER r, INTEGER s}``, the form OpenSSL writes and reads."""
    if not (1 <= r < N and 1 <= s < N):
        raise SignatureError("SM2 signature components must be in 1..n-1")
    return _tlv(_SEQUENCE, _der_uint(r) + _der_uint(s))


def decode_signature(signature: bytes) -> tuple[int, int]:
    """(r, s) from strict DER with both in 1..n-1; SignatureError for anything else.

    Strictness makes signatures non-malleable: a verifier that also took BER, raw r‖s or (r, s + n)
    would accept several byte strings for one signature, and OpenSSL accepts only this one.
    """
    if not isinstance(signature, bytes | bytearray):
        raise SignatureError("SM2 signature must be bytes")
    data = bytes(signature)
    if not 8 <= len(data) <= _MAX_SIGNATURE_DER:
        raise SignatureError(f"SM2 DER signature must be 8..{_MAX_SIGNATURE_DER} bytes, got {len(data)}")
    try:
        fields = _read_all(_read_one(data, _SEQUENCE, "signature"))
        if len(fields) != 2 or any(tag != _INTEGER for tag, _ in fields):
            raise ValueError("SEQUENCE must hold exactly two INTEGERs")
        r, s = _parse_uint(fields[0][1]), _parse_uint(fields[1][1])
    except ValueError as exc:
        raise SignatureError(f"malformed SM2 signature: {exc}") from exc
    if not (1 <= r < N and 1 <= s < N):
        raise SignatureError("SM2 signature component out of range 1..n-1")
    return r, s


# --------------------------------------------------------------------------------------- digests
def _check_user_id(user_id: bytes) -> bytes:
    if not isinstance(user_id, bytes):
        raise TypeError("SM2 user ID must be bytes")
    if len(user_id) > MAX_ID_BYTES:
        raise ValueError(f"SM2 user ID longer than {MAX_ID_BYTES} bytes")
    return user_id


def z_digest(public_key: Sm2PublicKey, user_id: bytes = DEFAULT_SM2_ID) -> bytes:
    """Z = SM3(ENTL‖ID‖a‖b‖Gx‖Gy‖Px‖Py): binds signer identity and curve into every signature."""
    uid = _check_user_id(user_id)
    coords = (A, B, GX, GY, public_key.x, public_key.y)
    return sm3((len(uid) * 8).to_bytes(2, "big"), uid, *(c.to_bytes(32, "big") for c in coords))


def message_digest(public_key: Sm2PublicKey, message: bytes, user_id: bytes = DEFAULT_SM2_ID) -> bytes:
    """e = SM3(Z‖M), the 32 bytes the SM2 equations actually sign."""
    return sm3(z_digest(public_key, user_id), message)


# ------------------------------------------------------------------------------------------- PEM
_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]{1,40})-----(.*?)-----END \1-----", re.DOTALL)


def _pem(label: str, der: bytes) -> str:
    """PEM exactly as OpenSSL writes it: 64-column base64, LF line ends, final newline."""
    b64 = base64.b64encode(der).decode("ascii")
    lines = "".join(b64[i : i + 64] + "\n" for i in range(0, len(b64), 64))
    return f"-----BEGIN {label}-----\n{lines}-----END {label}-----\n"


def _unpem(text: str | bytes, labels: tuple[str, ...]) -> tuple[str, bytes]:
    """(label, DER) of the first block whose label is in ``labels``; text around blocks is ignored."""
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode("ascii")
        except UnicodeDecodeError as exc:
            raise KeyFormatError("PEM must be ASCII") from exc
    if not isinstance(text, str):
        raise KeyFormatError("PEM must be str or bytes")
    if len(text) > _MAX_PEM_CHARS:
        raise KeyFormatError(f"PEM text longer than {_MAX_PEM_CHARS} characters")
    seen: list[str] = []
    for m in _PEM_BLOCK.finditer(text):
        label, body = m.group(1), m.group(2)
        if label not in labels:
            seen.append(label)
            continue
        if ":" in body:
            raise KeyFormatError("PEM headers (e.g. legacy encryption) are not supported")
        b64 = "".join(body.split())
        try:
            der = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise KeyFormatError(f"PEM body is not base64: {exc}") from exc
        if base64.b64encode(der).decode("ascii") != b64:
            raise KeyFormatError("PEM body is not canonical base64")
        return label, der
    if "ENCRYPTED PRIVATE KEY" in seen:
        raise KeyFormatError("encrypted private keys are not supported; decrypt with `openssl pkey` first")
    found = f" (found: {', '.join(seen)})" if seen else ""
    raise KeyFormatError(f"no PEM block labelled {' or '.join(labels)}{found}")


# ------------------------------------------------------------------------------------------- keys
def _check_algorithm(alg: bytes) -> None:
    """AlgorithmIdentifier for an SM2 key: id-ecPublicKey + namedCurve SM2, or the SM2 OID itself.

    OpenSSL 3 writes the former; some toolkits write 1.2.156.10197.1.301 as the algorithm, with the
    parameters absent, NULL or repeating the curve.
    """
    fields = _read_all(alg)
    if not fields or fields[0][0] != _OID:
        raise ValueError("AlgorithmIdentifier has no OID")
    oid, params = fields[0][1], fields[1:]
    if oid == _OID_EC_PUBLIC_KEY:
        if params == [(_OID, _OID_SM2)]:
            return
        if len(params) == 1 and params[0][0] == _SEQUENCE:
            raise ValueError("explicit curve parameters are not supported; use the named curve SM2")
        raise ValueError("EC key is not on the named curve SM2 (1.2.156.10197.1.301)")
    if oid == _OID_SM2:
        if params in ([], [(_NULL, b"")], [(_OID, _OID_SM2)]):
            return
        raise ValueError("unexpected parameters for the SM2 algorithm OID")
    raise ValueError("key algorithm is neither id-ecPublicKey nor SM2")


_ALGORITHM_ID: Final = _tlv(_SEQUENCE, _tlv(_OID, _OID_EC_PUBLIC_KEY) + _tlv(_OID, _OID_SM2))


@dataclass(frozen=True, slots=True)
class Sm2PublicKey:
    """A validated point on sm2p256v1 (affine, so never the point at infinity; cofactor 1)."""

    x: int
    y: int

    def __post_init__(self) -> None:
        if not (isinstance(self.x, int) and isinstance(self.y, int)) or not _on_curve(self.x, self.y):
            raise KeyFormatError("SM2 public key is not a point on the curve")

    @classmethod
    def from_point(cls, point: bytes) -> Sm2PublicKey:
        """From SEC 1 point bytes: uncompressed ``04‖X‖Y`` or compressed ``02/03‖X``."""
        if not isinstance(point, bytes | bytearray):
            raise KeyFormatError("SM2 point must be bytes")
        if len(point) == 65 and point[0] == 0x04:
            return cls(int.from_bytes(point[1:33], "big"), int.from_bytes(point[33:], "big"))
        if len(point) == 33 and point[0] in (0x02, 0x03):
            x = int.from_bytes(point[1:], "big")
            if x >= P:
                raise KeyFormatError("SM2 compressed point: X out of range")
            rhs = (x * x * x + A * x + B) % P
            y = pow(rhs, (P + 1) // 4, P)  # P ≡ 3 (mod 4): the square root, if one exists
            if y * y % P != rhs:
                raise KeyFormatError("SM2 compressed point: X is not on the curve")
            if y & 1 != point[0] & 1:
                y = P - y
            return cls(x, y)
        raise KeyFormatError("SM2 public key must be a 65-byte uncompressed or 33-byte compressed point")

    @classmethod
    def from_spki_der(cls, der: bytes) -> Sm2PublicKey:
        """From DER SubjectPublicKeyInfo (OpenSSL's ``PUBLIC KEY``)."""
        try:
            if not isinstance(der, bytes | bytearray):
                raise TypeError("DER must be bytes")
            fields = _read_all(_read_one(bytes(der), _SEQUENCE, "SubjectPublicKeyInfo"))
            if [tag for tag, _ in fields] != [_SEQUENCE, _BIT_STRING]:
                raise ValueError("SubjectPublicKeyInfo must be SEQUENCE{AlgorithmIdentifier, BIT STRING}")
            _check_algorithm(fields[0][1])
            point = _parse_bit_string_octets(fields[1][1])
        except (ValueError, TypeError) as exc:
            raise KeyFormatError(f"not an SM2 public key: {exc}") from exc
        return cls.from_point(point)

    @classmethod
    def from_pem(cls, text: str | bytes) -> Sm2PublicKey:
        return cls.from_spki_der(_unpem(text, ("PUBLIC KEY",))[1])

    @property
    def point(self) -> bytes:
        """Uncompressed ``04‖X‖Y``."""
        return b"\x04" + self.x.to_bytes(32, "big") + self.y.to_bytes(32, "big")

    def spki_der(self) -> bytes:
        """Canonical SPKI (id-ecPublicKey, curve SM2, uncompressed): the input to :func:`key_id_for`."""
        return _tlv(_SEQUENCE, _ALGORITHM_ID + _tlv(_BIT_STRING, b"\x00" + self.point))

    def pem(self) -> str:
        return _pem("PUBLIC KEY", self.spki_der())

    @property
    def key_id(self) -> str:
        return key_id_for(self.spki_der())


def _parse_ec_private_key(der: bytes, *, require_curve: bool) -> tuple[int, bytes | None]:
    """(d, embedded public point or None) from RFC 5915 ECPrivateKey."""
    fields = _read_all(_read_one(der, _SEQUENCE, "ECPrivateKey"))
    if len(fields) < 2 or fields[0] != (_INTEGER, b"\x01") or fields[1][0] != _OCTET_STRING:
        raise ValueError("ECPrivateKey must start with version 1 and the private key OCTET STRING")
    d_bytes = fields[1][1]
    if not 1 <= len(d_bytes) <= 32:  # RFC 5915 says exactly 32; tolerate encoders that strip zeros
        raise ValueError("private key must be 1..32 bytes")
    rest = fields[2:]
    curve_named = False
    if rest and rest[0][0] == _CTX0:
        if rest[0][1] != _tlv(_OID, _OID_SM2):
            raise ValueError("ECPrivateKey parameters name a curve other than SM2")
        curve_named, rest = True, rest[1:]
    point: bytes | None = None
    if rest and rest[0][0] == _CTX1:
        point = _parse_bit_string_octets(_read_one(rest[0][1], _BIT_STRING, "ECPrivateKey publicKey"))
        rest = rest[1:]
    if rest:
        raise ValueError("unexpected fields in ECPrivateKey")
    if require_curve and not curve_named:
        raise ValueError("EC PRIVATE KEY does not name its curve")
    return int.from_bytes(d_bytes, "big"), point


@dataclass(frozen=True, slots=True)
class Sm2PrivateKey:
    """A private scalar d in 1..n-2 (SM2 needs (1 + d) invertible mod n) and its public key."""

    d: int = field(repr=False)
    public_key: Sm2PublicKey = field(init=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.d, int) or not 1 <= self.d <= N - 2:
            raise KeyFormatError("SM2 private key must be an integer in 1..n-2")
        object.__setattr__(self, "public_key", Sm2PublicKey(*_multiply_g(self.d)))

    def __repr__(self) -> str:  # the scalar must never reach a log line
        return f"Sm2PrivateKey(key_id={self.public_key.key_id!r})"

    @classmethod
    def from_bytes(cls, raw: bytes) -> Sm2PrivateKey:
        """From the 32-byte big-endian scalar."""
        if not isinstance(raw, bytes | bytearray) or len(raw) != 32:
            raise KeyFormatError("SM2 private key must be 32 bytes")
        return cls(int.from_bytes(raw, "big"))

    @classmethod
    def from_pkcs8_der(cls, der: bytes) -> Sm2PrivateKey:
        """From DER PKCS#8 PrivateKeyInfo (what ``openssl genpkey`` writes)."""
        try:
            if not isinstance(der, bytes | bytearray):
                raise TypeError("DER must be bytes")
            fields = _read_all(_read_one(bytes(der), _SEQUENCE, "PrivateKeyInfo"))
            if len(fields) < 3 or [tag for tag, _ in fields[:3]] != [_INTEGER, _SEQUENCE, _OCTET_STRING]:
                raise ValueError("PrivateKeyInfo must be SEQUENCE{version, AlgorithmIdentifier, OCTET STRING, ...}")
            version = _parse_uint(fields[0][1])
            if version not in (0, 1):
                raise ValueError(f"unsupported PKCS#8 version {version}")
            _check_algorithm(fields[1][1])
            d, point = _parse_ec_private_key(fields[2][1], require_curve=False)
            extra = fields[3:]
            if extra and extra[0][0] == _CTX0:  # attributes: carry nothing we need
                extra = extra[1:]
            if extra and extra[0][0] == _CTX1_PRIMITIVE and version == 1:  # OneAsymmetricKey publicKey
                outer = _parse_bit_string_octets(extra[0][1])
                if point is not None and outer != point:
                    raise ValueError("the two embedded public keys differ")
                point, extra = outer, extra[1:]
            if extra:
                raise ValueError("unexpected fields in PrivateKeyInfo")
        except (ValueError, TypeError) as exc:
            raise KeyFormatError(f"not an SM2 PKCS#8 private key: {exc}") from exc
        return cls._checked(d, point)

    @classmethod
    def from_pem(cls, text: str | bytes) -> Sm2PrivateKey:
        """From ``PRIVATE KEY`` (PKCS#8) or ``EC PRIVATE KEY`` (SEC 1, must name curve SM2) PEM."""
        label, der = _unpem(text, ("PRIVATE KEY", "EC PRIVATE KEY"))
        if label == "PRIVATE KEY":
            return cls.from_pkcs8_der(der)
        try:
            d, point = _parse_ec_private_key(der, require_curve=True)
        except ValueError as exc:
            raise KeyFormatError(f"not an SM2 EC private key: {exc}") from exc
        return cls._checked(d, point)

    @classmethod
    def _checked(cls, d: int, point: bytes | None) -> Sm2PrivateKey:
        """A stored public key that differs from d·G means a corrupt or tampered file: refuse it."""
        key = cls(d)
        if point is not None and Sm2PublicKey.from_point(point) != key.public_key:
            raise KeyFormatError("the public key stored with the private key does not match it")
        return key

    def pkcs8_der(self) -> bytes:
        """PKCS#8 v0 as OpenSSL 3 writes it: id-ecPublicKey/SM2, ECPrivateKey v1 with [1] publicKey."""
        ec_private_key = _tlv(
            _SEQUENCE,
            _der_uint(1)
            + _tlv(_OCTET_STRING, self.d.to_bytes(32, "big"))
            + _tlv(_CTX1, _tlv(_BIT_STRING, b"\x00" + self.public_key.point)),
        )
        return _tlv(_SEQUENCE, _der_uint(0) + _ALGORITHM_ID + _tlv(_OCTET_STRING, ec_private_key))

    def pem(self) -> str:
        return _pem("PRIVATE KEY", self.pkcs8_der())


def generate_private_key(randbelow: Callable[[int], int] = secrets.randbelow) -> Sm2PrivateKey:
    """A fresh key with d uniform in 1..n-2; ``randbelow`` is replaceable only for tests."""
    return Sm2PrivateKey(randbelow(N - 2) + 1)


# ------------------------------------------------------------------------------ signer / verifier
def _as_bytes(value: object) -> bytes | None:
    return bytes(value) if isinstance(value, bytes | bytearray | memoryview) else None


class GmsslSm2Verifier:
    """Strict SM2 verification under one public key and user ID (an :class:`edge.signing.Verifier`).

    Named for its backend so a faster one (e.g. libcrypto) can sit beside it behind the same protocol.
    """

    __slots__ = ("_crypt", "_key_id", "_pem", "_public_key", "_user_id", "_z")

    def __init__(self, public_key: Sm2PublicKey, user_id: bytes = DEFAULT_SM2_ID) -> None:
        if not isinstance(public_key, Sm2PublicKey):
            raise TypeError("public_key must be an Sm2PublicKey")
        self._public_key = public_key
        self._user_id = _check_user_id(user_id)
        self._z = z_digest(public_key, user_id)  # Z is per key and ID: compute it once
        self._key_id = public_key.key_id
        self._pem = public_key.pem()
        self._crypt = _gmssl(public_hex=f"{public_key.x:064x}{public_key.y:064x}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(key_id={self._key_id!r})"

    @property
    def public_key(self) -> Sm2PublicKey:
        return self._public_key

    @property
    def user_id(self) -> bytes:
        return self._user_id

    @property
    def key_id(self) -> str:
        return self._key_id

    def public_key_pem(self) -> str:
        return self._pem

    def digest(self, message: bytes) -> bytes:
        """e = SM3(Z‖M) for this key and ID."""
        return sm3(self._z, message)

    def verify(self, message: bytes, signature: bytes) -> bool:
        """True only for a strict-DER signature with 1 <= r, s < n that verifies; never raises."""
        try:
            msg, sig = _as_bytes(message), _as_bytes(signature)
            if msg is None or sig is None:
                return False
            r, s = decode_signature(sig)
            if (r + s) % N == 0:  # t = 0: the equation degenerates; GB/T 32918.2 step B5 rejects it
                return False
            return self._crypt.verify(f"{r:064x}{s:064x}", self.digest(msg)) is True
        except Exception:  # a verifier answers "no" to junk; it is fed untrusted bytes
            return False


class GmsslSm2Signer(GmsslSm2Verifier):
    """SM2 signing with a fresh ``secrets`` nonce per signature (an :class:`edge.signing.Signer`)."""

    __slots__ = ("_private_key",)

    def __init__(self, private_key: Sm2PrivateKey, user_id: bytes = DEFAULT_SM2_ID) -> None:
        if not isinstance(private_key, Sm2PrivateKey):
            raise TypeError("private_key must be an Sm2PrivateKey")
        super().__init__(private_key.public_key, user_id)
        self._private_key = private_key
        self._crypt.private_key = f"{private_key.d:064x}"

    @property
    def private_key(self) -> Sm2PrivateKey:
        return self._private_key

    def private_key_pem(self) -> str:
        return self._private_key.pem()

    def sign(self, message: bytes) -> bytes:
        """DER signature of ``message``; k is drawn from :mod:`secrets`, never from ``random``."""
        msg = _as_bytes(message)
        if msg is None:
            raise TypeError("message must be bytes")
        e = self.digest(msg)
        for _ in range(_SIGN_ATTEMPTS):
            sig = self._sign_with_k(e, secrets.randbelow(N - 1) + 1)
            if sig is not None:
                return sig
        raise SignatureError("SM2 signing failed repeatedly; the random source looks broken")

    def _sign_with_k(self, e: bytes, k: int) -> bytes | None:
        """Sign digest ``e`` with nonce ``k``; None when k is unusable. For known-answer tests only:
        a k chosen or reused by a caller reveals the private key."""
        if len(e) != 32 or not 1 <= k < N:
            raise SignatureError("need a 32-byte digest and 1 <= k < n")
        out = self._crypt.sign(e, f"{k:064x}")  # gmssl: e = int(data.hex(), 16), k from hex
        if not isinstance(out, str) or len(out) != 128:
            return None  # gmssl's own rejections: r = 0, r + k = n, s = 0
        r, s = int(out[:64], 16), int(out[64:], 16)
        if not (1 <= r < N and 1 <= s < N):
            return None
        return encode_signature(r, s)


# ----------------------------------------------------------------------------- backend choice
class Sm2Verifier(Verifier, Protocol):
    """A :class:`Verifier` that is known to be SM2: its key and user ID are available."""

    @property
    def public_key(self) -> Sm2PublicKey: ...

    @property
    def user_id(self) -> bytes: ...


class Sm2Signer(Sm2Verifier, Signer, Protocol):
    """A :class:`Signer` that is known to be SM2 (a FISCO transaction carries its public point)."""

    @property
    def private_key(self) -> Sm2PrivateKey: ...

    def private_key_pem(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Sm2Backend:
    """One SM2 implementation: how to build its signer and verifier; ``note`` says why it was chosen."""

    name: str
    signer: Callable[[Sm2PrivateKey, bytes], Sm2Signer]
    verifier: Callable[[Sm2PublicKey, bytes], Sm2Verifier]
    note: str = ""


GMSSL_BACKEND: Final = Sm2Backend("gmssl", GmsslSm2Signer, GmsslSm2Verifier, "pure Python, not constant time")

# GM/T 0003.5 example (sm2p256v1, default ID): the self-test's independent reference.
_KAT_D: Final = 0x3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8
_KAT_R: Final = 0xF5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3
_KAT_S: Final = 0xB1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA
_KAT_MSG: Final = b"message digest"


def self_test(backend: Sm2Backend) -> None:
    """Refuse a backend that disagrees with GB/T 32918.5 or with gmssl before it signs anything real.

    It must accept the standard's signature and refuse it for another message or user ID, and its own
    signatures must verify under gmssl with a fresh nonce each time. BackendUnavailable names what failed.
    """
    msg = b"tiyi-edge SM2 self-test"
    try:
        key = Sm2PrivateKey(_KAT_D)
        kat = encode_signature(_KAT_R, _KAT_S)
        verifier = backend.verifier(key.public_key, DEFAULT_SM2_ID)
        signer = backend.signer(key, DEFAULT_SM2_ID)
        first, second = signer.sign(msg), signer.sign(msg)
        reference = GmsslSm2Verifier(key.public_key)
        checks = {
            "accept the GM/T 0003.5 signature": verifier.verify(_KAT_MSG, kat) is True,
            "refuse it for another message": verifier.verify(_KAT_MSG + b"!", kat) is False,
            "refuse it under the empty user ID": backend.verifier(key.public_key, b"").verify(_KAT_MSG, kat) is False,
            "sign what gmssl verifies": reference.verify(msg, first) and reference.verify(msg, second),
            "verify its own signature": signer.verify(msg, first) is True,
            "draw a fresh nonce per signature": decode_signature(first)[0] != decode_signature(second)[0],
        }
    except Exception as exc:
        raise BackendUnavailable(f"SM2 backend {backend.name} failed its self-test: {exc}") from exc
    failed = [what for what, ok in checks.items() if not ok]
    if failed:
        raise BackendUnavailable(f"SM2 backend {backend.name} failed its self-test: did not {'; '.join(failed)}")


def libcrypto_backend() -> Sm2Backend:
    """OpenSSL's SM2 through the system libcrypto, loaded and self-tested; BackendUnavailable otherwise."""
    from edge.sm2_libcrypto import LibcryptoSm2Signer, LibcryptoSm2Verifier, load_libcrypto

    lib = load_libcrypto()

    def signer(key: Sm2PrivateKey, user_id: bytes) -> Sm2Signer:
        return LibcryptoSm2Signer(key, user_id, lib=lib)

    def verifier(key: Sm2PublicKey, user_id: bytes) -> Sm2Verifier:
        return LibcryptoSm2Verifier(key, user_id, lib=lib)

    backend = Sm2Backend("libcrypto", signer, verifier, f"{lib.version} ({lib.name})")
    self_test(backend)
    return backend


def choose_backend(preferred: Callable[[], Sm2Backend] = libcrypto_backend) -> Sm2Backend:
    """``preferred()`` when it loads and passes its self-test, else gmssl with the reason in ``note``."""
    try:
        return preferred()
    except BackendUnavailable as exc:
        return replace(GMSSL_BACKEND, note=f"fallback, {GMSSL_BACKEND.note}: {exc}")


@functools.cache
def default_backend() -> Sm2Backend:
    """The backend :func:`make_signer`/:func:`make_verifier` use, chosen once per process at first use."""
    return choose_backend()


def make_signer(
    private_key: Sm2PrivateKey, user_id: bytes = DEFAULT_SM2_ID, *, backend: Sm2Backend | None = None
) -> Sm2Signer:
    """The one place signers are built: ``backend`` (tests force one), else :func:`default_backend`."""
    return (backend or default_backend()).signer(private_key, user_id)


def make_verifier(
    public_key: Sm2PublicKey, user_id: bytes = DEFAULT_SM2_ID, *, backend: Sm2Backend | None = None
) -> Sm2Verifier:
    """The one place verifiers are built: ``backend`` (tests force one), else :func:`default_backend`."""
    return (backend or default_backend()).verifier(public_key, user_id)


# ------------------------------------------------------------------------------- convenience
def generate_signer(user_id: bytes = DEFAULT_SM2_ID, *, backend: Sm2Backend | None = None) -> Sm2Signer:
    return make_signer(generate_private_key(), user_id, backend=backend)


def load_private_key_pem(
    text: str | bytes, user_id: bytes = DEFAULT_SM2_ID, *, backend: Sm2Backend | None = None
) -> Sm2Signer:
    """A signer from PEM (ours or OpenSSL's); KeyFormatError for anything else."""
    return make_signer(Sm2PrivateKey.from_pem(text), user_id, backend=backend)


def load_public_key_pem(
    text: str | bytes, user_id: bytes = DEFAULT_SM2_ID, *, backend: Sm2Backend | None = None
) -> Sm2Verifier:
    """A verifier from ``PUBLIC KEY`` PEM; KeyFormatError for anything else (input may be untrusted)."""
    return make_verifier(Sm2PublicKey.from_pem(text), user_id, backend=backend)
