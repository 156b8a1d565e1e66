"""Each audience's SM4 keys: ``state_dir/keys/audience/<aud>/<kid>.key``, one 0600 file per key.

Key ids are ``k<n>-<8 hex>``: ``n`` counts the audience's keys (the highest encrypts), the random part keeps
an id from ever naming two different keys, even after the state directory is rebuilt from scratch. Older keys
stay: a view that was built but not yet published when the key rotated is rebuilt, byte-identical, under the
key its signed manifest names. Keys reach the platform out of band (``tiyi keys audience export``), never
over MQTT and never in a log.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from edge.errors import CodecError
from edge.record import check_id
from gateway.errors import GatewayError
from gateway.keys import KeyFileError, _install, _prepare_directory

KEY_BYTES = 16  # SM4
_KID = re.compile(r"^k([1-9][0-9]{0,5})-[0-9a-f]{8}$")
_MAX_FILE = 256


class AudienceKeyError(GatewayError, ValueError):
    """An audience's keys are missing, unsafe (permissions) or malformed."""


@dataclass(frozen=True, slots=True)
class AudienceKey:
    kid: str
    key: bytes = b""

    @property
    def number(self) -> int:
        m = _KID.match(self.kid)
        assert m is not None
        return int(m.group(1))

    def __repr__(self) -> str:  # never the key itself, whatever prints this
        return f"AudienceKey({self.kid!r})"


class AudienceKeyring:
    """The keys of one audience, read from disk at each call (a rotation reaches a running gateway)."""

    def __init__(self, key_dir: Path, aud: str) -> None:
        try:
            check_id(aud, "audience id")
        except CodecError as exc:
            raise AudienceKeyError(str(exc)) from None
        self.aud = aud
        self.directory = key_dir / aud

    def kids(self) -> list[str]:
        """Key ids, oldest first (an absent directory: none)."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise AudienceKeyError(f"cannot list {self.directory}: {exc.strerror or exc}") from exc
        kids = [n.removesuffix(".key") for n in names if n.endswith(".key") and _KID.match(n.removesuffix(".key"))]
        return sorted(kids, key=lambda k: AudienceKey(k).number)

    def load(self) -> list[AudienceKey]:
        """Every key, oldest first, each checked (0600, a regular file, 16 bytes of hex)."""
        return [AudienceKey(kid, self._read(kid)) for kid in self.kids()]

    def current(self) -> AudienceKey:
        """The key new views are encrypted with: the newest. None at all is an error (fail closed)."""
        kids = self.kids()
        if not kids:
            raise AudienceKeyError(
                f"audience {self.aud} encrypts but has no key in {self.directory}; create one with "
                f"`tiyi keys audience new {self.aud} --config ...`"
            )
        return AudienceKey(kids[-1], self._read(kids[-1]))

    def by_kid(self, kid: str) -> bytes:
        if not _KID.match(kid) or kid not in self.kids():
            raise AudienceKeyError(f"audience {self.aud} has no key {kid!r} in {self.directory}")
        return self._read(kid)

    def add(self) -> AudienceKey:
        """Create the next key (0600 from its first byte, never replacing one) and return it."""
        _prepare_directory(self.directory.parent)
        _prepare_directory(self.directory)
        kids = self.kids()
        number = 1 if not kids else AudienceKey(kids[-1]).number + 1
        key = AudienceKey(f"k{number}-{secrets.token_hex(4)}", secrets.token_bytes(KEY_BYTES))
        try:
            _install(self.directory / f"{key.kid}.key", (key.key.hex() + "\n").encode("ascii"), 0o600, replace=False)
        except KeyFileError as exc:
            raise AudienceKeyError(str(exc)) from None
        except OSError as exc:
            raise AudienceKeyError(f"cannot write a key in {self.directory}: {exc.strerror or exc}") from exc
        return key

    def _read(self, kid: str) -> bytes:
        path = self.directory / f"{kid}.key"
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as exc:
            raise AudienceKeyError(f"cannot open audience key {path}: {exc.strerror or exc}") from exc
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise AudienceKeyError(f"audience key {path} is not a regular file")
            if st.st_mode & 0o077:
                raise AudienceKeyError(
                    f"audience key {path} is accessible by group/others (mode {stat.S_IMODE(st.st_mode):04o}); "
                    f"run: chmod 600 {path}"
                )
            data = os.read(fd, _MAX_FILE + 1)
        finally:
            os.close(fd)
        try:
            key = bytes.fromhex(data.decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            key = b""
        if len(data) > _MAX_FILE or len(key) != KEY_BYTES:
            raise AudienceKeyError(f"audience key {path} is not {KEY_BYTES} bytes of hex")
        return key


def export_lines(ring: AudienceKeyring) -> list[str]:
    """``kid hex`` per key, oldest first: the file a platform gives ``tiyi verify --audience-key``."""
    return [f"{k.kid} {k.key.hex()}" for k in ring.load()]


def audience_keys_main(config: Path, cmd: str, aud: str) -> int:
    """``tiyi keys audience new|rotate|list|export AUD``; the audience must be configured."""
    from gateway.config import load_config

    cfg = load_config(config)
    spec = next((a for a in cfg.audiences if a.id == aud), None)
    if spec is None:
        known = ", ".join(a.id for a in cfg.audiences) or "none"
        raise AudienceKeyError(f"no [[audience]] with id {aud!r} in {config} (configured: {known})")
    ring = AudienceKeyring(cfg.audience_key_dir, aud)
    if cmd in ("new", "rotate"):
        if cmd == "new" and ring.kids():
            raise AudienceKeyError(f"audience {aud} already has keys; `rotate` adds the next one")
        if cmd == "rotate" and not ring.kids():
            raise AudienceKeyError(f"audience {aud} has no key yet; `new` creates the first")
        key = ring.add()
        print(f"audience {aud}: key {key.kid} created in {ring.directory} (0600); new views are encrypted with it")
        print(f"give the platform its keys out of band: tiyi keys audience export {aud} --config {config}")
        if not spec.encrypt:
            print(f"note: audience {aud} has encrypt = false; its views stay unencrypted until it is true")
        return 0
    if cmd == "list":
        kids = [k.kid for k in ring.load()]  # read and checked, never printed
        for kid in kids:
            print(f"{kid}{'  (encrypts new views)' if kid == kids[-1] else ''}")
        if not kids:
            print(f"audience {aud}: no keys")
        return 0
    for line in export_lines(ring):
        print(line)
    return 0
