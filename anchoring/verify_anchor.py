"""Checking an anchor receipt against the chain itself, trusting nothing the gateway said."""

from __future__ import annotations

from anchoring.chain import ChainClient
from anchoring.errors import AnchoringError
from anchoring.receipt import AnchorReceipt


def check_receipt(receipt: AnchorReceipt, client: ChainClient) -> str | None:
    """None when the chain confirms the receipt; otherwise a short reason."""
    if client.contract != receipt.contract:
        return f"receipt names contract 0x{receipt.contract.hex()}, client reads 0x{client.contract.hex()}"
    if client.chain_id != receipt.chain_id:
        return f"receipt names chain {receipt.chain_id}, node is chain {client.chain_id}"
    try:
        rec = client.receipt(receipt.tx)
        if rec is None:
            return "transaction not found on the chain"
        if not rec.ok:
            return "transaction failed on the chain"
        if rec.block_number != receipt.block:
            return f"block mismatch: receipt says {receipt.block}, chain says {rec.block_number}"
        event = client.anchored_in(rec, receipt.root)
        if event is None:
            return "transaction carries no Anchored event for this root from the contract"
        if event.gw != receipt.gw or event.batch != receipt.batch:
            return (f"on-chain event is for {event.gw} batch {event.batch}, "
                    f"receipt says {receipt.gw} batch {receipt.batch}")
        info = client.lookup(receipt.root)
    except AnchoringError as exc:
        return f"chain query failed: {exc}"
    if info is None:
        return "root not anchored according to the contract"
    if info.block_number != receipt.block:
        return f"contract records the root in block {info.block_number}, receipt says {receipt.block}"
    return None
