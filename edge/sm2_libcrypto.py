"""SM2 signatures through the system's OpenSSL 3 libcrypto, bound with :mod:`ctypes`.

Why: gmssl multiplies by the nonce with double-and-add from its top set bit, so its signing time gives
away the nonce's bit length, which lattice attacks (Minerva, TPM-Fail) turn into the private key.
OpenSSL's SM2 uses a constant-time ladder for k·G and is ~20x faster. No SM2 wheel exists for aarch64
and pyca/cryptography has no SM2, but Debian 12 / Raspberry Pi OS Bookworm ship ``libcrypto.so.3`` with
SM2: the library Python's :mod:`hashlib` already loads for SM3.

Only the EVP interface is used: keys are read from the canonical DER that :mod:`edge.sm2` writes,
``EVP_DigestSign``/``EVP_DigestVerify`` hash with SM3 and compute Z themselves from the user ID set with
``EVP_PKEY_CTX_set1_id`` (OpenSSL 3's default ID is empty, GM/T 0009's is ``1234567812345678``).

Rules of this binding, because a mistake here crashes the process instead of raising:

* every function used has a declared prototype (a pointer returned as a C ``int`` would be truncated);
* every object made is freed in ``finally``; a key is owned by one :class:`_Pkey` handle that frees it
  once and is never copied or pickled;
* every return code is checked, and OpenSSL's per-thread error queue is emptied after each failure so it
  neither grows nor surfaces later in an unrelated :mod:`hashlib` error;
* only bytes whose type and size Python has checked reach C; a signature must first pass the strict DER
  reader of :mod:`edge.sm2`, so both backends accept exactly the same byte strings.

Loading the library (by soname; ``ctypes.util.find_library`` would run ldconfig or a compiler) is the
only contact with the platform, done once by the backend picker in :mod:`edge.sm2`.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from ctypes import POINTER, byref, c_char_p, c_int, c_long, c_size_t, c_ulong, c_void_p
from typing import Any, Final, NoReturn

from edge.errors import BackendUnavailable, KeyFormatError, SignatureError
from edge.signing import DEFAULT_SM2_ID
from edge.sm2 import N, Sm2PrivateKey, Sm2PublicKey, _as_bytes, _check_user_id, decode_signature

# Debian/Raspberry Pi OS soname first; the macOS name only helps developers.
LIBRARY_NAMES: Final = ("libcrypto.so.3", "libcrypto.3.dylib")
_MIN_VERSION: Final = 0x3000_0000  # EVP_PKEY_is_a, EVP_PKEY_CTX_new_from_pkey, set1_id as a function: 3.0
_SIGNATURE_BUFFER: Final = 80  # DER SEQUENCE{r, s} of two 256-bit integers is at most 72 bytes
_MAX_KEY_DER: Final = 1024  # our PKCS#8 is 138 bytes, SPKI 91; nothing near this size is an SM2 key
_ERROR_TEXT: Final = 256
# OpenSSL refuses IDs of 8191 bytes and more (ENTL would reach 2^16 - 8); edge.sm2 allows 8191. Real IDs are
# 16 bytes; refusing at construction beats a signer whose every signature fails.
MAX_ID_BYTES: Final = 8190

# name: (restype, argtypes). Pointers are c_void_p both ways so ctypes never narrows them.
_PROTOTYPES: Final[dict[str, tuple[Any, list[Any]]]] = {
    "OpenSSL_version_num": (c_ulong, []),
    "OpenSSL_version": (c_char_p, [c_int]),
    "ERR_get_error": (c_ulong, []),
    "ERR_error_string_n": (None, [c_ulong, c_char_p, c_size_t]),
    "ERR_clear_error": (None, []),
    "d2i_AutoPrivateKey": (c_void_p, [c_void_p, POINTER(c_void_p), c_long]),
    "d2i_PUBKEY": (c_void_p, [c_void_p, POINTER(c_void_p), c_long]),
    "EVP_PKEY_is_a": (c_int, [c_void_p, c_char_p]),
    "EVP_PKEY_free": (None, [c_void_p]),
    "EVP_PKEY_CTX_new_from_pkey": (c_void_p, [c_void_p, c_void_p, c_char_p]),
    "EVP_PKEY_CTX_free": (None, [c_void_p]),
    "EVP_PKEY_CTX_set1_id": (c_int, [c_void_p, c_char_p, c_int]),
    "EVP_PKEY_public_check": (c_int, [c_void_p]),
    "EVP_PKEY_pairwise_check": (c_int, [c_void_p]),
    "EVP_MD_CTX_new": (c_void_p, []),
    "EVP_MD_CTX_free": (None, [c_void_p]),
    "EVP_MD_CTX_set_pkey_ctx": (None, [c_void_p, c_void_p]),
    "EVP_sm3": (c_void_p, []),
    "EVP_DigestSignInit": (c_int, [c_void_p, c_void_p, c_void_p, c_void_p, c_void_p]),
    "EVP_DigestSign": (c_int, [c_void_p, c_char_p, POINTER(c_size_t), c_char_p, c_size_t]),
    "EVP_DigestVerifyInit": (c_int, [c_void_p, c_void_p, c_void_p, c_void_p, c_void_p]),
    "EVP_DigestVerify": (c_int, [c_void_p, c_char_p, c_size_t, c_char_p, c_size_t]),
}


class _Pkey:
    """Owns one ``EVP_PKEY*`` and frees it exactly once, when the last reference goes.

    Copies return the same handle and pickling is refused: a second owner would free the key twice.
    """

    __slots__ = ("_free", "ptr")

    def __init__(self, ptr: int, free: Callable[[int], None]) -> None:
        self._free = free
        self.ptr = ptr

    def __del__(self) -> None:
        ptr, self.ptr = self.ptr, 0
        if ptr:
            self._free(ptr)

    def __copy__(self) -> _Pkey:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> _Pkey:
        return self

    def __reduce__(self) -> NoReturn:
        raise TypeError("an OpenSSL key handle cannot be pickled; pickle the Sm2PrivateKey/Sm2PublicKey")


class Libcrypto:
    """The loaded library with the prototypes of the few EVP functions SM2 needs."""

    __slots__ = ("_c", "_sm3", "name", "version")

    def __init__(self, name: str) -> None:
        """Load ``name`` (a soname or path); BackendUnavailable if it is missing, too old or lacks SM3."""
        try:
            cdll = ctypes.CDLL(name)
            for symbol, (restype, argtypes) in _PROTOTYPES.items():
                fn = getattr(cdll, symbol)
                fn.restype, fn.argtypes = restype, argtypes
        except (OSError, AttributeError) as exc:
            raise BackendUnavailable(f"{name}: {exc}") from exc
        self._c: Any = cdll
        self.name = name
        number = int(cdll.OpenSSL_version_num())
        self.version = (cdll.OpenSSL_version(0) or b"OpenSSL ?").decode("ascii", "replace")
        if number < _MIN_VERSION:
            raise BackendUnavailable(f"{name} is {self.version}; SM2 through EVP needs OpenSSL >= 3.0")
        self._sm3 = int(cdll.EVP_sm3() or 0)
        if not self._sm3:
            raise BackendUnavailable(f"{name} has no SM3 digest")

    def __repr__(self) -> str:
        return f"Libcrypto({self.name!r}, {self.version!r})"

    def __copy__(self) -> Libcrypto:  # one loaded library per process; copies of signers share it
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Libcrypto:
        return self

    def __reduce__(self) -> NoReturn:
        raise TypeError("a loaded libcrypto cannot be pickled")

    # ------------------------------------------------------------------------------ errors
    def _drain_errors(self, what: str) -> str:
        """``what`` plus OpenSSL's first queued reason; empties the queue either way."""
        c = self._c
        code = int(c.ERR_get_error())
        reason = ""
        if code:
            buf = ctypes.create_string_buffer(_ERROR_TEXT)
            c.ERR_error_string_n(code, buf, _ERROR_TEXT)
            reason = ": " + buf.value.decode("ascii", "replace")
        c.ERR_clear_error()
        return f"libcrypto: {what} failed{reason}"

    # ------------------------------------------------------------------------------ keys
    def _decode(self, decoder: Any, der: bytes, what: str) -> _Pkey:
        """One key from DER, which must be consumed exactly and must come out as an SM2 key."""
        if not isinstance(der, bytes) or not 0 < len(der) <= _MAX_KEY_DER:
            raise KeyFormatError(f"{what} DER must be 1..{_MAX_KEY_DER} bytes")
        c = self._c
        buf = ctypes.create_string_buffer(der, len(der))
        start = ctypes.addressof(buf)
        cursor = c_void_p(start)
        try:
            ptr = int(decoder(None, byref(cursor), len(der)) or 0)
        finally:
            ctypes.memset(buf, 0, len(der))  # the private key's copy in C-visible memory
        if not ptr:
            raise KeyFormatError(self._drain_errors(f"reading the {what}"))
        pkey = _Pkey(ptr, c.EVP_PKEY_free)  # owned from here on: freed even if a check below fails
        if (cursor.value or 0) - start != len(der):
            raise KeyFormatError(f"libcrypto read the {what} but left bytes over")
        if c.EVP_PKEY_is_a(ptr, b"SM2") != 1:
            c.ERR_clear_error()
            raise KeyFormatError(f"libcrypto did not read an SM2 {what} (is its curve SM2?)")
        return pkey

    def _check(self, pkey: _Pkey, check: Any, what: str) -> None:
        c = self._c
        ctx = int(c.EVP_PKEY_CTX_new_from_pkey(None, pkey.ptr, None) or 0)
        if not ctx:
            raise KeyFormatError(self._drain_errors("creating a key context"))
        try:
            if check(ctx) != 1:
                raise KeyFormatError(self._drain_errors(what))
        finally:
            c.EVP_PKEY_CTX_free(ctx)

    def load_private(self, pkcs8_der: bytes) -> _Pkey:
        """A private key from PKCS#8 DER; libcrypto must find d and the stored public key consistent."""
        pkey = self._decode(self._c.d2i_AutoPrivateKey, pkcs8_der, "private key")
        self._check(pkey, self._c.EVP_PKEY_pairwise_check, "checking that the public key is d·G")
        return pkey

    def load_public(self, spki_der: bytes) -> _Pkey:
        """A public key from SubjectPublicKeyInfo DER; libcrypto must find it on the curve, of order n."""
        pkey = self._decode(self._c.d2i_PUBKEY, spki_der, "public key")
        self._check(pkey, self._c.EVP_PKEY_public_check, "checking the public key")
        return pkey

    # ------------------------------------------------------------------------------ sign / verify
    @contextmanager
    def _digest_ctx(self, pkey: _Pkey, user_id: bytes) -> Iterator[int]:
        """An ``EVP_MD_CTX`` whose key context carries the SM2 user ID; both freed on exit."""
        c = self._c
        pctx = mctx = 0
        try:
            pctx = int(c.EVP_PKEY_CTX_new_from_pkey(None, pkey.ptr, None) or 0)
            if not pctx or c.EVP_PKEY_CTX_set1_id(pctx, user_id, len(user_id)) != 1:
                raise SignatureError(self._drain_errors("setting the SM2 user ID"))
            mctx = int(c.EVP_MD_CTX_new() or 0)
            if not mctx:
                raise SignatureError(self._drain_errors("creating a digest context"))
            c.EVP_MD_CTX_set_pkey_ctx(mctx, pctx)  # mctx borrows pctx: free mctx first, then pctx
            yield mctx
        finally:
            if mctx:
                c.EVP_MD_CTX_free(mctx)
            if pctx:
                c.EVP_PKEY_CTX_free(pctx)

    def sign(self, pkey: _Pkey, user_id: bytes, message: bytes) -> bytes:
        """DER signature of SM3(Z‖message); OpenSSL draws the nonce from its own DRBG."""
        c = self._c
        with self._digest_ctx(pkey, user_id) as mctx:
            if c.EVP_DigestSignInit(mctx, None, self._sm3, None, pkey.ptr) != 1:
                raise SignatureError(self._drain_errors("starting an SM2 signature"))
            buf = ctypes.create_string_buffer(_SIGNATURE_BUFFER)
            size = c_size_t(_SIGNATURE_BUFFER)
            if c.EVP_DigestSign(mctx, buf, byref(size), message, len(message)) != 1:
                raise SignatureError(self._drain_errors("SM2 signing"))
            if not 0 < size.value <= _SIGNATURE_BUFFER:
                raise SignatureError(f"libcrypto returned an SM2 signature of {size.value} bytes")
            return buf.raw[: size.value]

    def verify(self, pkey: _Pkey, user_id: bytes, message: bytes, signature: bytes) -> bool:
        """True only when EVP_DigestVerify says 1; 0 (bad signature) and errors are both False."""
        c = self._c
        with self._digest_ctx(pkey, user_id) as mctx:
            ok = bool(
                c.EVP_DigestVerifyInit(mctx, None, self._sm3, None, pkey.ptr) == 1
                and c.EVP_DigestVerify(mctx, signature, len(signature), message, len(message)) == 1
            )
        if not ok:
            c.ERR_clear_error()
        return ok


def load_libcrypto(names: tuple[str, ...] = LIBRARY_NAMES) -> Libcrypto:
    """The first of ``names`` that loads as OpenSSL >= 3; BackendUnavailable listing why each failed."""
    reasons: list[str] = []
    for name in names:
        try:
            return Libcrypto(name)
        except BackendUnavailable as exc:
            reasons.append(str(exc))
    raise BackendUnavailable("no usable libcrypto: " + "; ".join(reasons or ["no library names given"]))


# ------------------------------------------------------------------------------ signer / verifier
class LibcryptoSm2Verifier:
    """SM2 verification by OpenSSL under one public key and user ID (an :class:`edge.signing.Verifier`).

    Accepts exactly what :class:`edge.sm2.GmsslSm2Verifier` accepts: the signature is parsed by the
    same strict DER reader (1 <= r, s < n, r + s != n) before OpenSSL, which checks all of it again.
    """

    __slots__ = ("_key_id", "_lib", "_pem", "_pkey", "_public_key", "_user_id")

    def __init__(self, public_key: Sm2PublicKey, user_id: bytes = DEFAULT_SM2_ID, *, lib: Libcrypto) -> None:
        if not isinstance(public_key, Sm2PublicKey):
            raise TypeError("public_key must be an Sm2PublicKey")
        if not isinstance(lib, Libcrypto):
            raise TypeError("lib must be a Libcrypto")
        self._user_id = _check_user_id(user_id)
        if len(self._user_id) > MAX_ID_BYTES:
            raise ValueError(f"OpenSSL's SM2 takes user IDs of at most {MAX_ID_BYTES} bytes")
        self._public_key = public_key
        self._key_id = public_key.key_id
        self._pem = public_key.pem()
        self._lib = lib
        self._pkey = self._load(lib)

    def _load(self, lib: Libcrypto) -> _Pkey:
        return lib.load_public(self._public_key.spki_der())

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

    def verify(self, message: bytes, signature: bytes) -> bool:
        """True only for a strict-DER signature with 1 <= r, s < n that OpenSSL verifies; never raises."""
        try:
            msg, sig = _as_bytes(message), _as_bytes(signature)
            if msg is None or sig is None:
                return False
            r, s = decode_signature(sig)
            if (r + s) % N == 0:  # t = 0; OpenSSL refuses it too
                return False
            return self._lib.verify(self._pkey, self._user_id, msg, sig)
        except Exception:  # a verifier answers "no" to junk; it is fed untrusted bytes
            return False


class LibcryptoSm2Signer(LibcryptoSm2Verifier):
    """SM2 signing by OpenSSL (an :class:`edge.signing.Signer`): nonce from OpenSSL's DRBG, k·G in
    constant time, so signing time does not depend on the nonce."""

    __slots__ = ("_private_key",)

    def __init__(self, private_key: Sm2PrivateKey, user_id: bytes = DEFAULT_SM2_ID, *, lib: Libcrypto) -> None:
        if not isinstance(private_key, Sm2PrivateKey):
            raise TypeError("private_key must be an Sm2PrivateKey")
        self._private_key = private_key
        super().__init__(private_key.public_key, user_id, lib=lib)

    def _load(self, lib: Libcrypto) -> _Pkey:
        return lib.load_private(self._private_key.pkcs8_der())

    @property
    def private_key(self) -> Sm2PrivateKey:
        return self._private_key

    def private_key_pem(self) -> str:
        return self._private_key.pem()

    def sign(self, message: bytes) -> bytes:
        """DER ``SEQUENCE{r, s}``; checked with the strict reader before it leaves this method."""
        msg = _as_bytes(message)
        if msg is None:
            raise TypeError("message must be bytes")
        sig = self._lib.sign(self._pkey, self._user_id, msg)
        decode_signature(sig)  # SignatureError rather than hand out anything but strict DER in range
        return sig
