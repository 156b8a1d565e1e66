"""Anchor receipts: what the gateway publishes once a root is on the chain (batches on ``anchor``, roll-ups inside
their ``rollup`` message).

Everything in a receipt is a claim until a chain confirms it (``anchoring.verify_anchor``): it only tells a verifier
where to look. ``kind`` says what was anchored, exactly as the contract's ``kind`` argument did, so a batch anchor can
never be read as a roll-up or the reverse.
"""

from __future__ import annotations

from dataclasses import dataclass

from anchoring.chain import ADDRESS_SIZE, AnchorKind
from anchoring.errors import ReceiptError
from edge import cbor
from edge.errors import CodecError
from edge.record import check_id

STATUSES = ("included", "final")
_FIELDS = {
    "gw",
    "kind",
    "number",
    "count",
    "root",
    "chain_id",
    "contract",
    "anchorer",
    "tx",
    "block",
    "block_hash",
    "status",
}


@dataclass(frozen=True, slots=True)
class AnchorReceipt:
    gw: str
    kind: AnchorKind
    number: int  # the batch number, or the roll-up number
    count: int  # records in the batch, or batches in the roll-up
    root: bytes
    chain_id: int
    contract: bytes
    anchorer: bytes  # the account that sent the anchor
    tx: bytes
    block: int
    block_hash: bytes
    status: str = "final"
    # The anchor target (the gateway's name for the chain) the anchor was made for: a roll-up receipt's must be the
    # target in its topic. Optional on the wire: receipts of contract 1.0 do not carry it.
    target: str | None = None

    def __post_init__(self) -> None:
        try:
            check_id(self.gw, "receipt.gw")
            if self.target is not None:
                check_id(self.target, "receipt.target")
        except CodecError as exc:
            raise ReceiptError(str(exc)) from exc
        if not isinstance(self.kind, AnchorKind):
            raise ReceiptError(f"receipt.kind: expected an anchor kind, got {self.kind!r}")
        for name in ("number", "count", "chain_id", "block"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 1 << 64:
                raise ReceiptError(f"receipt.{name}: expected an unsigned 64-bit int, got {v!r}")
        if self.number < 1 or self.count < 1:
            raise ReceiptError("receipt: number and count start at 1")
        for name, size in (
            ("root", 32),
            ("contract", ADDRESS_SIZE),
            ("anchorer", ADDRESS_SIZE),
            ("tx", 32),
            ("block_hash", 32),
        ):
            v = getattr(self, name)
            if not isinstance(v, bytes) or len(v) != size:
                raise ReceiptError(f"receipt.{name}: expected {size} bytes")
        if self.status not in STATUSES:
            raise ReceiptError(f"receipt.status: {self.status!r} is not one of {STATUSES}")

    def __bytes__(self) -> bytes:
        m = {
            "gw": self.gw,
            "kind": self.kind.label,
            "number": self.number,
            "count": self.count,
            "root": self.root,
            "chain_id": self.chain_id,
            "contract": self.contract,
            "anchorer": self.anchorer,
            "tx": self.tx,
            "block": self.block,
            "block_hash": self.block_hash,
            "status": self.status,
        }
        if self.target is not None:
            m["target"] = self.target
        return cbor.dumps(m)

    @classmethod
    def from_bytes(cls, data: bytes) -> AnchorReceipt:
        try:
            m = cbor.expect_map(cbor.loads(data), "receipt", _FIELDS, frozenset({"target"}))
            w = "receipt"
            try:
                kind = AnchorKind.from_label(cbor.field(m, "kind", str, w))
            except ValueError as exc:
                raise ReceiptError(f"receipt.kind: {exc}") from exc
            return cls(
                gw=cbor.field(m, "gw", str, w),
                kind=kind,
                number=cbor.uint(m, "number", w),
                count=cbor.uint(m, "count", w),
                root=cbor.field(m, "root", bytes, w),
                chain_id=cbor.uint(m, "chain_id", w),
                contract=cbor.field(m, "contract", bytes, w),
                anchorer=cbor.field(m, "anchorer", bytes, w),
                tx=cbor.field(m, "tx", bytes, w),
                block=cbor.uint(m, "block", w),
                block_hash=cbor.field(m, "block_hash", bytes, w),
                status=cbor.field(m, "status", str, w),
                target=cbor.field(m, "target", str, w) if "target" in m else None,
            )
        except CodecError as exc:
            raise ReceiptError(str(exc)) from exc
