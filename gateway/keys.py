"""The gateway's SM2 key on disk: OpenSSL-compatible PEM, private key 0600 from its first byte.

The pure core (:mod:`edge.sm2`) only encodes keys; the file system rules live here. Files are written
to a temporary name created with ``O_EXCL`` and mode 0600, made durable, then linked (no overwrite) or
renamed (``force``) into place, so no reader ever sees a partial key, the private key is never
readable by others even for an instant, and an existing identity is never clobbered by accident.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path

from edge.errors import KeyFormatError
from edge.signing import DEFAULT_SM2_ID
from edge.sm2 import Sm2PrivateKey, Sm2Signer, generate_private_key, make_signer
from gateway.errors import GatewayError

PRIVATE_NAME = "gateway.key"
PUBLIC_NAME = "gateway.pub"
_MAX_KEY_FILE = 64 * 1024  # a PEM key is ~250 bytes; anything huge is not a key
# link() is not available everywhere (FAT/exFAT cards, some FUSE mounts): fall back to O_EXCL in place.
_NO_HARDLINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EMLINK, errno.ENOSYS}


class KeyFileError(GatewayError, PermissionError):
    """A key file is unsafe (permissions, would overwrite), missing, unreadable or malformed."""


def _mode(st: os.stat_result) -> str:
    return f"{stat.S_IMODE(st.st_mode):04o}"


def _prepare_directory(directory: Path) -> None:
    """Create the key directory 0700; refuse an existing one that others may write to (they could swap keys)."""
    try:
        if not directory.exists():
            directory.mkdir(mode=0o700, parents=True)
            os.chmod(directory, 0o700)  # mkdir's mode is filtered by the umask
        st = directory.stat()
    except OSError as exc:
        raise KeyFileError(f"cannot create key directory {directory}: {exc.strerror or exc}") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise KeyFileError(f"{directory} is not a directory")
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        raise KeyFileError(
            f"key directory {directory} is writable by group/others (mode {_mode(st)}); run: chmod 700 {directory}"
        )


def _write_fd(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create_exclusive(path: Path, data: bytes, mode: int) -> None:
    """Write a new file that is born with ``mode`` (O_CREAT|O_EXCL: never pre-existing, never wider)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)  # exact mode whatever the umask (it can only have narrowed it)
        _write_fd(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _exists(path: Path) -> KeyFileError:
    return KeyFileError(
        f"{path} already exists; refusing to overwrite a signing key (use --force to replace "
        "it, which changes the gateway's identity for platforms that pinned it)"
    )


def _install(path: Path, data: bytes, mode: int, *, replace: bool) -> None:
    """Put ``data`` at ``path`` atomically; without ``replace`` an existing file is an error."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    _create_exclusive(tmp, data, mode)
    try:
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # atomic and fails if path exists, unlike rename
            except OSError as exc:
                if exc.errno not in _NO_HARDLINKS:
                    raise
                _create_exclusive(path, data, mode)
    except FileExistsError as exc:
        raise _exists(path) from exc
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def generate_keypair(directory: Path, force: bool = False) -> tuple[Path, Path]:
    """Write a new ``gateway.key`` (PKCS#8, 0600) and ``gateway.pub`` (SPKI, 0644) into ``directory``.

    Refuses to replace an existing private key unless ``force``; returns (private path, public path).
    """
    directory = Path(directory)
    _prepare_directory(directory)
    priv, pub = directory / PRIVATE_NAME, directory / PUBLIC_NAME
    if not force and os.path.lexists(priv):  # fail early; _install re-checks atomically
        raise _exists(priv)
    key = generate_private_key()
    try:
        _install(priv, key.pem().encode("ascii"), 0o600, replace=force)
        _install(pub, key.public_key.pem().encode("ascii"), 0o644, replace=True)
    except KeyFileError:
        raise
    except OSError as exc:
        raise KeyFileError(f"cannot write keys in {directory}: {exc.strerror or exc}") from exc
    return priv, pub


def load_signer(path: Path, user_id: bytes = DEFAULT_SM2_ID) -> Sm2Signer:
    """Load the private key as a signer (libcrypto backend where it works, see :func:`edge.sm2.make_signer`),
    refusing a file that group or others can access."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)  # a FIFO must not hang us
    except FileNotFoundError as exc:
        raise KeyFileError(f"no signing key at {path}; create one with `tiyi keys generate`") from exc
    except OSError as exc:
        raise KeyFileError(f"cannot open signing key {path}: {exc.strerror or exc}") from exc
    try:
        st = os.fstat(fd)  # the file we opened, not whatever the name points to by now
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"signing key {path} is not a regular file")
        if st.st_mode & 0o077:
            raise KeyFileError(
                f"signing key {path} is accessible by group/others (mode {_mode(st)}); run: chmod 600 {path}"
            )
        data = b""
        while len(data) <= _MAX_KEY_FILE and (chunk := os.read(fd, _MAX_KEY_FILE + 1 - len(data))):
            data += chunk
    except OSError as exc:
        if isinstance(exc, KeyFileError):
            raise
        raise KeyFileError(f"cannot read signing key {path}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
    if len(data) > _MAX_KEY_FILE:
        raise KeyFileError(f"{path} is too large to be an SM2 key")
    try:
        return make_signer(Sm2PrivateKey.from_pem(data), user_id)
    except KeyFormatError as exc:
        raise KeyFileError(f"{path}: {exc}") from exc
