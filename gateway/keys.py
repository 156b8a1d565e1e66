"""The gateway's SM2 key on disk: PKCS#8/SPKI PEM that OpenSSL reads, private key 0600 in a 0700 dir."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from edge.errors import KeyFormatError
from edge.sm2 import Sm2Signer, generate_signer, load_private_key_pem
from gateway.errors import GatewayError

PRIVATE_NAME = "gateway.key"
PUBLIC_NAME = "gateway.pub"


class KeyFileError(GatewayError, PermissionError):
    """A key file is missing, unreadable, malformed or readable by others."""


def _write_new(path: Path, text: str, mode: int) -> None:
    # O_EXCL + mode at creation: the file is never, even briefly, readable by others.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, text.encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(path, mode)


def generate_keypair(directory: Path, force: bool = False) -> tuple[Path, Path]:
    """Write ``gateway.key`` (0600) and ``gateway.pub`` (0644); never overwrite unless ``force``."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    priv, pub = directory / PRIVATE_NAME, directory / PUBLIC_NAME
    if priv.exists() and not force:
        raise KeyFileError(f"{priv} already exists; refusing to overwrite a signing key (use --force to replace it, "
                           "which invalidates the gateway's identity for platforms that pinned it)")
    signer = generate_signer()
    for p in (priv, pub):
        if p.exists():
            p.unlink()
    _write_new(priv, signer.private_key_pem(), 0o600)
    _write_new(pub, signer.public_key_pem(), 0o644)
    return priv, pub


def load_signer(path: Path) -> Sm2Signer:
    """Load the private key, refusing a file that group or others can read."""
    try:
        st = path.stat()
    except OSError as exc:
        raise KeyFileError(f"cannot read signing key {path}: {exc.strerror}") from exc
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise KeyFileError(f"signing key {path} is accessible by group/others (mode {stat.S_IMODE(st.st_mode):o}); "
                           f"run: chmod 600 {path}")
    try:
        return load_private_key_pem(path.read_text(encoding="ascii"))
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"cannot read signing key {path}: {exc}") from exc
    except KeyFormatError as exc:
        raise KeyFileError(f"{path}: {exc}") from exc
