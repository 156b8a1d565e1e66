"""The chain roles: ``ChainReader`` (what a verifier asks a chain) and ``ChainClient`` (what the gateway's durable
anchor queue needs on top).

Synchronous on purpose: clients do network I/O and the gateway calls them from a worker thread.
Preparing (signing) and sending are separate so the queue can store the signed transaction before it
leaves the box; a resubmission after a crash is then the very same transaction, never a second anchor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import IntEnum
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


class AnchorKind(IntEnum):
    """What an anchor anchors, as the contract's ``kind`` argument: never inferred from the gateway id."""

    BATCH = 0
    ROLLUP = 1

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def from_label(cls, label: str) -> AnchorKind:
        for k in cls:
            if k.label == label:
                return k
        raise ValueError(f"unknown anchor kind {label!r}")


ADDRESS_SIZE = 20
SM2_POINT_SIZE = 64  # X || Y, as the registry stores it
MAX_KEY_HISTORY = 1024  # registry entries read per gateway; a longer history is refused, not truncated


@dataclass(frozen=True, slots=True)
class AnchorInfo:
    """An anchor as the chain records it: the block it landed in, the account that made it, and its fields."""

    block_number: int
    anchorer: bytes
    kind: AnchorKind
    gw: str
    number: int
    count: int


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One entry of a gateway's key history: its SM2 key (X‖Y), the account anchoring for it, from which block."""

    key: bytes
    anchorer: bytes
    since_block: int


@dataclass(frozen=True, slots=True)
class GatewayEntry:
    """A gateway in the on-chain registry: the operator that vouches for it and its whole key history."""

    gw: str
    operator: bytes
    revoked: bool
    revoked_block: int
    keys: tuple[KeyRecord, ...]

    @property
    def current(self) -> KeyRecord | None:
        return None if self.revoked or not self.keys else self.keys[-1]

    def periods(self) -> list[KeyPeriod]:
        """The blocks each key (and its anchoring account) was vouched for; a revocation ends the last one."""
        out: list[KeyPeriod] = []
        for i, k in enumerate(self.keys):
            until = self.keys[i + 1].since_block if i + 1 < len(self.keys) else None
            if until is None and self.revoked:
                until = self.revoked_block
            out.append(KeyPeriod(k.key, k.anchorer, None if i == 0 else k.since_block, until))
        return out


@dataclass(frozen=True, slots=True)
class KeyPeriod:
    """A key and the anchors it may sign for: those made by ``anchorer`` in blocks ``< until`` (None: no end yet).

    The first registered key also covers anchors made before its registration (an operator registers the
    key a gateway has been using); a rotated-in key only covers anchors from its rotation on. A key rotated
    in and out within one block covers nothing.
    """

    key: bytes
    anchorer: bytes
    since: int | None
    until: int | None

    def covers(self, block: int) -> bool:
        return (self.since is None or block >= self.since) and (self.until is None or block < self.until)

    @property
    def open(self) -> bool:
        return self.until is None


class ChainReader(Protocol):
    """What a verifier asks a chain: receipts and events, the contract's anchors and its gateway registry."""

    @property
    def chain_id(self) -> int: ...

    @property
    def contract(self) -> bytes: ...

    def receipt(self, tx_hash: bytes) -> TxReceipt | None: ...

    def anchored_in(self, receipt: TxReceipt, root: bytes) -> AnchorInfo | None:
        """The ``Anchored`` event for ``root`` emitted by our contract in this receipt, if any."""
        ...

    def anchored_at(self, anchorer: bytes, kind: AnchorKind, gw: str, root: bytes) -> AnchorInfo | None:
        """The anchor ``anchorer`` made of ``root`` for ``gw``, as the contract stores it (None: there is none)."""
        ...

    def latest_anchored(self, anchorer: bytes, kind: AnchorKind, gw: str) -> tuple[int, int] | None:
        """The highest number ``anchorer`` anchored for ``gw`` and its block; None when it anchored nothing."""
        ...

    def gateway(self, gw: str) -> GatewayEntry | None:
        """The registry entry of ``gw`` with its whole key history; None when it was never registered."""
        ...

    def block_number(self) -> int: ...


class ChainClient(ChainReader, Protocol):
    """What the gateway's durable anchor queue needs: a reader that can also sign and send anchors."""

    @property
    def account(self) -> bytes:
        """The 20-byte account this client anchors from."""
        ...

    def prepare_anchor(self, kind: AnchorKind, gw: str, root: bytes, number: int, count: int) -> SignedTx:
        """Sign (not send) an anchor; ``AlreadyAnchored`` when this account already anchored it."""
        ...

    def send(self, tx: SignedTx) -> None: ...

    def resync_nonce(self) -> None:
        """Forget any locally cached account nonce: a prepared transaction was dropped unsent."""
        ...

    def send_raw(self, raw: bytes) -> None: ...

    def own_anchor(self, kind: AnchorKind, gw: str, root: bytes) -> tuple[AnchorInfo, TxReceipt] | None:
        """This account's anchor of ``root`` and the receipt of the transaction that made it.

        A queue that finds its root already anchored (a send whose outcome a crash or timeout hid) adopts that
        anchor if its fields are the job's; None when this account never anchored it (or it was reorged away).
        """
        ...


@cache
def anchor_artifact() -> dict[str, Any]:
    """The committed compiler output for Anchor.sol (ABI and bytecode)."""
    text = resources.files("anchoring").joinpath("contracts/build/Anchor.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data
