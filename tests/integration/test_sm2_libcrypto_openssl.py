"""The libcrypto backend against the OpenSSL CLI, each way, over fresh keys.

Both sit on the same library, so agreement here shows the binding (key import, user ID, DER) is right,
not that OpenSSL's SM2 is: that is what the GM/T vector and the gmssl cross-tests in
``tests/unit/edge/test_sm2_libcrypto.py`` are for.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from edge.sm2 import Sm2PrivateKey, Sm2PublicKey, generate_private_key
from edge.sm2_libcrypto import LibcryptoSm2Signer, LibcryptoSm2Verifier, load_libcrypto
from tests.integration.test_sm2_openssl import (  # noqa: F401 - the fixture checks the CLI has SM2
    DISTID,
    _mutations,
    _openssl_with_sm2,
    openssl,
    run_parallel,
)

KEYS = 60  # per direction
LIB = load_libcrypto()


def test_openssl_cli_verifies_libcrypto_signatures(tmp_path: Path) -> None:
    def check(i: int) -> None:
        d = tmp_path / f"ours{i}"
        d.mkdir()
        signer = LibcryptoSm2Signer(generate_private_key(), lib=LIB)
        msg = secrets.token_bytes(i % 150)
        sig = signer.sign(msg)
        p, m, s = d / "p.pem", d / "m.bin", d / "s.der"
        p.write_text(signer.public_key_pem())
        m.write_bytes(msg)
        s.write_bytes(sig)
        verify = ("pkeyutl", "-verify", "-rawin", "-digest", "sm3", "-pubin", "-inkey", str(p), "-in", str(m))
        r = openssl(*verify, "-sigfile", str(s), "-pkeyopt", DISTID)
        assert r.returncode == 0, (i, r.stdout, r.stderr)
        if i % 10 == 0:
            assert openssl(*verify, "-sigfile", str(s)).returncode != 0, i  # CLI default (empty) ID
            for name, bad in _mutations(sig).items():
                (d / "bad.der").write_bytes(bad)
                assert openssl(*verify, "-sigfile", str(d / "bad.der"), "-pkeyopt", DISTID).returncode != 0, name
                assert signer.verify(msg, bad) is False, (i, name)

    run_parallel(check, range(KEYS))


def test_libcrypto_verifies_openssl_cli_signatures(tmp_path: Path) -> None:
    def check(i: int) -> None:
        d = tmp_path / f"theirs{i}"
        d.mkdir()
        k, m = d / "k.pem", d / "m.bin"
        assert (
            openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:SM2", "-out", str(k)).returncode == 0
        )
        pub = openssl("pkey", "-in", str(k), "-pubout").stdout
        msg = secrets.token_bytes(i % 150)
        m.write_bytes(msg)
        sign = ("pkeyutl", "-sign", "-rawin", "-digest", "sm3", "-inkey", str(k), "-in", str(m))
        r = openssl(*sign, "-pkeyopt", DISTID, "-out", str(d / "s.der"))
        assert r.returncode == 0, r.stderr
        sig = (d / "s.der").read_bytes()
        verifier = LibcryptoSm2Verifier(Sm2PublicKey.from_pem(pub), lib=LIB)
        assert verifier.verify(msg, sig), i
        assert LibcryptoSm2Signer(Sm2PrivateKey.from_pem(k.read_text()), lib=LIB).verify(msg, sig), i
        assert verifier.verify(msg + b"\x00", sig) is False, i
        if i % 10 == 0:
            for opts, uid in (((), b""), (("-pkeyopt", "distid:alice@example.org"), b"alice@example.org")):
                out = d / "other.der"
                assert openssl(*sign, *opts, "-out", str(out)).returncode == 0
                other = out.read_bytes()
                assert verifier.verify(msg, other) is False, (i, uid)
                assert LibcryptoSm2Verifier(verifier.public_key, uid, lib=LIB).verify(msg, other) is True, (i, uid)
            for name, bad in _mutations(sig).items():
                assert verifier.verify(msg, bad) is False, (i, name)

    run_parallel(check, range(KEYS))
