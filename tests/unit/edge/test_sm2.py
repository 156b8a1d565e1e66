"""SM2 over hardened gmssl: the GM/T 0003.5 vector, strict DER, key encodings and the gmssl pitfalls."""

from __future__ import annotations

import base64
import random
from collections.abc import Callable

import pytest
from gmssl.sm2 import CryptSM2
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.errors import KeyFormatError, SignatureError
from edge.signing import DEFAULT_SM2_ID, Signer, Verifier, key_id_for
from edge.sm2 import (
    GX,
    GY,
    GmsslSm2Signer,
    GmsslSm2Verifier,
    N,
    P,
    Sm2PrivateKey,
    Sm2PublicKey,
    decode_signature,
    encode_signature,
    generate_private_key,
    generate_signer,
    load_private_key_pem,
    load_public_key_pem,
    message_digest,
    z_digest,
)

# GM/T 0003.5 (GB/T 32918.5) example: curve sm2p256v1, ID 1234567812345678, message "message digest".
KAT_D = 0x3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8
KAT_PX = 0x09F9DF311E5421A150DD7D161E4BC5C672179FAD1833FC076BB08FF356F35020
KAT_PY = 0xCCEA490CE26775A52DC6EA718CC1AA600AED05FBF35E084A6632F6072DA9AD13
KAT_Z = bytes.fromhex("B2E14C5C79C6DF5B85F4FE7ED8DB7A262B9DA7E07CCB0EA9F4747B8CCDA8A4F3")
KAT_E = bytes.fromhex("F0B43E94BA45ACCAACE692ED534382EB17E6AB5A19CE7B31F4486FDFC0D28640")
KAT_K = 0x59276E27D506861A16680F3AD9C02DCCEF3CC1FA3CDBE4CE6D54B80DEAC1BC21
KAT_R = 0xF5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3
KAT_S = 0xB1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA
KAT_MSG = b"message digest"

# Written by `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:SM2` (3.0.19) and `openssl pkey -pubout`.
OPENSSL_KEY = """-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqBHM9VAYItBG0wawIBAQQgderLTsxh+JrsdctV
hXWlrhZAB8Of2ODE+7XEFlegbeGhRANCAASt3P/pyKzPWCjTadJ9maNGE4DxvuNX
i41LvkNxyk5BFitl0vQtVYXEwQS55O4DC1HItA8+PGG010YG1TvqoVsv
-----END PRIVATE KEY-----
"""
OPENSSL_PUB = """-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoEcz1UBgi0DQgAErdz/6cisz1go02nSfZmjRhOA8b7j
V4uNS75DccpOQRYrZdL0LVWFxMEEueTuAwtRyLQPPjxhtNdGBtU76qFbLw==
-----END PUBLIC KEY-----
"""


@pytest.fixture(scope="module")
def kat_signer() -> GmsslSm2Signer:
    return GmsslSm2Signer(Sm2PrivateKey(KAT_D))


@pytest.fixture(scope="module")
def signer() -> GmsslSm2Signer:
    return GmsslSm2Signer(generate_private_key(random.Random(1).randrange))


# ------------------------------------------------------------------------------- helpers (raw DER)
def _len(n: int) -> bytes:
    return bytes([n]) if n < 0x80 else bytes([0x81, n])


def _int(v: int) -> bytes:
    """A DER INTEGER with no range check, to build signatures our encoder refuses to produce."""
    body = v.to_bytes(v.bit_length() // 8 + 1, "big")
    return b"\x02" + _len(len(body)) + body


def _seq(*parts: bytes) -> bytes:
    body = b"".join(parts)
    return b"\x30" + _len(len(body)) + body


def _b64_pem(label: str, der: bytes) -> str:
    return f"-----BEGIN {label}-----\n{base64.encodebytes(der).decode()}-----END {label}-----\n"


# ------------------------------------------------------------------------------ known-answer vector
def test_kat_public_key_z_e_r_s(kat_signer: GmsslSm2Signer) -> None:
    pub = kat_signer.public_key
    assert (pub.x, pub.y) == (KAT_PX, KAT_PY)
    assert z_digest(pub) == KAT_Z
    assert z_digest(pub, DEFAULT_SM2_ID) == KAT_Z
    assert message_digest(pub, KAT_MSG) == KAT_E
    assert kat_signer.digest(KAT_MSG) == KAT_E
    sig = kat_signer._sign_with_k(KAT_E, KAT_K)
    assert sig is not None
    assert decode_signature(sig) == (KAT_R, KAT_S)
    assert sig == encode_signature(KAT_R, KAT_S)
    assert kat_signer.verify(KAT_MSG, sig)
    assert GmsslSm2Verifier(pub).verify(KAT_MSG, sig)


def test_kat_der_layout() -> None:
    # Both r and s have the top bit set, so each INTEGER needs a 00 prefix: 2 + 2 * (2 + 33) = 72 bytes.
    sig = encode_signature(KAT_R, KAT_S)
    assert len(sig) == 72
    assert sig[:5] == bytes.fromhex("3046022100")
    assert sig[5:37] == KAT_R.to_bytes(32, "big")


def test_sign_with_k_rejects_bad_inputs(kat_signer: GmsslSm2Signer) -> None:
    for k in (0, N, N + 1, -1):
        with pytest.raises(SignatureError):
            kat_signer._sign_with_k(KAT_E, k)
    with pytest.raises(SignatureError):
        kat_signer._sign_with_k(KAT_E[:31], KAT_K)


# ------------------------------------------------------------------------------------ DER strictness
@pytest.mark.parametrize(("r", "s"), [(1, 1), (N - 1, N - 1), (0x7F, 0x80), (2**255, 2**248 - 1), (KAT_R, 5)])
def test_der_round_trip_edges(r: int, s: int) -> None:
    sig = encode_signature(r, s)
    assert sig == _seq(_int(r), _int(s))
    assert decode_signature(sig) == (r, s)


@given(st.integers(1, N - 1), st.integers(1, N - 1))
def test_der_round_trip_property(r: int, s: int) -> None:
    sig = encode_signature(r, s)
    assert 8 <= len(sig) <= 72
    assert decode_signature(sig) == (r, s)


@pytest.mark.parametrize(("r", "s"), [(0, 1), (1, 0), (N, 1), (1, N), (-1, 1)])
def test_encode_refuses_out_of_range(r: int, s: int) -> None:
    with pytest.raises(SignatureError):
        encode_signature(r, s)


def _bad_signatures(r: int, s: int) -> dict[str, object]:
    good = encode_signature(r, s)
    r_body = r.to_bytes(r.bit_length() // 8 + 1, "big")
    return {
        "r=0": _seq(_int(0), _int(s)),
        "s=0": _seq(_int(r), _int(0)),
        "r=n": _seq(_int(N), _int(s)),
        "s=n": _seq(_int(r), _int(N)),
        "s+n": _seq(_int(r), _int(s + N)),
        "r+n": _seq(_int(r + N), _int(s)),
        "negative r": _seq(b"\x02\x01\xff", _int(s)),
        "non-minimal r": _seq(b"\x02" + bytes([len(r_body) + 1]) + b"\x00" + r_body, _int(s)),
        "long-form length": b"\x30\x81" + bytes([len(good) - 2]) + good[2:],
        "indefinite length": b"\x30\x80" + good[2:] + b"\x00\x00",
        "trailing garbage": good + b"\x00",
        "NULL after s": _seq(_int(r), _int(s), b"\x05\x00"),
        "three integers": _seq(_int(r), _int(s), _int(1)),
        "one integer": _seq(_int(r)),
        "SET not SEQUENCE": b"\x31" + good[1:],
        "OCTET STRING r": _seq(b"\x04" + _int(r)[1:], _int(s)),
        "truncated": good[:-1],
        "raw r||s": r.to_bytes(32, "big") + s.to_bytes(32, "big"),
        "empty": b"",
        "junk": b"\x30\x06\x02\x01\x01\x02",
        "hex text": good.hex().encode(),
        "str": good.hex(),
        "None": None,
        "int": 12345,
        "list": list(good),
    }


def test_strict_rejects_malformed_and_out_of_range(kat_signer: GmsslSm2Signer) -> None:
    good = encode_signature(KAT_R, KAT_S)
    assert kat_signer.verify(KAT_MSG, good)
    for name, sig in _bad_signatures(KAT_R, KAT_S).items():
        assert kat_signer.verify(KAT_MSG, sig) is False, name  # type: ignore[arg-type]
        if isinstance(sig, bytes):
            with pytest.raises(SignatureError):
                decode_signature(sig)


class _ChosenDigest(GmsslSm2Verifier):
    """Verifies against a fixed e, so a test can pick (r, s) first and solve the equation for e."""

    __slots__ = ("e",)
    e: bytes

    def digest(self, message: bytes) -> bytes:
        return self.e


def test_s_plus_n_is_rejected_although_gmssl_accepts_it(kat_signer: GmsslSm2Signer) -> None:
    # gmssl has no range check: (r, s + n) satisfies its equation as t = (r + s) mod n is unchanged. Its
    # scalar multiplication reads only 256 bits of s, so the forgery works when s + n < 2**256; pick such
    # an s, then solve for e: (x1, _) = sG + tP, e = r - x1 (mod n).
    crypt = CryptSM2(private_key="", public_key="")
    crypt.public_key = f"{KAT_PX:064x}{KAT_PY:064x}"
    g_hex = f"{GX:064x}{GY:064x}"
    r, s = 12345, 7
    sum_jacobian = crypt._add_point(crypt._kg(s, g_hex) + "1", crypt._kg((r + s) % N, crypt.public_key))
    x1 = int(crypt._convert_jacb_to_nor(sum_jacobian)[:64], 16)
    e = ((r - x1) % N).to_bytes(32, "big")
    assert crypt.verify(f"{r:064x}{s:064x}", e) is True
    assert crypt.verify(f"{r:064x}{s + N:064x}", e) is True  # the gmssl pitfall
    ours = _ChosenDigest(kat_signer.public_key)
    ours.e = e
    assert ours.verify(b"any", _seq(_int(r), _int(s))) is True
    assert ours.verify(b"any", _seq(_int(r), _int(s + N))) is False


def test_r_plus_s_equal_n_is_rejected(kat_signer: GmsslSm2Signer) -> None:
    assert kat_signer.verify(KAT_MSG, encode_signature(KAT_R, N - KAT_R)) is False


def test_verify_rejects_non_bytes_message(kat_signer: GmsslSm2Signer) -> None:
    sig = encode_signature(KAT_R, KAT_S)
    for msg in (KAT_MSG.decode(), None, 1, [1, 2]):
        assert kat_signer.verify(msg, sig) is False  # type: ignore[arg-type]
    assert kat_signer.verify(bytearray(KAT_MSG), bytearray(sig)) is True  # type: ignore[arg-type]
    assert kat_signer.verify(memoryview(KAT_MSG), sig) is True  # type: ignore[arg-type]


# -------------------------------------------------------------------------- wrong message / key / ID
def test_wrong_message_key_and_id(signer: GmsslSm2Signer) -> None:
    msg = b"batch manifest"
    sig = signer.sign(msg)
    assert signer.verify(msg, sig)
    assert not signer.verify(msg + b"\x00", sig)
    assert not signer.verify(b"", sig)
    other = GmsslSm2Signer(generate_private_key(random.Random(2).randrange))
    assert not other.verify(msg, sig)
    assert not GmsslSm2Verifier(signer.public_key, b"").verify(msg, sig)  # OpenSSL's default empty ID
    assert not GmsslSm2Verifier(signer.public_key, b"1234567812345679").verify(msg, sig)
    with_id = GmsslSm2Signer(signer.private_key, b"alice@example.org")
    sig2 = with_id.sign(msg)
    assert GmsslSm2Verifier(signer.public_key, b"alice@example.org").verify(msg, sig2)
    assert not signer.verify(msg, sig2)


def test_user_id_limits(signer: GmsslSm2Signer) -> None:
    assert len(z_digest(signer.public_key, b"x" * 8191)) == 32
    with pytest.raises(ValueError, match="longer"):
        z_digest(signer.public_key, b"x" * 8192)
    with pytest.raises(TypeError):
        GmsslSm2Verifier(signer.public_key, "1234567812345678")  # type: ignore[arg-type]


def test_empty_message_signs(signer: GmsslSm2Signer) -> None:
    assert signer.verify(b"", signer.sign(b""))


def test_sign_refuses_non_bytes(signer: GmsslSm2Signer) -> None:
    with pytest.raises(TypeError):
        signer.sign("text")  # type: ignore[arg-type]


# ------------------------------------------------------------------------- the gmssl key pitfalls
def _key_where(pred: Callable[[str], bool], seed: int) -> Sm2PrivateKey:
    rng = random.Random(seed)
    for _ in range(5000):
        key = generate_private_key(rng.randrange)
        if pred(f"{key.public_key.x:064x}"):
            return key
    raise AssertionError("no key found")  # pragma: no cover


@pytest.mark.parametrize(
    "prefix",
    ["0", "4", "04", "40", "00"],
    ids=lambda p: f"X starts with {p}",
)
def test_public_x_with_leading_0_or_4(prefix: str) -> None:
    """gmssl's ``lstrip("04")`` would eat these digits; we set the 128-hex X‖Y ourselves."""
    key = _key_where(lambda x: x.startswith(prefix), seed=len(prefix) * 100 + int(prefix, 16))
    signer = GmsslSm2Signer(key)
    assert signer._crypt.public_key == f"{key.public_key.x:064x}{key.public_key.y:064x}"
    msg = b"leading digits"
    sig = signer.sign(msg)
    assert signer.verify(msg, sig)
    verifier = load_public_key_pem(signer.public_key_pem())
    assert verifier.public_key == key.public_key
    assert verifier.verify(msg, sig)
    assert Sm2PrivateKey.from_pem(key.pem()) == key


def test_nonce_does_not_come_from_random(signer: GmsslSm2Signer) -> None:
    random.seed(42)
    a = signer.sign(b"m")
    random.seed(42)
    b = signer.sign(b"m")
    assert a != b


# -------------------------------------------------------------------------------------- properties
@settings(max_examples=25, deadline=None)
@given(st.binary(max_size=300))
def test_sign_verify_round_trip(message: bytes) -> None:
    signer = _ROUND_TRIP_SIGNER
    sig = signer.sign(message)
    assert decode_signature(sig)
    assert signer.verify(message, sig)
    assert not signer.verify(message + b"!", sig)


_ROUND_TRIP_SIGNER = GmsslSm2Signer(generate_private_key(random.Random(3).randrange))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120), st.binary(max_size=80))
def test_verify_never_raises_on_random_bytes(message: bytes, signature: bytes) -> None:
    assert _ROUND_TRIP_SIGNER.verify(message, signature) is False


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**264), st.integers(0, 2**264))
def test_verify_never_raises_on_well_formed_der(r: int, s: int) -> None:
    """Structurally valid DER with arbitrary r, s reaches gmssl; the answer is still a plain False."""
    assert _ROUND_TRIP_SIGNER.verify(b"m", _seq(_int(r), _int(s))) is False


# -------------------------------------------------------------------------------------------- keys
def test_private_key_range() -> None:
    for d in (0, N - 1, N, -5):
        with pytest.raises(KeyFormatError):
            Sm2PrivateKey(d)
    assert Sm2PrivateKey(1).public_key == Sm2PublicKey(
        int("32c4ae2c1f1981195f9904466a39c9948fe30bbff2660be1715a4589334c74c7", 16),
        int("bc3736a2f4f6779c59bdcee36b692153d0a9877cc62a474002df32e52139f0a0", 16),
    )
    assert Sm2PrivateKey(N - 2).public_key.x == Sm2PrivateKey(2).public_key.x  # (n-2)G = -(2G)
    assert Sm2PrivateKey.from_bytes(KAT_D.to_bytes(32, "big")).d == KAT_D
    with pytest.raises(KeyFormatError):
        Sm2PrivateKey.from_bytes(b"\x01" * 31)


def test_private_key_repr_hides_scalar(kat_signer: GmsslSm2Signer) -> None:
    for text in (repr(kat_signer.private_key), repr(kat_signer), str(kat_signer.private_key)):
        assert f"{KAT_D:x}" not in text.lower()
        assert str(KAT_D) not in text
        assert kat_signer.key_id in text


def test_public_key_validation() -> None:
    with pytest.raises(KeyFormatError):
        Sm2PublicKey(KAT_PX, KAT_PY + 1)
    with pytest.raises(KeyFormatError):
        Sm2PublicKey(KAT_PX + P, KAT_PY)
    with pytest.raises(KeyFormatError):
        Sm2PublicKey(0, 0)
    off = (2).to_bytes(32, "big")  # x = 2: x^3 + ax + b is not a square mod p
    for point in (b"\x00", b"", b"\x04" + bytes(64), b"\x04" + bytes(63), b"\x06" + bytes(64), b"\x02" + off):
        with pytest.raises(KeyFormatError):
            Sm2PublicKey.from_point(point)


def test_compressed_point(kat_signer: GmsslSm2Signer) -> None:
    pub = kat_signer.public_key
    prefix = b"\x03" if pub.y & 1 else b"\x02"
    assert Sm2PublicKey.from_point(prefix + pub.x.to_bytes(32, "big")) == pub
    flipped = bytes([prefix[0] ^ 1]) + pub.x.to_bytes(32, "big")
    assert Sm2PublicKey.from_point(flipped) == Sm2PublicKey(pub.x, P - pub.y)


def test_pem_round_trip_and_key_id(kat_signer: GmsslSm2Signer) -> None:
    key = kat_signer.private_key
    assert Sm2PrivateKey.from_pem(key.pem()) == key
    assert Sm2PrivateKey.from_pem(key.pem().encode()) == key
    assert Sm2PrivateKey.from_pkcs8_der(key.pkcs8_der()) == key
    pub = key.public_key
    assert Sm2PublicKey.from_pem(pub.pem()) == pub
    assert Sm2PublicKey.from_spki_der(pub.spki_der()) == pub
    assert kat_signer.key_id == key_id_for(pub.spki_der()) == pub.key_id
    assert kat_signer.public_key_pem() == pub.pem()
    assert kat_signer.private_key_pem() == key.pem()
    lines = key.pem().splitlines()
    assert lines[0] == "-----BEGIN PRIVATE KEY-----" and lines[-1] == "-----END PRIVATE KEY-----"
    assert all(len(line) <= 64 for line in lines[1:-1])


def test_reads_openssl_pem_and_writes_it_back_byte_identical() -> None:
    signer = load_private_key_pem(OPENSSL_KEY)
    assert signer.private_key_pem() == OPENSSL_KEY
    assert signer.public_key_pem() == OPENSSL_PUB
    verifier = load_public_key_pem(OPENSSL_PUB)
    assert verifier.key_id == signer.key_id
    assert verifier.verify(b"x", signer.sign(b"x"))


def test_pem_ignores_surrounding_text() -> None:
    assert (
        load_public_key_pem("subject=gateway 7\n" + OPENSSL_PUB + "trailer\n").key_id
        == load_public_key_pem(OPENSSL_PUB).key_id
    )


def _ec_private_key(d: int, params: bytes | None, pub: bytes | None) -> bytes:
    body = _int(1) + b"\x04\x20" + d.to_bytes(32, "big")
    if params is not None:
        body += b"\xa0" + _len(len(params)) + params
    if pub is not None:
        bits = b"\x03" + _len(len(pub) + 1) + b"\x00" + pub
        body += b"\xa1" + _len(len(bits)) + bits
    return _seq(body)


OID_SM2 = bytes.fromhex("06082a811ccf5501822d")
OID_EC = bytes.fromhex("06072a8648ce3d0201")
OID_P256 = bytes.fromhex("06082a8648ce3d030107")


def _pkcs8(alg: bytes, ec_key: bytes, version: int = 0, extra: bytes = b"") -> bytes:
    return _seq(_int(version), _seq(alg), b"\x04" + _len(len(ec_key)) + ec_key + extra)


def test_alternative_encodings_accepted(kat_signer: GmsslSm2Signer) -> None:
    key = kat_signer.private_key
    point = key.public_key.point
    accepted = {
        "alg = SM2 OID, no params": _pkcs8(OID_SM2, _ec_private_key(KAT_D, None, point)),
        "alg = SM2 OID, NULL": _pkcs8(OID_SM2 + b"\x05\x00", _ec_private_key(KAT_D, None, point)),
        "alg = SM2 OID + curve": _pkcs8(OID_SM2 + OID_SM2, _ec_private_key(KAT_D, None, point)),
        "ECPrivateKey with [0] curve": _pkcs8(OID_EC + OID_SM2, _ec_private_key(KAT_D, OID_SM2, point)),
        "no embedded public key": _pkcs8(OID_EC + OID_SM2, _ec_private_key(KAT_D, None, None)),
        "attributes": _pkcs8(OID_EC + OID_SM2, _ec_private_key(KAT_D, None, point), extra=b"\xa0\x00"),
    }
    for name, der in accepted.items():
        assert Sm2PrivateKey.from_pem(_b64_pem("PRIVATE KEY", der)) == key, name
    sec1 = _ec_private_key(KAT_D, OID_SM2, point)
    assert (
        Sm2PrivateKey.from_pem(
            "-----BEGIN EC PARAMETERS-----\nBggqgRzPVQGCLQ==\n-----END EC PARAMETERS-----\n"
            + _b64_pem("EC PRIVATE KEY", sec1)
        )
        == key
    )
    spki_sm2_alg = _seq(_seq(OID_SM2), b"\x03\x42\x00" + point)
    assert Sm2PublicKey.from_spki_der(spki_sm2_alg) == key.public_key


def test_malformed_keys_rejected(kat_signer: GmsslSm2Signer) -> None:
    key = kat_signer.private_key
    point = key.public_key.point
    other_point = Sm2PrivateKey(KAT_D + 1).public_key.point
    good = key.pkcs8_der()
    bad_private = {
        "other curve": _pkcs8(OID_EC + OID_P256, _ec_private_key(KAT_D, None, point)),
        "[0] other curve": _pkcs8(OID_EC + OID_SM2, _ec_private_key(KAT_D, OID_P256, point)),
        "explicit params": _pkcs8(OID_EC + _seq(_int(1)), _ec_private_key(KAT_D, None, point)),
        "mismatched public key": _pkcs8(OID_EC + OID_SM2, _ec_private_key(KAT_D, None, other_point)),
        "d = 0": _pkcs8(OID_EC + OID_SM2, _ec_private_key(0, None, None)),
        "d = n - 1": _pkcs8(OID_EC + OID_SM2, _ec_private_key(N - 1, None, None)),
        "d = n": _pkcs8(OID_EC + OID_SM2, _ec_private_key(N, None, None)),
        "version 2": _pkcs8(OID_EC + OID_SM2, _ec_private_key(KAT_D, None, point), version=2),
        "trailing byte": good + b"\x00",
        "truncated": good[:-1],
        "unknown trailing field": _pkcs8(OID_EC + OID_SM2, _ec_private_key(KAT_D, None, point), extra=b"\x05\x00"),
    }
    for name, der in bad_private.items():
        with pytest.raises(KeyFormatError):
            Sm2PrivateKey.from_pkcs8_der(der)
            pytest.fail(name)
    sec1_no_curve = _b64_pem("EC PRIVATE KEY", _ec_private_key(KAT_D, None, point))
    with pytest.raises(KeyFormatError, match="curve"):
        Sm2PrivateKey.from_pem(sec1_no_curve)

    spki = key.public_key.spki_der()
    bad_public = {
        "other curve": _seq(_seq(OID_EC + OID_P256), b"\x03\x42\x00" + point),
        "unused bits": _seq(_seq(OID_EC + OID_SM2), b"\x03\x42\x01" + point),
        "off-curve point": spki[:-1] + bytes([spki[-1] ^ 1]),
        "infinity": _seq(_seq(OID_EC + OID_SM2), b"\x03\x02\x00\x00"),
        "trailing": spki + b"\x00",
        "not DER": b"\xff" * 10,
        "empty": b"",
    }
    for name, der in bad_public.items():
        with pytest.raises(KeyFormatError):
            Sm2PublicKey.from_spki_der(der)
            pytest.fail(name)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "junk",
        OPENSSL_PUB.replace("PUBLIC KEY", "PRIVATE KEY"),
        OPENSSL_KEY.replace("MIGHAgEA", "MIGHAgE*"),
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMAA=\n-----END ENCRYPTED PRIVATE KEY-----\n",
        "-----BEGIN PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nMAA=\n-----END PRIVATE KEY-----\n",
        "-----BEGIN PRIVATE KEY-----\nMAB=\n-----END PRIVATE KEY-----\n",  # non-canonical base64
        ("é" + OPENSSL_KEY).encode(),
        OPENSSL_KEY * 100,
    ],
)
def test_bad_private_pem(text: str | bytes) -> None:
    with pytest.raises(KeyFormatError):
        load_private_key_pem(text)


@pytest.mark.parametrize("text", ["", OPENSSL_KEY, b"\xff\xfe", 42, None])
def test_bad_public_pem_raises_only_key_format_error(text: object) -> None:
    with pytest.raises(KeyFormatError):
        load_public_key_pem(text)  # type: ignore[arg-type]


def test_protocols_and_generation() -> None:
    s: Signer = generate_signer()
    v: Verifier = load_public_key_pem(s.public_key_pem())
    sig = s.sign(b"p")
    assert v.verify(b"p", sig) and s.verify(b"p", sig)
    assert v.key_id == s.key_id and v.key_id.startswith("sm2:") and len(v.key_id) == 20
    calls: list[int] = []

    def fake(n: int) -> int:
        calls.append(n)
        return n - 1

    assert generate_private_key(fake).d == N - 2
    assert calls == [N - 2]
