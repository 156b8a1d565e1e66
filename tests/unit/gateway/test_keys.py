"""Key files: 0600 private key born with that mode in a 0700 directory, never overwritten silently."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.sm2 import Sm2PrivateKey, default_backend, load_public_key_pem
from edge.sm2_libcrypto import LibcryptoSm2Signer
from gateway.errors import GatewayError
from gateway.keys import KeyFileError, generate_keypair, load_signer


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.fixture(params=[0o000, 0o022, 0o077], ids=lambda u: f"umask {u:03o}")
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def test_generate_modes_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    directory = tmp_path / "state" / "keys"
    priv, pub = generate_keypair(directory)
    assert (priv.name, pub.name) == ("gateway.key", "gateway.pub")
    assert (mode(priv), mode(pub), mode(directory)) == (0o600, 0o644, 0o700)
    assert sorted(p.name for p in directory.iterdir()) == ["gateway.key", "gateway.pub"]  # no temp files left


def test_loaded_signer_signs_verifiably(tmp_path: Path) -> None:
    priv, pub = generate_keypair(tmp_path / "keys")
    signer = load_signer(priv)
    verifier = load_public_key_pem(pub.read_text(encoding="ascii"))
    assert verifier.key_id == signer.key_id
    assert signer.public_key_pem() == pub.read_text(encoding="ascii")
    sig = signer.sign(b"manifest")
    assert verifier.verify(b"manifest", sig)
    assert not verifier.verify(b"manifest!", sig)
    assert priv.read_text(encoding="ascii").startswith("-----BEGIN PRIVATE KEY-----\n")
    assert pub.read_text(encoding="ascii").startswith("-----BEGIN PUBLIC KEY-----\n")


def test_the_gateway_signs_through_libcrypto_where_it_is_available(tmp_path: Path) -> None:
    """Debian 12 / Raspberry Pi OS Bookworm ship libcrypto.so.3 with SM2, and so does this machine."""
    priv, _ = generate_keypair(tmp_path / "keys")
    assert default_backend().name == "libcrypto", default_backend().note
    assert type(load_signer(priv)) is LibcryptoSm2Signer


def test_private_key_is_never_created_readable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file is created by open(O_CREAT|O_EXCL) with its final mode: no window with wider rights."""
    calls: list[tuple[str, int, int]] = []
    real_open = os.open

    def spy(path: Any, flags: int, mode: int = 0o777, *args: Any, **kwargs: Any) -> int:
        calls.append((os.fspath(path), flags, mode))
        return real_open(path, flags, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    generate_keypair(tmp_path / "keys")
    created = [(p, f, m) for p, f, m in calls if f & os.O_CREAT]
    assert created, calls
    for path, flags, file_mode in created:
        assert flags & os.O_EXCL, path
        if "gateway.key" in path:
            assert file_mode == 0o600, path
    assert any("gateway.key" in p and m == 0o600 for p, _, m in created)


def test_never_overwrites_without_force(tmp_path: Path) -> None:
    priv, pub = generate_keypair(tmp_path)
    before = priv.read_bytes(), pub.read_bytes()
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        generate_keypair(tmp_path)
    assert (priv.read_bytes(), pub.read_bytes()) == before
    generate_keypair(tmp_path, force=True)
    assert priv.read_bytes() != before[0] and pub.read_bytes() != before[1]
    assert (mode(priv), mode(pub)) == (0o600, 0o644)
    assert load_signer(priv).public_key_pem() == pub.read_text(encoding="ascii")


def test_force_replaces_a_symlink_not_its_target(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.key"
    target.write_text("keep me")
    (tmp_path / "keys").mkdir(mode=0o700)
    (tmp_path / "keys" / "gateway.key").symlink_to(target)
    with pytest.raises(KeyFileError):
        generate_keypair(tmp_path / "keys")
    priv, _ = generate_keypair(tmp_path / "keys", force=True)
    assert not priv.is_symlink() and target.read_text() == "keep me"


def test_a_stale_public_key_alone_is_replaced(tmp_path: Path) -> None:
    (tmp_path / "gateway.pub").write_text("stale")
    priv, pub = generate_keypair(tmp_path)
    assert load_signer(priv).public_key_pem() == pub.read_text(encoding="ascii")


def test_without_hard_links(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """FAT-formatted cards have no link(): fall back to O_EXCL at the final name, still no overwrite."""

    def no_link(*_args: Any, **_kwargs: Any) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_link)
    priv, pub = generate_keypair(tmp_path)
    assert (mode(priv), mode(pub)) == (0o600, 0o644)
    load_signer(priv)
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        generate_keypair(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gateway.key", "gateway.pub"]


def test_refuses_a_directory_others_can_write(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(KeyFileError, match="chmod 700"):
        generate_keypair(shared)
    assert list(shared.iterdir()) == []
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(KeyFileError):
        generate_keypair(not_a_dir)


@pytest.mark.parametrize("bad_mode", [0o644, 0o640, 0o604, 0o660, 0o602, 0o610])
def test_load_refuses_key_others_can_access(tmp_path: Path, bad_mode: int) -> None:
    priv, _ = generate_keypair(tmp_path)
    priv.chmod(bad_mode)
    with pytest.raises(KeyFileError, match="chmod 600") as info:
        load_signer(priv)
    assert isinstance(info.value, GatewayError) and isinstance(info.value, PermissionError)
    assert f"{bad_mode:04o}" in str(info.value)


def test_load_accepts_owner_only_modes(tmp_path: Path) -> None:
    priv, _ = generate_keypair(tmp_path)
    priv.chmod(0o400)
    assert load_signer(priv).key_id


def test_load_reports_missing_malformed_and_odd_files(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="tiyi keys generate"):
        load_signer(tmp_path / "missing.key")
    bad = tmp_path / "bad.key"
    bad.write_text("hello")
    bad.chmod(0o600)
    with pytest.raises(KeyFileError, match=r"bad\.key"):
        load_signer(bad)
    public_only = tmp_path / "pub.key"
    public_only.write_text(Sm2PrivateKey(5).public_key.pem())
    public_only.chmod(0o600)
    with pytest.raises(KeyFileError):
        load_signer(public_only)
    huge = tmp_path / "huge.key"
    huge.write_bytes(b"A" * (1 << 20))
    huge.chmod(0o600)
    with pytest.raises(KeyFileError, match="too large"):
        load_signer(huge)
    a_dir = tmp_path / "dir.key"
    a_dir.mkdir(mode=0o700)
    with pytest.raises(KeyFileError):
        load_signer(a_dir)


def test_load_reads_a_key_written_elsewhere(tmp_path: Path) -> None:
    """A PKCS#8 key from another tool (here: our encoder standing in for OpenSSL) loads if its mode is 0600."""
    key = Sm2PrivateKey(123456789)
    path = tmp_path / "imported.key"
    path.write_text(key.pem())
    path.chmod(0o600)
    assert load_signer(path).key_id == key.public_key.key_id


def test_load_does_not_hang_on_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.key"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(KeyFileError, match="regular file"):
        load_signer(fifo)
