"""SM2 interop with the OpenSSL CLI, an independent implementation, over hundreds of fresh keys each way.

Agreement on the KAT alone would not catch per-key bugs (gmssl's ``lstrip("04")`` breaks 1 key in 8),
so each direction uses many random keys plus keys whose X starts with the digits gmssl mishandles.
"""

from __future__ import annotations

import random
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from edge.signing import DEFAULT_SM2_ID
from edge.sm2 import (
    GmsslSm2Signer,
    GmsslSm2Verifier,
    N,
    Sm2PrivateKey,
    Sm2PublicKey,
    decode_signature,
    generate_private_key,
)
from edge.sm3 import sm3

KEYS = 200  # per direction
WORKERS = 4  # openssl processes in flight; the work is mostly process start-up
DISTID = f"distid:{DEFAULT_SM2_ID.decode()}"
RISKY_PREFIXES = ("0", "4", "04", "40", "00", "44")  # X digits gmssl's lstrip("04") would eat


def openssl(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["openssl", *args], input=stdin, capture_output=True, check=False, timeout=60)


@pytest.fixture(scope="module", autouse=True)
def _openssl_with_sm2() -> None:
    if shutil.which("openssl") is None:
        pytest.fail("the openssl CLI is not installed (apt-get install openssl); it is the reference for SM2 interop")
    if openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:SM2").returncode != 0:
        pytest.fail("this openssl has no SM2 (need OpenSSL >= 3.0 built with SM2)")


def run_parallel(fn: Callable[[int], None], items: Iterable[int]) -> None:
    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(fn, items))


def x_hex(pub: Sm2PublicKey) -> str:
    return f"{pub.x:064x}"


def _risky_keys() -> list[Sm2PrivateKey]:
    """Keys whose X starts with 0, 4, 04, ...; searched with a seeded RNG so the run is repeatable."""
    rng, found = random.Random(20240601), dict[str, Sm2PrivateKey]()
    while len(found) < len(RISKY_PREFIXES):
        key = generate_private_key(rng.randrange)
        for prefix in RISKY_PREFIXES:
            if prefix not in found and x_hex(key.public_key).startswith(prefix):
                found[prefix] = key
    return list(found.values())


def _mutations(sig: bytes) -> dict[str, bytes]:
    """Signatures that must be refused by both sides: malleated, re-encoded or corrupted."""
    r, s = decode_signature(sig)

    def der_int(v: int, pad: bool = False) -> bytes:
        body = (b"\x00" if pad else b"") + v.to_bytes(v.bit_length() // 8 + 1, "big")
        return b"\x02" + bytes([len(body)]) + body

    def seq(body: bytes) -> bytes:
        return b"\x30" + bytes([len(body)]) + body

    return {
        "s + n": seq(der_int(r) + der_int(s + N)),
        "n - s": seq(der_int(r) + der_int(N - s)),
        "non-minimal r": seq(der_int(r, pad=True) + der_int(s)),
        "trailing byte": sig + b"\x00",
        "last byte flipped": sig[:-1] + bytes([sig[-1] ^ 1]),
        "raw r||s": r.to_bytes(32, "big") + s.to_bytes(32, "big"),
    }


# --------------------------------------------------------------------------------- we sign, OpenSSL checks
def test_openssl_verifies_our_signatures_and_reads_our_pem(tmp_path: Path) -> None:
    keys = _risky_keys()
    keys += [generate_private_key() for _ in range(KEYS - len(keys))]

    def check(i: int) -> None:
        key, d = keys[i], tmp_path / f"ours{i}"
        d.mkdir()
        signer = GmsslSm2Signer(key)
        msg = secrets.token_bytes(i % 150)  # i = 0: the empty message
        sig = signer.sign(msg)
        k, p, m, s = d / "k.pem", d / "p.pem", d / "m.bin", d / "s.der"
        k.write_text(signer.private_key_pem())
        p.write_text(signer.public_key_pem())
        m.write_bytes(msg)
        s.write_bytes(sig)
        verify = ("pkeyutl", "-verify", "-rawin", "-digest", "sm3", "-pubin", "-inkey", str(p), "-in", str(m))

        r = openssl(*verify, "-sigfile", str(s), "-pkeyopt", DISTID)
        assert r.returncode == 0, (i, x_hex(key.public_key), r.stdout, r.stderr)
        # OpenSSL reads our PKCS#8, finds it consistent, derives our public key and re-encodes it identically.
        r = openssl("pkey", "-in", str(k), "-check", "-pubout")
        assert r.returncode == 0 and r.stdout.decode() == "Key is valid\n" + signer.public_key_pem(), (i, r.stderr)
        r = openssl("pkey", "-in", str(k))
        assert r.returncode == 0 and r.stdout.decode() == signer.private_key_pem(), i
        if i % 10 == 0:
            r = openssl("pkey", "-pubin", "-in", str(p), "-pubcheck")
            assert r.returncode == 0 and r.stdout.decode().endswith(signer.public_key_pem()), i
            r = openssl("dgst", "-sm3", "-sigopt", DISTID, "-verify", str(p), "-signature", str(s), str(m))
            assert r.returncode == 0 and b"Verified OK" in r.stdout, (i, r.stderr)
            r = openssl(*verify, "-sigfile", str(s))  # OpenSSL's default ID is empty: Z differs
            assert r.returncode != 0, i
        if i % 20 == 0:
            for name, bad in _mutations(sig).items():
                (d / "bad.der").write_bytes(bad)
                r = openssl(*verify, "-sigfile", str(d / "bad.der"), "-pkeyopt", DISTID)
                assert r.returncode != 0, (i, name)
                assert signer.verify(msg, bad) is False, (i, name)

    run_parallel(check, range(len(keys)))


# --------------------------------------------------------------------------------- OpenSSL signs, we check
def test_we_verify_openssl_signatures_and_read_its_pem(tmp_path: Path) -> None:
    risky: list[str] = []

    def check(i: int) -> None:
        d = tmp_path / f"theirs{i}"
        d.mkdir()
        k, p, m = d / "k.pem", d / "p.pem", d / "m.bin"
        r = openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:SM2", "-out", str(k))
        assert r.returncode == 0, r.stderr
        assert openssl("pkey", "-in", str(k), "-pubout", "-out", str(p)).returncode == 0
        msg = secrets.token_bytes(i % 150)
        m.write_bytes(msg)
        sign = ("pkeyutl", "-sign", "-rawin", "-digest", "sm3", "-inkey", str(k), "-in", str(m))
        r = openssl(*sign, "-pkeyopt", DISTID, "-out", str(d / "s.der"))
        assert r.returncode == 0, r.stderr
        sig = (d / "s.der").read_bytes()

        key, pub = Sm2PrivateKey.from_pem(k.read_text()), Sm2PublicKey.from_pem(p.read_bytes())
        assert key.public_key == pub, i
        assert key.pem() == k.read_text() and pub.pem() == p.read_text(), i  # byte-identical re-encoding
        if x_hex(pub)[0] in "04":
            risky.append(x_hex(pub))
        verifier = GmsslSm2Verifier(pub)
        assert verifier.verify(msg, sig), (i, x_hex(pub), sig.hex())
        assert GmsslSm2Signer(key).verify(msg, sig), i
        assert not verifier.verify(msg + b"\x00", sig), i
        if i % 10 == 0:
            # Signed with OpenSSL's default (empty) ID, and with another ID: refused under ours, accepted
            # under the ID actually used, which shows the only difference is Z.
            for opts, uid in (((), b""), (("-pkeyopt", "distid:alice@example.org"), b"alice@example.org")):
                out = d / "other.der"
                assert openssl(*sign, *opts, "-out", str(out)).returncode == 0
                other = out.read_bytes()
                assert verifier.verify(msg, other) is False, (i, uid)
                assert GmsslSm2Verifier(pub, uid).verify(msg, other) is True, (i, uid)
        if i % 20 == 0:
            for name, bad in _mutations(sig).items():
                assert verifier.verify(msg, bad) is False, (i, name)

    run_parallel(check, range(KEYS))
    # Expected ~KEYS/8 such keys; none in 200 has probability (7/8)^200 ~ 2.5e-12.
    assert risky, "no OpenSSL key with X starting 0 or 4 was exercised"


def test_openssl_sm3_matches_ours(tmp_path: Path) -> None:
    for data in (b"", b"abc", secrets.token_bytes(1000)):
        out = openssl("dgst", "-sm3", "-r", stdin=data).stdout.decode().split()[0]
        assert out == sm3(data).hex()
    assert sm3(b"abc").hex() == "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
