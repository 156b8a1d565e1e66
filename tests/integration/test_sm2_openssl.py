"""SM2 interop with the OpenSSL CLI, an independent implementation, in both directions."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from edge.signing import DEFAULT_SM2_ID
from edge.sm2 import Sm2Signer, generate_signer, load_private_key_pem

KEYS = 200
DISTID = f"distid:{DEFAULT_SM2_ID.decode()}"


def run(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["openssl", *args], capture_output=True, check=False)


def _ours_then_openssl(i: int, tmp: Path) -> None:
    d = tmp / f"o{i}"
    d.mkdir()
    s = generate_signer() if i % 3 else _signer_with_leading_digit("04"[i % 2])
    msg = f"manifest {i}".encode() * (i % 7 + 1)
    (d / "k.pem").write_text(s.private_key_pem())
    (d / "p.pem").write_text(s.public_key_pem())
    (d / "m.bin").write_bytes(msg)
    (d / "s.der").write_bytes(s.sign(msg))
    r = run("pkeyutl", "-verify", "-rawin", "-digest", "sm3", "-pubin", "-inkey", str(d / "p.pem"),
            "-in", str(d / "m.bin"), "-sigfile", str(d / "s.der"), "-pkeyopt", DISTID)
    assert r.returncode == 0, (i, r.stderr)
    # OpenSSL reads our private key and derives the same public key.
    pub = run("pkey", "-in", str(d / "k.pem"), "-pubout")
    assert pub.returncode == 0 and pub.stdout.decode() == s.public_key_pem()
    if i % 10 == 0:
        r = run("dgst", "-sm3", "-sigopt", DISTID, "-verify", str(d / "p.pem"), "-signature", str(d / "s.der"),
                str(d / "m.bin"))
        assert r.returncode == 0, r.stderr


def _openssl_then_ours(i: int, tmp: Path) -> None:
    d = tmp / f"s{i}"
    d.mkdir()
    gen = run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:SM2", "-out", str(d / "k.pem"))
    assert gen.returncode == 0
    msg = f"record {i}".encode() * (i % 5 + 1)
    (d / "m.bin").write_bytes(msg)
    r = run("pkeyutl", "-sign", "-rawin", "-digest", "sm3", "-inkey", str(d / "k.pem"), "-in", str(d / "m.bin"),
            "-pkeyopt", DISTID, "-out", str(d / "s.der"))
    assert r.returncode == 0, r.stderr
    s = load_private_key_pem((d / "k.pem").read_text())
    sig = (d / "s.der").read_bytes()
    assert s.verify(msg, sig), i
    assert not s.verify(msg + b"!", sig)
    if i % 10 == 0:
        # Signed by OpenSSL with its default (empty) ID: must not pass as ID 1234567812345678.
        r = run("pkeyutl", "-sign", "-rawin", "-digest", "sm3", "-inkey", str(d / "k.pem"), "-in",
                str(d / "m.bin"), "-out", str(d / "e.der"))
        assert r.returncode == 0
        assert not s.verify(msg, (d / "e.der").read_bytes())
        assert s.verify(msg, (d / "e.der").read_bytes(), uid=b"")


def _signer_with_leading_digit(digit: str) -> Sm2Signer:
    while True:
        s = generate_signer()
        if f"{s.public_key.x:064x}".startswith(digit):
            return s


@pytest.mark.parametrize("direction", [_ours_then_openssl, _openssl_then_ours], ids=["we-sign", "openssl-signs"])
def test_interop(direction, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: direction(i, tmp_path), range(KEYS)))


def test_openssl_rejects_tampered_signature(tmp_path: Path) -> None:
    s = generate_signer()
    (tmp_path / "p.pem").write_text(s.public_key_pem())
    (tmp_path / "m.bin").write_bytes(b"abc")
    sig = bytearray(s.sign(b"abc"))
    sig[-1] ^= 1
    (tmp_path / "s.der").write_bytes(bytes(sig))
    r = run("pkeyutl", "-verify", "-rawin", "-digest", "sm3", "-pubin", "-inkey", str(tmp_path / "p.pem"),
            "-in", str(tmp_path / "m.bin"), "-sigfile", str(tmp_path / "s.der"), "-pkeyopt", DISTID)
    assert r.returncode != 0


def test_openssl_sm3_matches_ours(tmp_path: Path) -> None:
    from edge.sm3 import sm3

    (tmp_path / "abc").write_bytes(b"abc")
    out = run("dgst", "-sm3", "-r", str(tmp_path / "abc")).stdout.decode().split()[0]
    assert out == sm3(b"abc").hex() == "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
