"""Bearer tokens for the admin API, stored only as hashes.

A token is 32 random bytes (URL-safe text), shown once when made; the file keeps ``name sha256:<hex>`` per
line, 0600. A high-entropy token needs no slow password hash: SHA-256 makes a stolen file useless for
logging in. Checking compares the presented token's hash against every stored one with
``hmac.compare_digest`` (no early exit on a match), so timing says nothing about which bytes matched.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import GatewayError

PREFIX = "tiyi_"
MAX_TOKEN_CHARS = 128  # a presented token longer than any we issue is refused before hashing
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_LINE = re.compile(r"(?P<name>\S+) sha256:(?P<hash>[0-9a-f]{64})")


class TokenError(GatewayError, ValueError):
    """A token file or name a user got wrong."""


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True, slots=True)
class TokenStore:
    """The hashed tokens of one file, read at once (``load``) and re-read when the file changes."""

    path: Path
    hashes: tuple[tuple[str, bytes], ...]
    mtime_ns: int | None

    @classmethod
    def load(cls, path: Path) -> TokenStore:
        """Every line must parse: a damaged file is refused whole, never half-trusted."""
        try:
            st = path.stat()
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls(path, (), None)
        except (OSError, UnicodeDecodeError) as exc:
            raise TokenError(f"{path}: cannot read the API token file ({exc})") from None
        hashes = []
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            m = _LINE.fullmatch(line.strip())
            if m is None:
                raise TokenError(f"{path}:{i}: not 'NAME sha256:<64 hex digits>'")
            hashes.append((m["name"], bytes.fromhex(m["hash"])))
        return cls(path, tuple(hashes), st.st_mtime_ns)

    def fresh(self) -> TokenStore:
        """This store, or the file's new contents if it changed (a token added while the gateway runs)."""
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            mtime = None
        return self if mtime == self.mtime_ns else TokenStore.load(self.path)

    def check(self, presented: str) -> str | None:
        """The name of the token ``presented`` is, or None; constant time over the stored hashes."""
        if not presented or len(presented) > MAX_TOKEN_CHARS:
            return None
        h = _hash(presented)
        found = None
        for name, stored in self.hashes:
            if hmac.compare_digest(h, stored) and found is None:
                found = name
        return found

    @property
    def names(self) -> list[str]:
        return [n for n, _ in self.hashes]


def add_token(path: Path, name: str) -> str:
    """Make a token named ``name``, store its hash in ``path`` (0600) and return the token itself, once."""
    if not _NAME.fullmatch(name):
        raise TokenError(f"{name!r}: a token name is 1-64 letters, digits, '_', '.' or '-'")
    store = TokenStore.load(path)
    if name in store.names:
        raise TokenError(f"a token named {name!r} exists already in {path}; remove it first")
    token = PREFIX + secrets.token_urlsafe(32)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as fh:
        fh.write(f"{name} sha256:{_hash(token).hex()}\n")
    path.chmod(0o600)
    return token


def remove_token(path: Path, name: str) -> bool:
    store = TokenStore.load(path)
    if name not in store.names:
        return False
    lines = [f"{n} sha256:{h.hex()}\n" for n, h in store.hashes if n != name]
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.writelines(lines)
    os.replace(tmp, path)
    return True
