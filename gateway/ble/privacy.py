"""LE privacy: recognising a paired device behind its resolvable private addresses (RPAs).

Phones, watches and many straps advertise from an address they renew every few minutes. The address is
``prand || hash`` with ``hash = ah(IRK, prand)`` (Core spec Vol 3 Part H 2.2.2: AES-128 of the
zero-padded 24-bit ``prand`` under the device's Identity Resolving Key, least significant 24 bits) and the
two top bits of ``prand`` are ``01``. Whoever holds the IRK can tell that two addresses are one device;
nobody else can. The gateway holds the IRKs of paired devices only.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

CACHE_SIZE = 4096  # addresses remembered (resolved or not): a busy gym shows a few hundred at once


def address_bytes(address: str) -> bytes:
    """``AA:BB:CC:DD:EE:FF`` → 6 bytes, most significant first (as the address is written)."""
    raw = bytes.fromhex(address.replace(":", ""))
    if len(raw) != 6:
        raise ValueError(f"{address!r} is not a Bluetooth address")
    return raw


def is_resolvable(address: str) -> bool:
    """True if the address has the form of an RPA (its two most significant bits are 01)."""
    return address_bytes(address)[0] >> 6 == 0b01


def ah(irk: bytes, prand: bytes) -> bytes:
    """The random address hash function: 3 bytes, most significant first."""
    if len(irk) != 16 or len(prand) != 3:
        raise ValueError("ah needs a 16-byte IRK and a 3-byte prand")
    enc = Cipher(algorithms.AES(irk), modes.ECB()).encryptor()  # noqa: S305 - one block, as the spec defines
    return (enc.update(bytes(13) + prand) + enc.finalize())[-3:]


def resolves(irk: bytes, address: str) -> bool:
    raw = address_bytes(address)
    return raw[0] >> 6 == 0b01 and ah(irk, raw[:3]) == raw[3:]


class IrkResolver:
    """Maps an advertiser's address to the IRK it was made with, caching both hits and misses."""

    def __init__(self, irks: Iterable[bytes] = ()) -> None:
        self._irks = tuple(irks)
        self._cache: OrderedDict[str, bytes | None] = OrderedDict()

    def update(self, irks: Iterable[bytes]) -> None:
        new = tuple(irks)
        if new != self._irks:
            self._irks = new
            self._cache.clear()

    def resolve(self, address: str) -> bytes | None:
        if not self._irks:
            return None
        a = address.upper()
        if a in self._cache:
            self._cache.move_to_end(a)
            return self._cache[a]
        found = next((k for k in self._irks if resolves(k, a)), None) if is_resolvable(a) else None
        self._cache[a] = found
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return found
