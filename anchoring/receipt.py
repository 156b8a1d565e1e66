"""Anchor receipts: what the gateway publishes on the ``anchor`` topic once a root is on the chain."""

from __future__ import annotations

from dataclasses import dataclass

from anchoring.errors import ReceiptError
from edge import cbor
from edge.errors import CodecError
from edge.record import check_id

STATUSES = ("included", "final")
_FIELDS = {"gw", "batch", "root", "chain_id", "contract", "tx", "block", "status"}


@dataclass(frozen=True, slots=True)
class AnchorReceipt:
    gw: str
    batch: int
    root: bytes
    chain_id: int
    contract: bytes
    tx: bytes
    block: int
    status: str = "final"

    def __post_init__(self) -> None:
        try:
            check_id(self.gw, "receipt.gw")
        except CodecError as exc:
            raise ReceiptError(str(exc)) from exc
        for name in ("batch", "chain_id", "block"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 1 << 64:
                raise ReceiptError(f"receipt.{name}: expected an unsigned 64-bit int, got {v!r}")
        for name, size in (("root", 32), ("contract", 20), ("tx", 32)):
            v = getattr(self, name)
            if not isinstance(v, bytes) or len(v) != size:
                raise ReceiptError(f"receipt.{name}: expected {size} bytes")
        if self.status not in STATUSES:
            raise ReceiptError(f"receipt.status: {self.status!r} is not one of {STATUSES}")

    def __bytes__(self) -> bytes:
        return cbor.dumps({"gw": self.gw, "batch": self.batch, "root": self.root, "chain_id": self.chain_id,
                           "contract": self.contract, "tx": self.tx, "block": self.block, "status": self.status})

    @classmethod
    def from_bytes(cls, data: bytes) -> AnchorReceipt:
        try:
            m = cbor.expect_map(cbor.loads(data), "receipt", _FIELDS)
            w = "receipt"
            return cls(gw=cbor.field(m, "gw", str, w), batch=cbor.uint(m, "batch", w),
                       root=cbor.field(m, "root", bytes, w), chain_id=cbor.uint(m, "chain_id", w),
                       contract=cbor.field(m, "contract", bytes, w), tx=cbor.field(m, "tx", bytes, w),
                       block=cbor.uint(m, "block", w), status=cbor.field(m, "status", str, w))
        except CodecError as exc:
            raise ReceiptError(str(exc)) from exc
