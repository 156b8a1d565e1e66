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


class ChainClient(Protocol):
    @property
    def chain_id(self) -> int: ...

    @property
    def contract(self) -> bytes: ...

    def prepare_anchor(self, root: bytes, gw: str, batch: int, count: int) -> SignedTx: ...

    def send(self, tx: SignedTx) -> None: ...

    def send_raw(self, raw: bytes) -> None: ...

    def receipt(self, tx_hash: bytes) -> TxReceipt | None: ...

    def anchored_in(self, receipt: TxReceipt, root: bytes) -> AnchorInfo | None:
        """The ``Anchored`` event for ``root`` emitted by our contract in this receipt, if any."""
        ...

    def lookup(self, root: bytes) -> AnchorInfo | None: ...

    def block_number(self) -> int: ...


@cache
def anchor_artifact() -> dict[str, Any]:
    """The committed compiler output for Anchor.sol (ABI and bytecode)."""
    text = resources.files("anchoring").joinpath("contracts/build/Anchor.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data
