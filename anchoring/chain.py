"""The ``ChainClient`` role: what the gateway's durable anchor queue needs from a chain.

Synchronous on purpose: clients do network I/O and the gateway calls them from a worker thread.
Preparing (signing) and sending are separate so the queue can store the signed transaction before it
leaves the box; a resubmission after a crash is then the very same transaction, never a second anchor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class SignedTx:
    raw: bytes
    tx_hash: bytes
    nonce: int


@dataclass(frozen=True, slots=True)
class TxReceipt:
    tx_hash: bytes
    ok: bool
    block_number: int
    block_hash: bytes
    logs: tuple[Any, ...] = ()


@dataclass(frozen=True, slots=True)
class AnchorInfo:
    block_number: int
    gw: str
    batch: int
    count: int


@dataclass(frozen=True, slots=True)
class GatewayEntry:
    """A gateway in the on-chain registry: who vouches for it and its SM2 key (64 bytes X‖Y)."""

    gw: str
    operator: str
    sm2_public_key: bytes
    revoked: bool
    updated_block: int


@dataclass(frozen=True, slots=True)
class KeyEvent:
    """A registry event for one gateway, in chain order: ``registered``/``rotated`` carry the key."""

    block: int
    kind: str  # registered | rotated | revoked
    key: bytes | None = None


@dataclass(frozen=True, slots=True)
class KeyPeriod:
    """A key and the anchors it may sign for: those in blocks ``< until`` (None: no end yet).

    The first registered key also covers anchors made before its registration (an operator registers the
    key a gateway has been using); a rotated-in key only covers anchors from its rotation on.
    """

    key: bytes
    since: int | None
    until: int | None

    def covers(self, block: int) -> bool:
        return (self.since is None or block >= self.since) and (self.until is None or block < self.until)


def key_periods(events: list[KeyEvent]) -> list[KeyPeriod]:
    """Turn a gateway's registry events into the periods each key was vouched for."""
    out: list[KeyPeriod] = []
    current: tuple[bytes, int | None] | None = None
    for e in sorted(events, key=lambda e: e.block):
        if e.kind == "registered" and e.key is not None and current is None and not out:
            current = (e.key, None)
        elif e.kind == "rotated" and e.key is not None and current is not None:
            out.append(KeyPeriod(current[0], current[1], e.block))
            current = (e.key, e.block)
        elif e.kind == "revoked" and current is not None:
            out.append(KeyPeriod(current[0], current[1], e.block))
            current = None
            break  # a revoked gateway id stays revoked
    if current is not None:
        out.append(KeyPeriod(current[0], current[1], None))
    return out


class ChainClient(Protocol):
    @property
    def chain_id(self) -> int: ...

    @property
    def contract(self) -> bytes: ...

    def prepare_anchor(self, root: bytes, gw: str, batch: int, count: int) -> SignedTx: ...

    def send(self, tx: SignedTx) -> None: ...

    def resync_nonce(self) -> None:
        """Forget any locally cached account nonce: a prepared transaction was dropped unsent."""
        ...

    def send_raw(self, raw: bytes) -> None: ...

    def receipt(self, tx_hash: bytes) -> TxReceipt | None: ...

    def anchored_in(self, receipt: TxReceipt, root: bytes) -> AnchorInfo | None:
        """The ``Anchored`` event for ``root`` emitted by our contract in this receipt, if any."""
        ...

    def lookup(self, root: bytes) -> AnchorInfo | None: ...

    def own_anchor(self, root: bytes, block: int) -> TxReceipt | None:
        """The receipt of the transaction from *this client's account* that anchored ``root`` in ``block``.

        A queue that finds its root already on chain (a send whose outcome a crash or timeout hid) adopts
        that anchor only if it was its own; None means someone else anchored it.
        """
        ...

    def block_number(self) -> int: ...


@cache
def anchor_artifact() -> dict[str, Any]:
    """The committed compiler output for Anchor.sol (ABI and bytecode)."""
    text = resources.files("anchoring").joinpath("contracts/build/Anchor.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data
