"""Checking anchors against the chain itself, trusting nothing the gateway said.

A receipt only says where to look. ``confirm_receipt`` returns the anchor *as the chain records it* (its block and
the account that made it), and everything a verifier judges by (which key was valid, which account may anchor) comes
from that, never from the receipt's own fields.
"""

from __future__ import annotations

from typing import Protocol

from anchoring.chain import AnchorInfo, AnchorKind, ChainReader
from anchoring.errors import AnchoringError
from anchoring.receipt import AnchorReceipt


class AnchorChecker(Protocol):
    """A chain a verifier consults (``ChainAnchorChecker`` over a real client; tests pass fakes)."""

    @property
    def name(self) -> str: ...

    def confirm(self, receipt: AnchorReceipt) -> AnchorInfo | str:
        """The anchor as the chain records it, or why the receipt cannot be confirmed."""
        ...

    def latest(self, anchorer: bytes, kind: AnchorKind, gw: str) -> tuple[int, int] | None:
        """The highest number ``anchorer`` anchored for ``gw`` and its block (raises ``AnchoringError``)."""
        ...


def confirm_receipt(receipt: AnchorReceipt, client: ChainReader) -> AnchorInfo | str:
    """The chain's record of the anchor a receipt points at, or a short reason why there is none.

    The transaction must exist and have succeeded, carry our contract's ``Anchored`` event for the root with the
    receipt's kind, gateway, number, count and account, and the contract must hold that anchor for that account in
    the block the transaction landed in (a second transaction of the same root is refused by the contract, so the
    event and the stored anchor must agree)."""
    if client.contract != receipt.contract:
        return f"receipt names contract 0x{receipt.contract.hex()}, the verifier reads 0x{client.contract.hex()}"
    if client.chain_id != receipt.chain_id:
        return f"receipt names chain {receipt.chain_id}, the node is chain {client.chain_id}"
    try:
        rec = client.receipt(receipt.tx)
        if rec is None:
            return "transaction not found on the chain"
        if not rec.ok:
            return "transaction failed on the chain"
        event = client.anchored_in(rec, receipt.root)
        if event is None:
            return "transaction carries no Anchored event for this root from the contract"
        said = (receipt.kind, receipt.gw, receipt.number, receipt.count, receipt.anchorer)
        seen = (event.kind, event.gw, event.number, event.count, event.anchorer)
        if said != seen:
            return (
                f"on-chain event is {event.kind.label} {event.gw} #{event.number} ({event.count}) by "
                f"0x{event.anchorer.hex()}, the receipt says {receipt.kind.label} {receipt.gw} #{receipt.number} "
                f"({receipt.count}) by 0x{receipt.anchorer.hex()}"
            )
        info = client.anchored_at(event.anchorer, event.kind, event.gw, receipt.root)
    except AnchoringError as exc:
        return f"chain query failed: {exc}"
    if info is None:
        return "the contract holds no such anchor"
    if info.block_number != rec.block_number or (info.number, info.count) != (event.number, event.count):
        return f"the contract records the anchor in block {info.block_number}, its transaction is in {rec.block_number}"
    if receipt.block != rec.block_number or receipt.block_hash != rec.block_hash:
        return f"block mismatch: receipt says {receipt.block}, chain says {rec.block_number}"
    return info


class ChainAnchorChecker:
    """``AnchorChecker`` over one chain client (for one contract)."""

    def __init__(self, name: str, client: ChainReader) -> None:
        self._name = name
        self.client = client

    @property
    def name(self) -> str:
        return self._name

    def confirm(self, receipt: AnchorReceipt) -> AnchorInfo | str:
        return confirm_receipt(receipt, self.client)

    def latest(self, anchorer: bytes, kind: AnchorKind, gw: str) -> tuple[int, int] | None:
        return self.client.latest_anchored(anchorer, kind, gw)
