"""FISCO BCOS 2.x native RPC with 国密 (SM2/SM3) transactions: the ``fisco2`` chain client.

国密 chains cannot use Web3 RPC (its transactions are secp256k1 + keccak). A 2.x transaction is the
RLP list ``[randomid, gasPrice, gasLimit, blockLimit, to, value, data, fiscoChainId, groupId, extraData,
v, r, s]``. The signing hash is SM3 over the RLP of the first ten fields; the signature is SM2 with the
default user ID over that 32-byte hash, and ``v`` carries the signer's 64-byte public key (X‖Y). The
transaction hash is SM3 of the whole signed RLP. Function selectors and event topics are SM3-based too,
so the contract must be compiled and deployed with FISCO's 国密 toolchain; this client only calls it.

The node accepts ``current < blockLimit <= current + 1000``: the block number is fetched right before
every signature (a cached one is the classic cause of ``BlockLimitCheckFailed`` after long uptimes), and
``randomid`` is 128 random bits so two anchors never collide.

No FISCO node can run on our CI machines: the encoder is tested against values derived from this
definition and the SM2 signatures against OpenSSL; ``tests/integration/test_fisco2.py`` talks to a live
node only when ``TIYI_FISCO_RPC`` is set.
"""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import rlp
from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode

from anchoring.chain import AnchorInfo, SignedTx, TxReceipt
from anchoring.errors import AlreadyAnchored, ChainUnavailable, StaleTransaction, TransactionFailed
from edge.sm2 import GmsslSm2Signer, decode_signature
from edge.sm3 import sm3

BLOCK_LIMIT_AHEAD = 500  # within the node's window of 1000, with room for a slow submission
ANCHOR_GAS = 300_000
RPC_TIMEOUT_S = 10


def selector(signature: str) -> bytes:
    """国密 function selector: the first 4 bytes of SM3 of the canonical signature."""
    return sm3(signature.encode())[:4]


def event_topic(signature: str) -> bytes:
    return sm3(signature.encode())


ANCHOR_SIG = "anchor(bytes32,string,uint64,uint32)"
ANCHOR_INFO_SIG = "anchorInfo(bytes32)"
ANCHORED_EVENT_SIG = "Anchored(bytes32,string,uint64,uint32,uint256)"


@dataclass(frozen=True, slots=True)
class GmTransaction:
    """The ten signed fields of a FISCO BCOS 2.x transaction."""

    randomid: int
    gas_price: int
    gas_limit: int
    block_limit: int
    to: bytes  # 20 bytes, or empty for a deployment
    value: int
    data: bytes
    chain_id: int
    group_id: int
    extra_data: bytes = b""

    def fields(self) -> list[Any]:
        return [self.randomid, self.gas_price, self.gas_limit, self.block_limit, self.to, self.value, self.data,
                self.chain_id, self.group_id, self.extra_data]

    def signing_hash(self) -> bytes:
        return sm3(rlp.encode(self.fields()))

    def sign(self, signer: GmsslSm2Signer) -> SignedTx:
        """RLP of the ten fields plus v = public key (64 bytes), r, s; hash = SM3 of the whole."""
        r, s = decode_signature(signer.sign(self.signing_hash()))
        pub = signer.public_key.point[1:]
        raw = rlp.encode([*self.fields(), pub, r.to_bytes(32, "big"), s.to_bytes(32, "big")])
        return SignedTx(raw=raw, tx_hash=sm3(raw), nonce=self.randomid)


def decode_transaction(raw: bytes) -> tuple[GmTransaction, bytes, int, int]:
    """Inverse of ``sign``: the fields, the public key, r and s (for tests and audits)."""
    items = rlp.decode(raw)
    if not isinstance(items, list) or len(items) != 13:
        raise TransactionFailed("not a FISCO BCOS 2.x transaction (13 RLP items)")

    def num(b: bytes) -> int:
        return int.from_bytes(b, "big")

    tx = GmTransaction(num(items[0]), num(items[1]), num(items[2]), num(items[3]), bytes(items[4]), num(items[5]),
                       bytes(items[6]), num(items[7]), num(items[8]), bytes(items[9]))
    return tx, bytes(items[10]), num(items[11]), num(items[12])


class Fisco2ChainClient:
    """``ChainClient`` over the FISCO BCOS 2.x JSON-RPC (port 8545 by default), for 国密 groups."""

    def __init__(self, url: str, signer: GmsslSm2Signer, contract: bytes, group_id: int = 1, chain_id: int = 1) -> None:
        if not url.startswith(("http://", "https://")):
            raise TransactionFailed(f"FISCO RPC URL must be http(s)://, got {url!r}")
        self.url = url
        self.signer = signer
        self._contract = contract
        self.group_id = group_id
        self._chain_id = chain_id
        self._ids = 0

    @property
    def chain_id(self) -> int:
        return self._chain_id

    @property
    def contract(self) -> bytes:
        return self._contract

    def _rpc(self, method: str, *params: Any) -> Any:
        self._ids += 1
        body = json.dumps({"jsonrpc": "2.0", "id": self._ids, "method": method, "params": list(params)}).encode()
        req = urllib.request.Request(self.url, body, {"Content-Type": "application/json"})  # noqa: S310
        try:
            with urllib.request.urlopen(req, timeout=RPC_TIMEOUT_S) as resp:  # noqa: S310 - configured node URL
                reply = json.loads(resp.read())
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise ChainUnavailable(f"FISCO node {self.url} unreachable: {exc}") from exc
        except ValueError as exc:
            raise ChainUnavailable(f"FISCO node {self.url} sent invalid JSON") from exc
        if not isinstance(reply, dict):
            raise ChainUnavailable("FISCO node sent a non-object reply")
        if reply.get("error"):
            raise TransactionFailed(f"{method}: {reply['error']}")
        return reply.get("result")

    def block_number(self) -> int:
        return int(self._rpc("getBlockNumber", self.group_id), 16)

    def prepare_anchor(self, root: bytes, gw: str, batch: int, count: int) -> SignedTx:
        if self.lookup(root) is not None:
            raise AlreadyAnchored(f"root {root.hex()} is already anchored")
        data = selector(ANCHOR_SIG) + abi_encode(["bytes32", "string", "uint64", "uint32"], [root, gw, batch, count])
        tx = GmTransaction(randomid=secrets.randbits(128), gas_price=0, gas_limit=ANCHOR_GAS,
                           block_limit=self.block_number() + BLOCK_LIMIT_AHEAD, to=self._contract, value=0, data=data,
                           chain_id=self._chain_id, group_id=self.group_id)
        return tx.sign(self.signer)

    def send(self, tx: SignedTx) -> None:
        self.send_raw(tx.raw)

    def resync_nonce(self) -> None:
        """Nothing cached: 2.x transactions carry a random id, not an account nonce."""

    def send_raw(self, raw: bytes) -> None:
        try:
            self._rpc("sendRawTransaction", self.group_id, "0x" + raw.hex())
        except TransactionFailed as exc:
            text = str(exc).lower()
            if "already" in text or "known" in text:  # e.g. TxPool already contains, nonce/randomid check
                return
            if "blocklimit" in text or "block limit" in text:
                # Stored too long (a long outage): this transaction can never be mined; sign a new one.
                raise StaleTransaction(f"transaction outlived its block limit: {exc}") from exc
            raise

    def receipt(self, tx_hash: bytes) -> TxReceipt | None:
        r = self._rpc("getTransactionReceipt", self.group_id, "0x" + tx_hash.hex())
        if not r:
            return None
        ok = r.get("status") in ("0x0", 0, "0")
        return TxReceipt(tx_hash, ok, int(r["blockNumber"], 16), bytes.fromhex(r["blockHash"][2:]),
                         tuple(r.get("logs") or ()))

    def anchored_in(self, receipt: TxReceipt, root: bytes) -> AnchorInfo | None:
        topic = "0x" + event_topic(ANCHORED_EVENT_SIG).hex()
        for log in receipt.logs:
            topics: Sequence[str] = log.get("topics", ())
            if (log.get("address", "").lower() != "0x" + self._contract.hex() or len(topics) < 2
                    or topics[0] != topic or topics[1] != "0x" + root.hex()):
                continue
            gw, batch, count, block = abi_decode(["string", "uint64", "uint32", "uint256"],
                                                 bytes.fromhex(log["data"][2:]))
            return AnchorInfo(int(block), str(gw), int(batch), int(count))
        return None

    @property
    def address(self) -> str:
        """The account address of our key on a 国密 chain: the last 20 bytes of SM3 of the public key X‖Y."""
        return "0x" + sm3(self.signer.public_key.point[1:])[12:].hex()

    def own_anchor(self, root: bytes, block: int) -> TxReceipt | None:
        # 2.x has no log filter over RPC: read the block's transactions to our contract from our account.
        found = self._rpc("getBlockByNumber", self.group_id, hex(block), True) or {}
        for tx in found.get("transactions") or ():
            if not isinstance(tx, dict):
                continue
            if (str(tx.get("from", "")).lower() != self.address
                    or str(tx.get("to", "")).lower() != "0x" + self._contract.hex()):
                continue
            rec = self.receipt(bytes.fromhex(str(tx["hash"])[2:]))
            if rec is not None and rec.ok and self.anchored_in(rec, root) is not None:
                return rec
        return None

    def lookup(self, root: bytes) -> AnchorInfo | None:
        data = selector(ANCHOR_INFO_SIG) + abi_encode(["bytes32"], [root])
        out = self._rpc("call", self.group_id, {"from": "0x" + bytes(20).hex(), "to": "0x" + self._contract.hex(),
                                                 "value": "0x0", "data": "0x" + data.hex()})
        output = out.get("output", "0x") if isinstance(out, dict) else out
        raw = bytes.fromhex(str(output)[2:])
        if not raw:
            return None
        block, gw, batch, count = abi_decode(["uint256", "string", "uint64", "uint32"], raw)
        return None if block == 0 else AnchorInfo(int(block), str(gw), int(batch), int(count))
