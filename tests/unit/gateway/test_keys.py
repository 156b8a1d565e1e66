"""Key files: OpenSSL-readable PEM, 0600 private key in a 0700 directory, never overwritten silently."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from edge.sm2 import load_public_key_pem
from gateway.keys import KeyFileError, generate_keypair, load_signer


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_generate_writes_private_0600_public_0644_dir_0700(tmp_path: Path) -> None:
    priv, pub = generate_keypair(tmp_path / "keys")
    assert (mode(priv), mode(pub), mode(tmp_path / "keys")) == (0o600, 0o644, 0o700)
    signer = load_signer(priv)
    verifier = load_public_key_pem(pub.read_text())
    assert verifier.key_id == signer.key_id
    assert verifier.verify(b"m", signer.sign(b"m"))


def test_never_overwrites_without_force(tmp_path: Path) -> None:
    priv, _ = generate_keypair(tmp_path)
    before = priv.read_bytes()
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        generate_keypair(tmp_path)
    assert priv.read_bytes() == before
    generate_keypair(tmp_path, force=True)
    assert priv.read_bytes() != before


def test_refuses_a_readable_private_key(tmp_path: Path) -> None:
    priv, _ = generate_keypair(tmp_path)
    priv.chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_signer(priv)


def test_malformed_or_missing_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.key"
    bad.write_text("hello")
    bad.chmod(0o600)
    with pytest.raises(KeyFileError):
        load_signer(bad)
    with pytest.raises(KeyFileError):
        load_signer(tmp_path / "missing.key")
