"""SM2 through the system's libcrypto: the standard's vector, agreement with gmssl both ways over random
keys, the same refusals as the gmssl verifier (and by OpenSSL on its own), key checks, memory ownership,
and the backend picker with its fallback."""

from __future__ import annotations

import copy
import ctypes
import gc
import hashlib
import pickle
import random
import secrets
from concurrent.futures import ThreadPoolExecutor

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.errors import BackendUnavailable, KeyFormatError, SignatureError
from edge.signing import DEFAULT_SM2_ID, Signer, Verifier
from edge.sm2 import (
    GMSSL_BACKEND,
    GmsslSm2Signer,
    GmsslSm2Verifier,
    N,
    Sm2Backend,
    Sm2PrivateKey,
    Sm2PublicKey,
    _multiply_g,
    choose_backend,
    decode_signature,
    default_backend,
    encode_signature,
    generate_private_key,
    generate_signer,
    libcrypto_backend,
    load_private_key_pem,
    load_public_key_pem,
    make_signer,
    make_verifier,
    message_digest,
    self_test,
)
from edge.sm2_libcrypto import (
    MAX_ID_BYTES,
    Libcrypto,
    LibcryptoSm2Signer,
    LibcryptoSm2Verifier,
    load_libcrypto,
)
from tests.unit.edge.test_sm2 import (
    KAT_D,
    KAT_MSG,
    KAT_PX,
    KAT_PY,
    KAT_R,
    KAT_S,
    OPENSSL_KEY,
    OPENSSL_PUB,
    _bad_signatures,
    _int,
    _seq,
)

LIB = load_libcrypto()  # this machine has libcrypto.so.3 with SM2; not finding it is a failure here
CROSS_KEYS = 120  # per direction; each key costs a gmssl scalar multiplication (~5 ms)


@pytest.fixture(scope="module")
def kat_signer() -> LibcryptoSm2Signer:
    return LibcryptoSm2Signer(Sm2PrivateKey(KAT_D), lib=LIB)


def recovered_nonce(key: Sm2PrivateKey, r: int, s: int) -> int:
    """k from s = (1 + d)^-1 (k - r·d): what a leaked d would give an attacker, and a check of the maths."""
    return (s * (1 + key.d) + r * key.d) % N


# ------------------------------------------------------------------------------- known answers
def test_kat_signature_verifies_and_only_under_its_message_key_and_id(kat_signer: LibcryptoSm2Signer) -> None:
    pub = kat_signer.public_key
    assert (pub.x, pub.y) == (KAT_PX, KAT_PY)
    kat = encode_signature(KAT_R, KAT_S)
    assert kat_signer.verify(KAT_MSG, kat) is True
    assert LibcryptoSm2Verifier(pub, lib=LIB).verify(KAT_MSG, kat) is True
    assert kat_signer.verify(KAT_MSG + b"\x00", kat) is False
    assert LibcryptoSm2Verifier(pub, b"", lib=LIB).verify(KAT_MSG, kat) is False  # OpenSSL's default ID
    other = Sm2PrivateKey(KAT_D + 1).public_key
    assert LibcryptoSm2Verifier(other, lib=LIB).verify(KAT_MSG, kat) is False


def test_kat_key_signatures_satisfy_the_standard_equations(kat_signer: LibcryptoSm2Signer) -> None:
    """OpenSSL picks k itself; recovering k with d shows r = e + x(k·G) mod n for the standard's e."""
    e = int.from_bytes(message_digest(kat_signer.public_key, KAT_MSG), "big")
    nonces = set()
    for _ in range(5):
        r, s = decode_signature(kat_signer.sign(KAT_MSG))
        k = recovered_nonce(kat_signer.private_key, r, s)
        assert r == (e + _multiply_g(k)[0]) % N
        nonces.add(k)
    assert len(nonces) == 5  # a fresh nonce each time


def test_reads_openssl_written_keys() -> None:
    signer = LibcryptoSm2Signer(Sm2PrivateKey.from_pem(OPENSSL_KEY), lib=LIB)
    verifier = LibcryptoSm2Verifier(Sm2PublicKey.from_pem(OPENSSL_PUB), lib=LIB)
    assert signer.private_key_pem() == OPENSSL_KEY and signer.public_key_pem() == OPENSSL_PUB
    assert verifier.key_id == signer.key_id
    assert verifier.verify(b"m", signer.sign(b"m"))


# ------------------------------------------------------------------------ agreement with gmssl
def test_libcrypto_signs_what_gmssl_verifies_over_random_keys() -> None:
    rng = random.Random(7)
    for i in range(CROSS_KEYS):
        key = generate_private_key()
        uid = DEFAULT_SM2_ID if i % 4 else secrets.token_bytes(rng.randrange(0, 40))
        msg = secrets.token_bytes(rng.randrange(0, 300))
        sig = LibcryptoSm2Signer(key, uid, lib=LIB).sign(msg)
        gmssl = GmsslSm2Verifier(key.public_key, uid)
        assert gmssl.verify(msg, sig), (i, uid.hex(), msg.hex())
        if i % 10 == 0:
            assert not gmssl.verify(msg + b"\x00", sig)


def test_gmssl_signs_what_libcrypto_verifies_over_random_keys() -> None:
    rng = random.Random(8)
    for i in range(CROSS_KEYS):
        key = generate_private_key()
        uid = DEFAULT_SM2_ID if i % 4 else secrets.token_bytes(rng.randrange(0, 40))
        msg = secrets.token_bytes(rng.randrange(0, 300))
        sig = GmsslSm2Signer(key, uid).sign(msg)
        verifier = LibcryptoSm2Verifier(key.public_key, uid, lib=LIB)
        assert verifier.verify(msg, sig), (i, uid.hex(), msg.hex())
        assert not verifier.verify(msg + b"\x00", sig)
        assert not LibcryptoSm2Verifier(key.public_key, uid + b"x", lib=LIB).verify(msg, sig)


def test_user_id_limits() -> None:
    key = generate_private_key(random.Random(4).randrange)
    longest = b"i" * MAX_ID_BYTES
    sig = LibcryptoSm2Signer(key, longest, lib=LIB).sign(b"m")
    assert GmsslSm2Verifier(key.public_key, longest).verify(b"m", sig)
    with pytest.raises(ValueError, match="at most 8190"):  # OpenSSL's limit, one below edge.sm2's
        LibcryptoSm2Verifier(key.public_key, longest + b"i", lib=LIB)
    with pytest.raises(TypeError):
        LibcryptoSm2Verifier(key.public_key, "1234567812345678", lib=LIB)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------- refusals
def test_refuses_every_malformed_or_out_of_range_signature(kat_signer: LibcryptoSm2Signer) -> None:
    kat_gmssl = GmsslSm2Verifier(kat_signer.public_key)
    for name, sig in {
        **_bad_signatures(KAT_R, KAT_S),
        "r+s=n": encode_signature(KAT_R, N - KAT_R),
        "73 bytes": encode_signature(KAT_R, KAT_S) + b"\x00",
        "oversized": b"\x30\x82\x01\x00" + b"\x02\x01\x01" * 85 + b"\x02",
    }.items():
        assert kat_signer.verify(KAT_MSG, sig) is False, name  # type: ignore[arg-type]
        assert kat_gmssl.verify(KAT_MSG, sig) is False, name  # type: ignore[arg-type]


def test_openssl_itself_refuses_them_too(kat_signer: LibcryptoSm2Signer) -> None:
    """Below our strict DER pre-check, EVP_DigestVerify alone says no to each of them (defence in depth)."""
    good = encode_signature(KAT_R, KAT_S)
    pkey = kat_signer._pkey
    assert LIB.verify(pkey, DEFAULT_SM2_ID, KAT_MSG, good) is True
    for name, sig in {**_bad_signatures(KAT_R, KAT_S), "r+s=n": encode_signature(KAT_R, N - KAT_R)}.items():
        if isinstance(sig, bytes):
            assert LIB.verify(pkey, DEFAULT_SM2_ID, KAT_MSG, sig) is False, name


def test_every_flipped_bit_and_every_truncation_is_refused(kat_signer: LibcryptoSm2Signer) -> None:
    msg = b"batch manifest"
    sig = kat_signer.sign(msg)
    assert kat_signer.verify(msg, sig)
    for bit in range(len(sig) * 8):
        flipped = bytearray(sig)
        flipped[bit // 8] ^= 1 << (bit % 8)
        assert kat_signer.verify(msg, bytes(flipped)) is False, bit
    for cut in range(len(sig)):
        assert kat_signer.verify(msg, sig[:cut]) is False, cut
    for bit in range(len(msg) * 8):
        other = bytearray(msg)
        other[bit // 8] ^= 1 << (bit % 8)
        assert kat_signer.verify(bytes(other), sig) is False, bit


def test_wrong_key_is_refused() -> None:
    a, b = generate_private_key(), generate_private_key()
    sig = LibcryptoSm2Signer(a, lib=LIB).sign(b"m")
    assert LibcryptoSm2Verifier(a.public_key, lib=LIB).verify(b"m", sig)
    assert LibcryptoSm2Verifier(b.public_key, lib=LIB).verify(b"m", sig) is False


def test_non_bytes_inputs(kat_signer: LibcryptoSm2Signer) -> None:
    sig = encode_signature(KAT_R, KAT_S)
    for msg in (KAT_MSG.decode(), None, 1, [1, 2]):
        assert kat_signer.verify(msg, sig) is False  # type: ignore[arg-type]
    assert kat_signer.verify(bytearray(KAT_MSG), bytearray(sig)) is True  # type: ignore[arg-type]
    assert kat_signer.verify(memoryview(KAT_MSG), sig) is True  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        kat_signer.sign("text")  # type: ignore[arg-type]
    assert kat_signer.verify(b"", kat_signer.sign(b""))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120), st.binary(max_size=90))
def test_verify_never_raises_on_random_bytes(message: bytes, signature: bytes) -> None:
    assert LibcryptoSm2Verifier(Sm2PublicKey(KAT_PX, KAT_PY), lib=LIB).verify(message, signature) is False


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**264), st.integers(0, 2**264))
def test_well_formed_der_with_any_r_s_is_refused_by_both_layers(r: int, s: int) -> None:
    sig = _seq(_int(r), _int(s))
    pkey = LibcryptoSm2Verifier(Sm2PublicKey(KAT_PX, KAT_PY), lib=LIB)
    assert pkey.verify(b"m", sig) is False
    assert LIB.verify(pkey._pkey, DEFAULT_SM2_ID, b"m", sig) is False


# ---------------------------------------------------------------------------------------- keys
def _p256() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    pkcs8 = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    spki = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pkcs8, spki


def test_a_p256_key_is_refused_at_every_layer() -> None:
    pkcs8, spki = _p256()
    pem = serialization.load_der_public_key(spki).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(KeyFormatError, match="SM2"):
        load_public_key_pem(pem)  # our parser, before any backend
    with pytest.raises(KeyFormatError, match="did not read an SM2 public key"):
        LIB.load_public(spki)  # and libcrypto's own reading, were a P-256 key ever handed to it
    with pytest.raises(KeyFormatError, match="did not read an SM2 private key"):
        LIB.load_private(pkcs8)


def test_libcrypto_checks_the_keys_it_is_given() -> None:
    key, other = Sm2PrivateKey(KAT_D), Sm2PrivateKey(KAT_D + 1)
    der = key.pkcs8_der()
    mismatched = der.replace(key.public_key.point, other.public_key.point)  # d with someone else's public key
    assert mismatched != der
    with pytest.raises(KeyFormatError, match="d·G"):
        LIB.load_private(mismatched)
    spki = key.public_key.spki_der()
    off_curve = spki[:-1] + bytes([spki[-1] ^ 1])
    with pytest.raises(KeyFormatError):
        LIB.load_public(off_curve)
    for bad in (b"", spki + b"\x00", spki[:-1], b"\x30" * 2000):
        with pytest.raises(KeyFormatError):
            LIB.load_public(bad)
    with pytest.raises(KeyFormatError, match="left bytes over"):
        LIB.load_private(der + b"\x00")
    with pytest.raises(TypeError):
        LibcryptoSm2Signer(key.public_key, lib=LIB)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        LibcryptoSm2Verifier(key, lib=LIB)  # type: ignore[arg-type]


# ------------------------------------------------------------------------- memory and threads
def test_key_handles_are_shared_by_copies_and_never_pickled() -> None:
    signer = LibcryptoSm2Signer(generate_private_key(), lib=LIB)
    clones = [copy.copy(signer), copy.deepcopy(signer)]
    assert all(c._pkey is signer._pkey for c in clones)  # one owner: freed once, never twice
    with pytest.raises(TypeError, match="pickled"):
        pickle.dumps(signer)
    pub = signer.public_key
    del signer
    gc.collect()
    for clone in clones:
        assert LibcryptoSm2Verifier(pub, lib=LIB).verify(b"m", clone.sign(b"m"))


def test_failures_leave_openssl_error_queue_empty(kat_signer: LibcryptoSm2Signer) -> None:
    """Errors left queued would grow per thread and surface later in an unrelated hashlib call."""
    peek = LIB._c.ERR_peek_error
    peek.restype, peek.argtypes = ctypes.c_ulong, []
    wrong = encode_signature(KAT_R, KAT_S ^ 1)
    assert kat_signer.verify(KAT_MSG, wrong) is False
    assert peek() == 0
    assert LIB.verify(kat_signer._pkey, DEFAULT_SM2_ID, KAT_MSG, b"\x30\x00") is False
    assert peek() == 0
    with pytest.raises(KeyFormatError):
        LIB.load_public(b"\x30\x03\x02\x01\x01")
    assert peek() == 0
    with pytest.raises(SignatureError, match="libcrypto: SM2 signing failed"):  # an ID OpenSSL refuses
        LIB.sign(kat_signer._pkey, b"i" * 9000, b"m")
    assert peek() == 0
    assert hashlib.new("sm3", b"abc").hexdigest().startswith("66c7f0f4")


def test_concurrent_signing_from_threads() -> None:
    signer = LibcryptoSm2Signer(generate_private_key(), lib=LIB)
    msgs = [secrets.token_bytes(64) for _ in range(200)]
    with ThreadPoolExecutor(4) as pool:
        sigs = list(pool.map(signer.sign, msgs))
        oks = list(pool.map(signer.verify, msgs, sigs))
    assert all(oks)
    assert len({decode_signature(s)[0] for s in sigs}) == len(sigs)


def test_missing_library_is_reported_not_crashed() -> None:
    with pytest.raises(BackendUnavailable, match=r"libtiyi-missing\.so\.9"):
        load_libcrypto(("libtiyi-missing.so.9",))
    with pytest.raises(BackendUnavailable, match="no library names"):
        load_libcrypto(())
    with pytest.raises(BackendUnavailable):
        Libcrypto("libc.so.6")  # loads, but has none of the EVP functions


# --------------------------------------------------------------------------------- the picker
def test_picker_uses_libcrypto_on_this_machine() -> None:
    backend = default_backend()
    assert backend.name == "libcrypto", backend.note
    assert "OpenSSL 3" in backend.note
    key = generate_private_key()
    signer, verifier = make_signer(key), make_verifier(key.public_key)
    assert type(signer) is LibcryptoSm2Signer and type(verifier) is LibcryptoSm2Verifier
    assert type(generate_signer()) is LibcryptoSm2Signer
    assert type(load_private_key_pem(OPENSSL_KEY)) is LibcryptoSm2Signer
    assert type(load_public_key_pem(OPENSSL_PUB)) is LibcryptoSm2Verifier
    s: Signer = signer
    v: Verifier = verifier
    assert v.verify(b"p", s.sign(b"p"))


def test_a_backend_can_be_forced_by_argument() -> None:
    key = generate_private_key()
    assert type(make_signer(key, backend=GMSSL_BACKEND)) is GmsslSm2Signer
    assert type(make_verifier(key.public_key, backend=GMSSL_BACKEND)) is GmsslSm2Verifier
    assert type(load_public_key_pem(OPENSSL_PUB, backend=GMSSL_BACKEND)) is GmsslSm2Verifier
    assert type(make_signer(key, backend=libcrypto_backend())) is LibcryptoSm2Signer


def _unavailable() -> Sm2Backend:
    raise BackendUnavailable("no usable libcrypto: libcrypto.so.3: cannot open shared object file")


def test_falls_back_to_gmssl_when_libcrypto_is_unavailable() -> None:
    backend = choose_backend(_unavailable)
    assert backend.name == "gmssl"
    assert "fallback" in backend.note and "libcrypto.so.3" in backend.note
    signer = make_signer(generate_private_key(), backend=backend)
    assert type(signer) is GmsslSm2Signer
    sig = signer.sign(b"m")
    assert make_verifier(signer.public_key, backend=backend).verify(b"m", sig)
    assert choose_backend(lambda: libcrypto_backend()).name == "libcrypto"


class _FixedNonceSigner(GmsslSm2Signer):
    __slots__ = ()

    def sign(self, message: bytes) -> bytes:
        sig = self._sign_with_k(self.digest(message), 12345)
        assert sig is not None
        return sig


class _AcceptsAll(GmsslSm2Verifier):
    __slots__ = ()

    def verify(self, message: bytes, signature: bytes) -> bool:
        return True


def _ignores_id(key: Sm2PrivateKey, user_id: bytes) -> GmsslSm2Signer:
    return GmsslSm2Signer(key, b"")


def _fails(key: Sm2PrivateKey, user_id: bytes) -> GmsslSm2Signer:
    raise OSError("simulated crash inside the backend")


@pytest.mark.parametrize(
    ("broken", "reason"),
    [
        (Sm2Backend("fixed-k", _FixedNonceSigner, GmsslSm2Verifier), "fresh nonce"),
        (Sm2Backend("accepts-all", GmsslSm2Signer, _AcceptsAll), "refuse it for another message"),
        (Sm2Backend("ignores-id", _ignores_id, GmsslSm2Verifier), "sign what gmssl verifies"),
        (Sm2Backend("raises", _fails, GmsslSm2Verifier), "simulated crash"),
    ],
)
def test_a_backend_failing_its_self_test_is_not_used(broken: Sm2Backend, reason: str) -> None:
    with pytest.raises(BackendUnavailable, match=reason):
        self_test(broken)

    def load() -> Sm2Backend:
        self_test(broken)
        return broken

    assert choose_backend(load).name == "gmssl"


def test_both_real_backends_pass_the_self_test() -> None:
    self_test(GMSSL_BACKEND)
    self_test(libcrypto_backend())
