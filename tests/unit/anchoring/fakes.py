"""A chain as a verifier sees it, for unit tests of pure verification logic (the real one: tests/integration)."""

from __future__ import annotations

from dataclasses import dataclass, field

from anchoring.chain import AnchorInfo, AnchorKind
from anchoring.receipt import AnchorReceipt

CONTRACT = b"\x11" * 20
ANCHORER = b"\xaa" * 20


def receipt(
    gw: str,
    number: int,
    count: int,
    root: bytes,
    block: int,
    kind: AnchorKind = AnchorKind.BATCH,
    anchorer: bytes = ANCHORER,
    chain_id: int = 20200,
    contract: bytes = CONTRACT,
) -> AnchorReceipt:
    tx = bytes([kind, number % 256, number // 256 % 256]) + root[:29]
    return AnchorReceipt(
        gw, kind, number, count, root, chain_id, contract, anchorer, tx, block, bytes([block % 256]) * 32
    )


@dataclass
class FakeChain:
    """Anchors by transaction hash, exactly as a contract would hold them; ``confirm`` believes no receipt field."""

    name: str = "fake chain"
    anchors: dict[bytes, AnchorInfo] = field(default_factory=dict)
    refuse: dict[bytes, str] = field(default_factory=dict)  # tx → why the chain does not confirm it

    def put(self, r: AnchorReceipt, block: int | None = None, anchorer: bytes | None = None) -> None:
        """Record the anchor a receipt describes (optionally with the block/account the chain really has)."""
        self.anchors[r.tx] = AnchorInfo(
            r.block if block is None else block, anchorer or r.anchorer, r.kind, r.gw, r.number, r.count
        )

    def confirm(self, r: AnchorReceipt) -> AnchorInfo | str:
        if r.tx in self.refuse:
            return self.refuse[r.tx]
        info = self.anchors.get(r.tx)
        if info is None:
            return "transaction not found on the chain"
        if (info.kind, info.gw, info.number, info.count, info.anchorer) != (
            r.kind,
            r.gw,
            r.number,
            r.count,
            r.anchorer,
        ):
            return "on-chain event differs from the receipt"
        return info

    def latest(self, anchorer: bytes, kind: AnchorKind, gw: str) -> tuple[int, int] | None:
        mine = [a for a in self.anchors.values() if (a.anchorer, a.kind, a.gw) == (anchorer, kind, gw)]
        if not mine:
            return None
        top = max(mine, key=lambda a: a.number)
        return top.number, top.block_number
