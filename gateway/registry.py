"""The device registry: which Bluetooth devices a gym has paired, kept in TinyDB.

This is the small, rarely written state TinyDB suits (unlike the journal). TinyDB's JSON storage
rewrites its file in place, so a power cut mid-write could leave it torn: ``AtomicJSONStorage`` writes
a temporary file, fsyncs it and renames it over the old one instead.

Only the ``tiyi devices`` command writes ``devices.json``; the running gateway only reads it (re-reading
when the file changes, so pairing takes effect without a restart) and writes what it has *seen* to
``seen.json``, so the two processes never write the same file.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinydb import Query, TinyDB
from tinydb.storages import JSONStorage

from edge.errors import EdgeError
from edge.gatt.registry import check_quirks, known_characteristics, parse_uuid
from gateway.clock import monotonic
from gateway.errors import GatewayError

REGISTRY_FILE = "devices.json"
SEEN_FILE = "seen.json"


class RegistryError(GatewayError, ValueError):
    """A pairing request is malformed or names an unknown device."""


class AtomicJSONStorage(JSONStorage):
    """TinyDB storage that replaces the file atomically (temp file, fsync, rename)."""

    def __init__(self, path: str, **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        self._target = Path(path)

    def write(self, data: Mapping[str, Mapping[str, Any]]) -> None:
        fd, tmp = tempfile.mkstemp(dir=self._target.parent, prefix=".devices-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh, indent=1, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self._target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def pseudonym(key: bytes, address: str) -> str:
    """A device's id in records and topics: HMAC-SM3 of its address under the gateway's secret."""
    return "ble-" + hmac.new(key, address.upper().encode(), "sm3").hexdigest()[:12]


class SeenDevices(MutableMapping[str, "str | None"]):
    """Unpaired devices heard nearby (address → advertised name), for `tiyi devices list`.

    A gym's radio hears every passer-by's phone, so this forgets: an entry lives ``ttl_s`` after it was last
    heard, at most ``max_count`` entries are kept (the least recently heard go first), and at rest only a
    salted hash of each address is written (see ``at_rest``). The salt lives only in memory and is replaced
    every ``ttl_s``, so the file links nobody to an address, nor one listing to the next.
    """

    def __init__(self, ttl_s: float = 600.0, max_count: int = 200, clock: Callable[[], float] = monotonic) -> None:
        self._ttl, self._max, self._clock = ttl_s, max_count, clock
        self._items: OrderedDict[str, tuple[str | None, float]] = OrderedDict()
        self._salt = secrets.token_bytes(32)
        self._salt_at = clock()

    def _expire(self) -> None:
        old = self._clock() - self._ttl
        while self._items and next(iter(self._items.values()))[1] < old:
            self._items.popitem(last=False)

    def __setitem__(self, address: str, name: str | None) -> None:
        self._items[address] = (name, self._clock())
        self._items.move_to_end(address)
        while len(self._items) > self._max:
            self._items.popitem(last=False)
        self._expire()

    def __getitem__(self, address: str) -> str | None:
        self._expire()
        return self._items[address][0]

    def __delitem__(self, address: str) -> None:
        del self._items[address]

    def __iter__(self) -> Iterator[str]:
        self._expire()
        return iter(list(self._items))

    def __len__(self) -> int:
        self._expire()
        return len(self._items)

    def salt(self) -> bytes:
        """The current in-memory salt, replaced once it is ``ttl_s`` old."""
        if self._clock() - self._salt_at >= self._ttl:
            self._salt, self._salt_at = secrets.token_bytes(32), self._clock()
        return self._salt


def seen_id(salt: bytes, address: str) -> str:
    """How an unpaired device is named at rest: a salted HMAC-SM3 of its address, never the address."""
    return "seen-" + hmac.new(salt, address.upper().encode(), "sm3").hexdigest()[:12]


def normalise(entry: str) -> str:
    """An allow entry: an address (upper case, six hex octets), ``name:<advertised name>``, or
    ``irk:<32 hex digits>`` (a device that hides behind resolvable private addresses), or
    ``vendor:<company id>`` (every device whose advertisement carries that Bluetooth SIG company id in its
    manufacturer data, e.g. ``vendor:0x006B``: a gym that owns a fleet of one brand's straps)."""
    e = entry.strip()
    if e.lower().startswith("vendor:"):
        text = e[7:].strip().lower()
        try:
            cid = int(text, 16) if text.startswith("0x") else int(text)
        except ValueError:
            cid = -1
        if not 0 <= cid <= 0xFFFF:
            raise RegistryError(f"{entry!r}: a vendor entry needs a 16-bit company id, e.g. vendor:0x006B")
        return f"vendor:{cid:04x}"
    if e.lower().startswith("irk:"):
        key = e[4:].strip().lower()
        if len(key) != 32 or any(c not in "0123456789abcdef" for c in key):
            raise RegistryError(f"{entry!r}: an IRK entry needs 32 hex digits (16 bytes, as the device reports it)")
        return "irk:" + key
    if e.startswith("name:"):
        if len(e) <= 5 or len(e) > 64:
            raise RegistryError(f"{entry!r}: a name entry needs 1-59 characters after 'name:'")
        return e
    octets = e.upper().split(":")
    if len(octets) != 6 or not all(len(o) == 2 and all(c in "0123456789ABCDEF" for c in o) for o in octets):
        raise RegistryError(
            f"{entry!r} is neither a Bluetooth address (AA:BB:CC:DD:EE:FF), name:<name>, "
            "irk:<32 hex digits> nor vendor:<company id>"
        )
    return ":".join(octets)


@dataclass(frozen=True, slots=True)
class PairedDevice:
    entry: str
    model: str | None
    note: str | None
    quirks: Mapping[str, str] = field(default_factory=dict)
    profiles: tuple[int, ...] = ()  # characteristics to subscribe to; empty: every one the gateway decodes


class DeviceRegistry:
    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir
        self.path = state_dir / REGISTRY_FILE
        self._mtime: float | None = None
        self._cache: dict[str, PairedDevice] = {}

    def _db(self) -> TinyDB:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        return TinyDB(str(self.path), storage=AtomicJSONStorage)

    def pair(
        self,
        entry: str,
        model: str | None = None,
        note: str | None = None,
        quirks: Mapping[str, str] | None = None,
        profiles: Sequence[str] = (),
    ) -> PairedDevice:
        """Allow a device; ``quirks`` are its model's deviations from the spec (see edge.gatt.QUIRKS);
        ``profiles`` limits what is subscribed to those characteristics (``2a37``, ``0x2A19``, ...)."""
        e = normalise(entry)
        try:
            q = check_quirks(quirks or {})
            chars = tuple(sorted({parse_uuid(p) for p in profiles}))
        except EdgeError as exc:
            raise RegistryError(str(exc)) from exc
        unknown = [c for c in chars if c not in known_characteristics()]
        if unknown:
            raise RegistryError(f"the gateway does not decode {', '.join(f'0x{c:04X}' for c in unknown)}")
        with self._db() as db:
            db.upsert(
                {"entry": e, "model": model, "note": note, "quirks": q, "profiles": list(chars)}, Query().entry == e
            )
        return PairedDevice(e, model, note, q, chars)

    def forget(self, entry: str) -> bool:
        e = normalise(entry)
        with self._db() as db:
            return bool(db.remove(Query().entry == e))

    def paired(self) -> list[PairedDevice]:
        if not self.path.exists():
            return []
        with self._db() as db:
            return sorted(
                (
                    PairedDevice(
                        r["entry"],
                        r.get("model"),
                        r.get("note"),
                        dict(r.get("quirks") or {}),
                        tuple(r.get("profiles") or ()),
                    )
                    for r in db.all()
                ),
                key=lambda p: p.entry,
            )

    def allowed(self) -> frozenset[str]:
        """Allow entries, re-read only when the file changed (cheap enough to call every few seconds)."""
        self._reload()
        return frozenset(self._cache)

    def quirks(self) -> dict[str, Mapping[str, str]]:
        """Allow entry → quirks, for the paired devices that have any."""
        self._reload()
        return {e: p.quirks for e, p in self._cache.items() if p.quirks}

    def profiles(self) -> dict[str, frozenset[int]]:
        """Allow entry → the characteristics to subscribe to, for paired devices limited to some."""
        self._reload()
        return {e: frozenset(p.profiles) for e, p in self._cache.items() if p.profiles}

    def _reload(self) -> None:
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            self._cache, self._mtime = {}, None
            return
        if mtime != self._mtime:
            self._cache = {p.entry: p for p in self.paired()}
            self._mtime = mtime

    # The running gateway's own file: devices seen but not paired, for `tiyi devices list`.
    def write_seen(self, seen: Mapping[str, str | None]) -> None:
        """Write unpaired devices under salted hashes (``seen_id``), never their addresses; devices paired
        meanwhile are left out. ``seen`` is usually a ``SeenDevices`` (its rotating salt); for any other
        mapping a fresh salt is used, so each write is unlinkable to the last."""
        salt = seen.salt() if isinstance(seen, SeenDevices) else secrets.token_bytes(32)
        paired = self.allowed()
        at_rest = {seen_id(salt, a): n for a, n in seen.items() if a.upper() not in paired}
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".seen-", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(dict(sorted(at_rest.items())), fh, indent=1)
        os.replace(tmp, self.dir / SEEN_FILE)

    def seen(self) -> dict[str, str | None]:
        try:
            data = json.loads((self.dir / SEEN_FILE).read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return {}
        return {str(k): (None if v is None else str(v)) for k, v in data.items()} if isinstance(data, dict) else {}
