"""SM2 as specified by GB/T 32918 / GM/T 0003, and the hardening around gmssl."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.errors import KeyFormatError, SignatureError
from edge.sm2 import (
    N,
    Sm2PublicKey,
    Sm2Signer,
    Sm2Verifier,
    decode_signature,
    digest_e,
    encode_signature,
    generate_signer,
    load_private_key_pem,
    load_public_key_pem,
)

# GM/T 0003.5 example on the recommended curve, default ID, message "message digest".
KAT_D = 0x3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8
KAT_PX = 0x09F9DF311E5421A150DD7D161E4BC5C672179FAD1833FC076BB08FF356F35020
KAT_PY = 0xCCEA490CE26775A52DC6EA718CC1AA600AED05FBF35E084A6632F6072DA9AD13
KAT_E = "f0b43e94ba45accaace692ed534382eb17e6ab5a19ce7b31f4486fdfc0d28640"
KAT_K = 0x59276E27D506861A16680F3AD9C02DCCEF3CC1FA3CDBE4CE6D54B80DEAC1BC21
KAT_R = 0xF5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3
KAT_S = 0xB1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA


@pytest.fixture(scope="module")
def kat() -> Sm2Signer:
    return Sm2Signer(KAT_D)


def test_known_answer_public_key(kat: Sm2Signer) -> None:
    assert (kat.public_key.x, kat.public_key.y) == (KAT_PX, KAT_PY)


def test_known_answer_digest(kat: Sm2Signer) -> None:
    assert digest_e(b"message digest", KAT_PX, KAT_PY).hex() == KAT_E


def test_known_answer_signature(kat: Sm2Signer) -> None:
    sig = kat._sign_with_k(bytes.fromhex(KAT_E), KAT_K)
    assert sig is not None
    assert decode_signature(sig) == (KAT_R, KAT_S)
    assert kat.verify(b"message digest", sig)


def test_signatures_are_randomised_and_verify(kat: Sm2Signer) -> None:
    a, b = kat.sign(b"m"), kat.sign(b"m")
    assert a != b  # k comes from secrets, never repeats
    assert kat.verify(b"m", a) and kat.verify(b"m", b)


def _sig(r: int, s: int) -> bytes:
    return encode_signature(r, s)


@pytest.mark.parametrize("r,s", [(0, 1), (1, 0), (N, 1), (1, N), (N + 1, 5)])
def test_out_of_range_r_s_rejected(kat: Sm2Signer, r: int, s: int) -> None:
    assert not kat.verify(b"message digest", _sig(r, s))


def test_s_plus_n_malleability_rejected(kat: Sm2Signer) -> None:
    """gmssl alone accepts (r, s + n); OpenSSL and we do not."""
    sig = kat._sign_with_k(bytes.fromhex(KAT_E), KAT_K)
    assert sig is not None
    r, s = decode_signature(sig)
    assert not kat.verify(b"message digest", _sig(r, s + N))


@pytest.mark.parametrize("junk", [b"", b"\x30\x00", b"\x00" * 64, bytes(range(70)), b"\x30\x06\x02\x01\x01\x02\x01"])
def test_junk_signatures_return_false(kat: Sm2Signer, junk: bytes) -> None:
    assert kat.verify(b"x", junk) is False


def test_raw_r_s_is_not_accepted(kat: Sm2Signer) -> None:
    r, s = decode_signature(kat.sign(b"x"))
    assert not kat.verify(b"x", r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def test_non_minimal_der_rejected() -> None:
    with pytest.raises(SignatureError):
        decode_signature(bytes.fromhex("3008020200010202000a"))  # leading zero padding
    with pytest.raises(SignatureError):
        decode_signature(_sig(1, 2) + b"\x00")  # trailing garbage
    with pytest.raises(SignatureError):
        decode_signature(bytes.fromhex("3006020181020101"))  # negative r


def test_wrong_message_key_and_id_fail(kat: Sm2Signer) -> None:
    sig = kat.sign(b"hello")
    assert not kat.verify(b"hellp", sig)
    assert not generate_signer().verify(b"hello", sig)
    assert not kat.verify(b"hello", sig, uid=b"")
    assert kat.verify(b"hello", kat.sign(b"hello", uid=b"alice"), uid=b"alice")


def test_keys_with_x_starting_with_0_or_4_survive_pem_round_trip() -> None:
    """gmssl's lstrip("04") would corrupt these; we never hand it a prefixed key."""
    found = {"0": 0, "4": 0}
    while min(found.values()) < 3:
        s = generate_signer()
        first = f"{s.public_key.x:064x}"[0]
        if first not in found:
            continue
        found[first] += 1
        again = load_private_key_pem(s.private_key_pem())
        pub = load_public_key_pem(s.public_key_pem())
        msg = b"leading digit " + first.encode()
        assert again.public_key == s.public_key
        assert pub.verify(msg, again.sign(msg))


def test_public_key_off_curve_rejected() -> None:
    with pytest.raises(KeyFormatError):
        Sm2PublicKey(KAT_PX, KAT_PY + 1)


def test_private_key_range() -> None:
    for d in (0, N - 1, N):
        with pytest.raises(KeyFormatError):
            Sm2Signer(d)


def test_pem_rejects_other_curves_and_garbage() -> None:
    p256 = ("-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBka"
            "GxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+Pw==\n-----END PUBLIC KEY-----\n")
    with pytest.raises(KeyFormatError):
        load_public_key_pem(p256)
    with pytest.raises(KeyFormatError):
        load_public_key_pem("not a key")
    with pytest.raises(KeyFormatError):
        load_private_key_pem(generate_signer().public_key_pem())


def test_signer_repr_hides_private_key(kat: Sm2Signer) -> None:
    assert f"{KAT_D:x}" not in repr(kat).lower()


@settings(max_examples=25, deadline=None)
@given(st.binary(max_size=300))
def test_sign_verify_round_trip(msg: bytes) -> None:
    s = generate_signer()
    v = Sm2Verifier(s.public_key)
    assert v.verify(msg, s.sign(msg))
    assert v.key_id == s.key_id


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=80), st.binary(max_size=80))
def test_verify_never_raises(msg: bytes, sig: bytes) -> None:
    assert Sm2Signer(KAT_D).verify(msg, sig) in (True, False)
