"""Wearer binding: which gym member wears which device right now, and the pseudonym records carry for them.

Staff bind a member (the id from the gym's own system) to a device for a session. Records of a bound device
carry ``sub`` = ``sub-`` + the first ``SUB_HEX`` hex digits of HMAC-SM3(site secret, member id): stable for a
member at this site, unlinkable across sites without their secrets (each site's secret is its own file).

The raw member id is never stored, logged or sent: the binding table (``bindings.json``, 0600, local to the
gateway) holds only the subject id, so a stolen gateway without the site secret cannot list its members'
ids, and with it can only test guesses. This module is the API the admin API calls; ``tiyi members`` the CLI.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import tempfile
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from edge.errors import CodecError
from edge.record import SUB_HEX, check_id
from gateway.errors import GatewayError

log = logging.getLogger("tiyi.binding")

BINDINGS_FILE = "bindings.json"
MAX_MEMBER_ID = 128


class BindingError(GatewayError, ValueError):
    """A binding request is malformed (a member id or device id that cannot be used)."""


def subject_id(site_secret: bytes, member_id: str) -> str:
    """The member's pseudonymous subject id at this site (see the module docstring)."""
    return "sub-" + hmac.new(site_secret, _member(member_id).encode(), "sm3").hexdigest()[:SUB_HEX]


def _member(member_id: str) -> str:
    """The member id as hashed: NFC, surrounding space stripped; refused if empty, too long or with controls."""
    m = unicodedata.normalize("NFC", member_id.strip())
    if not m or len(m) > MAX_MEMBER_ID or any(unicodedata.category(c).startswith("C") for c in m):
        raise BindingError(f"a member id needs 1-{MAX_MEMBER_ID} printable characters")
    return m


@dataclass(frozen=True, slots=True)
class Binding:
    dev: str  # the device id records carry (ble-... or a simulated strap's id)
    sub: str
    since_ms: int


class Bindings:
    """The local binding table. Writes replace the file atomically; readers re-read it when it changes, so a
    binding made from the CLI or the admin API reaches the running gateway's next records."""

    def __init__(self, state_dir: Path, site_secret: bytes) -> None:
        if len(site_secret) < 16:
            raise BindingError("the site secret must be at least 16 bytes")
        self.path = state_dir / BINDINGS_FILE
        self._secret = site_secret
        self._mtime: float | None = None
        self._cache: dict[str, str] = {}

    def bind(self, dev: str, member_id: str, now_ms: int) -> Binding:
        """Bind ``member_id`` to ``dev`` from ``now_ms`` on (replacing any earlier wearer of ``dev``)."""
        try:
            check_id(dev, "device id")
        except CodecError as exc:
            raise BindingError(str(exc)) from None
        b = Binding(dev, subject_id(self._secret, member_id), now_ms)
        table = self._read()
        table[dev] = {"sub": b.sub, "since_ms": now_ms}
        self._write(table)
        return b

    def unbind(self, dev: str) -> bool:
        """End ``dev``'s session: its next records carry no ``sub``. False if it was not bound."""
        table = self._read()
        if table.pop(dev, None) is None:
            return False
        self._write(table)
        return True

    def list(self) -> list[Binding]:
        return sorted(
            (Binding(d, str(v["sub"]), int(str(v["since_ms"]))) for d, v in self._read().items()),
            key=lambda b: b.dev,
        )

    def subjects(self) -> Mapping[str, str]:
        """dev → sub for every bound device; re-reads the file only when it changed (cheap per record group)."""
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            self._cache, self._mtime = {}, None
            return self._cache
        if mtime != self._mtime:
            try:
                self._cache = {d: str(v["sub"]) for d, v in self._read().items()}
            except BindingError as exc:  # a torn edit by hand: keep the last good table, say so once per change
                log.warning("binding table unreadable, keeping the previous one: %s", exc)
            self._mtime = mtime
        return self._cache

    def _read(self) -> dict[str, dict[str, object]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise BindingError(f"{self.path} is not valid JSON ({exc}); restore it or remove it") from None
        if not isinstance(data, dict) or not all(
            isinstance(v, dict) and isinstance(v.get("sub"), str) and isinstance(v.get("since_ms"), int)
            for v in data.values()
        ):
            raise BindingError(f"{self.path} is not a binding table; restore it or remove it")
        return data

    def _write(self, table: Mapping[str, Mapping[str, object]]) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".bindings-", suffix=".tmp")  # 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(dict(sorted(table.items())), fh, indent=1)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
