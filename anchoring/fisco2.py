"""FISCO BCOS 2.x native RPC with 国密 (SM2/SM3) transactions: the ``fisco2`` chain client.

国密 chains cannot use Web3 RPC (its transactions are secp256k1 + keccak). A 2.x transaction is the
RLP list ``[randomid, gasPrice, gasLimit, blockLimit, to, value, data, fiscoChainId, groupId, extraData,
v, r, s]``. The signing hash is SM3 over the RLP of the first ten fields; the signature is SM2 with the
default user ID over that 32-byte hash, ``v`` carries the signer's 64-byte public key (X‖Y, a fixed-length
string) and ``r``, ``s`` are RLP integers: minimal, so a value below 2^248 is shorter than 32 bytes (the
node's RLP reader refuses a leading zero byte, and a refused transaction would be resent forever). The
transaction hash is SM3 of the whole signed RLP. Function selectors and event topics are SM3-based too,
so the contract must be compiled and deployed with FISCO's 国密 toolchain; this client only calls it.

The node accepts ``current < blockLimit <= current + 1000``: the block number is fetched right before
every signature (a cached one is the classic cause of ``BlockLimitCheckFailed`` after long uptimes), and
``randomid`` is 128 random bits so two transactions never collide.

Every answer from the node is untrusted input: its JSON, hex strings and ABI data are checked field by
field, and anything off raises :class:`MalformedReply` (transport failures: :class:`ChainUnavailable`).

No FISCO node can run on our CI machines: the encoder is tested against hand-derived RLP and a
transaction from FISCO's own documentation, the SM2 signatures against OpenSSL, the client against
replies shaped like a 2.x node's; ``tests/integration/test_fisco2.py`` talks to a live node only when
``TIYI_FISCO_RPC`` is set.
"""

from __future__ import annotations

import http.client
import json
import re
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import rlp
from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_abi.exceptions import DecodingError, EncodingError
from rlp.exceptions import DecodingError as RlpDecodingError

from anchoring.chain import (
    ADDRESS_SIZE,
    MAX_KEY_HISTORY,
    SM2_POINT_SIZE,
    AnchorInfo,
    AnchorKind,
    GatewayEntry,
    KeyRecord,
    SignedTx,
    TxReceipt,
)
from anchoring.errors import (
    AlreadyAnchored,
    ChainUnavailable,
    MalformedReply,
    MalformedTransaction,
    StaleTransaction,
    TransactionFailed,
)
from edge.errors import SignatureError
from edge.sm2 import N, Sm2Signer, decode_signature, generate_signer
from edge.sm3 import sm3

BLOCK_LIMIT_AHEAD = 500  # within the node's window of 1000, with room for a slow submission
ANCHOR_GAS = 300_000
REGISTRY_GAS = 1_000_000  # a key push stores ~6 words; FISCO charges no gas, the limit only bounds execution
RPC_TIMEOUT_S = 10
MAX_REPLY_BYTES = 32 * 1024 * 1024  # a block with its transactions is the largest reply we ask for
RECEIPT_WAIT_S = 60.0  # registry writes: how long to wait for the receipt before reporting the outcome unknown
RECEIPT_POLL_S = 0.5

U256_BYTES = 32  # FISCO reads every integer field of a 2.x transaction as u256
_ZERO_ADDRESS = bytes(ADDRESS_SIZE)
_HEX = re.compile(r"[0-9a-fA-F]*")


def selector(signature: str) -> bytes:
    """国密 function selector: the first 4 bytes of SM3 of the canonical signature."""
    return sm3(signature.encode())[:4]


def event_topic(signature: str) -> bytes:
    return sm3(signature.encode())


# The Anchor.sol interface (anchoring/contracts/Anchor.sol), by canonical signature.
ANCHOR_SIG = "anchor(uint8,string,bytes32,uint64,uint32)"
ANCHORED_AT_SIG = "anchoredAt(address,uint8,string,bytes32)"
LATEST_ANCHORED_SIG = "latestAnchored(address,uint8,string)"
GATEWAY_INFO_SIG = "gatewayInfo(string)"
GATEWAY_KEY_SIG = "gatewayKey(string,uint256)"
ADMIN_SIG = "admin()"
IS_OPERATOR_SIG = "isOperator(address)"
APPROVE_OPERATOR_SIG = "approveOperator(address)"
REVOKE_OPERATOR_SIG = "revokeOperator(address)"
TRANSFER_ADMIN_SIG = "transferAdmin(address)"
REGISTER_GATEWAY_SIG = "registerGateway(string,bytes,address)"
ROTATE_GATEWAY_KEY_SIG = "rotateGatewayKey(string,bytes,address)"
REVOKE_GATEWAY_SIG = "revokeGateway(string)"
ANCHORED_EVENT_SIG = "Anchored(bytes32,address,uint8,string,uint64,uint32,uint256)"

# Solidity's revert payload Error(string): the 国密 toolchain hashes its selector with SM3 too.
_REVERT_SELECTORS = (selector("Error(string)"), bytes.fromhex("08c379a0"))

# Receipt status codes of FISCO BCOS 2.x that a registry write can meet, for readable errors.
_STATUS_NAMES = {
    0x0C: "OutOfGas",
    0x0F: "NonceCheckFail",
    0x10: "BlockLimitCheckFail",
    0x12: "NoDeployPermission",
    0x13: "NoCallPermission",
    0x14: "NoTxPermission",
    0x16: "RevertInstruction",
    0x19: "PermissionDenied",
    0x1A: "CallAddressError",
    0x2710: "NonceCheckFail",
    0x2711: "BlockLimitCheckFail",
    0x2714: "AlreadyInTxPool",
    0x2715: "TxAlreadyInChain",
}
# sendRawTransaction error codes: the node already holds (or mined) this very transaction / its block limit passed.
_KNOWN_TX_CODES = {10004, 10005}
_STALE_TX_CODES = {10001}


# ------------------------------------------------------------------------------------------------ transactions
def _check_uint(name: str, value: int, size: int = U256_BYTES) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << (8 * size):
        raise MalformedTransaction(f"{name} must be an integer in 0..2^{8 * size}-1")


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

    def __post_init__(self) -> None:
        for name in ("randomid", "gas_price", "gas_limit", "block_limit", "value", "chain_id", "group_id"):
            _check_uint(name, getattr(self, name))
        if not isinstance(self.to, bytes) or len(self.to) not in (0, ADDRESS_SIZE):
            raise MalformedTransaction("to must be 20 bytes (or empty for a deployment)")
        if not isinstance(self.data, bytes) or not isinstance(self.extra_data, bytes):
            raise MalformedTransaction("data and extraData must be bytes")

    def fields(self) -> list[Any]:
        """The ten fields as RLP items: integers (``rlp`` writes them minimally) and byte strings."""
        return [
            self.randomid,
            self.gas_price,
            self.gas_limit,
            self.block_limit,
            self.to,
            self.value,
            self.data,
            self.chain_id,
            self.group_id,
            self.extra_data,
        ]

    def signing_hash(self) -> bytes:
        return sm3(rlp.encode(self.fields()))

    def sign(self, signer: Sm2Signer) -> SignedTx:
        """RLP of the ten fields plus v = public key (64 bytes), r and s as minimal integers; hash = SM3 of all."""
        point = signer.public_key.point
        if len(point) != 1 + SM2_POINT_SIZE or point[0] != 0x04:
            raise MalformedTransaction("the signer's public key is not an uncompressed SM2 point")
        try:
            r, s = decode_signature(signer.sign(self.signing_hash()))
        except SignatureError as exc:
            raise MalformedTransaction(f"the SM2 signer returned an unusable signature: {exc}") from exc
        if not (0 < r < N and 0 < s < N):  # decode_signature checks too; a zero r or s has no valid encoding
            raise MalformedTransaction("the SM2 signer returned r or s outside 1..n-1")
        raw = rlp.encode([*self.fields(), point[1:], r, s])
        return SignedTx(raw=raw, tx_hash=sm3(raw), nonce=self.randomid)


def _rlp_uint(items: Sequence[bytes], i: int, name: str, *, min_bytes: int = 0) -> int:
    """An RLP integer: big-endian, no leading zero byte (zero is the empty string), at most 32 bytes."""
    b = items[i]
    if not min_bytes <= len(b) <= U256_BYTES:
        raise MalformedTransaction(f"{name} must be {min_bytes}..{U256_BYTES} bytes, got {len(b)}")
    if b[:1] == b"\x00":
        raise MalformedTransaction(f"{name} is not a minimal RLP integer (leading zero byte)")
    return int.from_bytes(b, "big")


def decode_transaction(raw: bytes) -> tuple[GmTransaction, bytes, int, int]:
    """Inverse of ``sign``, as strict as the node: the fields, the public key (X‖Y), r and s.

    ``rlp``'s strict mode refuses non-canonical lengths and trailing bytes, not leading zeros in integers
    (it cannot know which strings are integers): those are checked here, field by field.
    """
    try:
        items = rlp.decode(bytes(raw), strict=True)
    except (RlpDecodingError, TypeError) as exc:
        raise MalformedTransaction(f"not a FISCO BCOS 2.x transaction: bad RLP ({exc})") from exc
    if not isinstance(items, list) or len(items) != 13:
        raise MalformedTransaction("not a FISCO BCOS 2.x transaction: expected a list of 13 RLP items")
    if not all(isinstance(i, bytes) for i in items):
        raise MalformedTransaction("not a FISCO BCOS 2.x transaction: an item is a nested list")
    to = items[4]
    if len(to) not in (0, ADDRESS_SIZE):
        raise MalformedTransaction(f"to must be 0 or 20 bytes, got {len(to)}")
    pub = items[10]
    if len(pub) != SM2_POINT_SIZE:
        raise MalformedTransaction(f"v must be the 64-byte SM2 public key, got {len(pub)} bytes")
    tx = GmTransaction(
        _rlp_uint(items, 0, "randomid"),
        _rlp_uint(items, 1, "gasPrice"),
        _rlp_uint(items, 2, "gasLimit"),
        _rlp_uint(items, 3, "blockLimit"),
        to,
        _rlp_uint(items, 5, "value"),
        items[6],
        _rlp_uint(items, 7, "fiscoChainId"),
        _rlp_uint(items, 8, "groupId"),
        items[9],
    )
    return tx, pub, _rlp_uint(items, 11, "r", min_bytes=1), _rlp_uint(items, 12, "s", min_bytes=1)


# ------------------------------------------------------------------------------------------------ reply parsing
def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _hex_bytes(value: Any, what: str, size: int | None = None) -> bytes:
    """A ``0x``-prefixed hex string from the node, decoded; MalformedReply for anything else."""
    if not isinstance(value, str) or not value.startswith("0x") or len(value) % 2 or not _HEX.fullmatch(value, 2):
        raise MalformedReply(f"{what}: expected 0x-prefixed hex, got {_show(value)}")
    out = bytes.fromhex(value[2:])
    if size is not None and len(out) != size:
        raise MalformedReply(f"{what}: expected {size} bytes, got {len(out)}")
    return out


def _hex_int(value: Any, what: str) -> int:
    """A ``0x``-prefixed hex quantity (``0x0``, ``0x1f``) of at most 256 bits."""
    if (
        not isinstance(value, str)
        or not value.startswith("0x")
        or not 3 <= len(value) <= 66
        or not _HEX.fullmatch(value, 2)
    ):
        raise MalformedReply(f"{what}: expected a 0x-hex number, got {_show(value)}")
    return int(value, 16)


def _field(obj: Any, key: str, what: str) -> Any:
    if not isinstance(obj, dict):
        raise MalformedReply(f"{what}: expected a JSON object, got {type(obj).__name__}")
    if key not in obj:
        raise MalformedReply(f"{what}: missing field {key!r}")
    return obj[key]


def _abi(types: Sequence[str], data: bytes, what: str) -> tuple[Any, ...]:
    """ABI-decode contract output; short, padded-wrong or trailing-garbage data is refused."""
    if all(t in ("address", "bool", "bytes32") or t.startswith(("uint", "int")) for t in types) and len(
        data
    ) != 32 * len(types):
        raise MalformedReply(f"{what}: expected {32 * len(types)} bytes of ABI data, got {len(data)}")
    try:
        return abi_decode(list(types), data, strict=True)
    except (DecodingError, ValueError, OverflowError) as exc:  # ValueError: also invalid UTF-8 in a string
        raise MalformedReply(f"{what}: undecodable ABI data ({type(exc).__name__})") from exc


def _address(value: Any) -> bytes:
    """eth_abi's checksummed address string as 20 bytes."""
    return bytes.fromhex(str(value)[2:])


def _revert_reason(output: Any) -> str | None:
    """The message of a Solidity ``require``/``revert`` in a call or receipt output, when there is one."""
    if not isinstance(output, str):
        return None
    try:
        data = _hex_bytes(output, "output")
    except MalformedReply:
        return None
    if len(data) < 4 or data[:4] not in _REVERT_SELECTORS:
        return None
    try:
        (reason,) = abi_decode(["string"], data[4:])
    except (DecodingError, ValueError, OverflowError):
        return None
    text = str(reason).replace("\n", " ")
    return text[:200]


def _status_text(code: int, output: Any) -> str:
    name = _STATUS_NAMES.get(code, "error")
    reason = _revert_reason(output)
    return f"status {code:#x} {name}" + (f": {reason}" if reason else "")


@dataclass(frozen=True, slots=True)
class _Log:
    address: bytes
    topics: tuple[bytes, ...]
    data: bytes


def _parse_log(entry: Any) -> _Log:
    address = _hex_bytes(_field(entry, "address", "receipt log"), "receipt log address", ADDRESS_SIZE)
    topics = _field(entry, "topics", "receipt log")
    if not isinstance(topics, list):
        raise MalformedReply(f"receipt log topics: expected a list, got {type(topics).__name__}")
    data = _hex_bytes(_field(entry, "data", "receipt log"), "receipt log data")
    return _Log(address, tuple(_hex_bytes(t, "receipt log topic", 32) for t in topics), data)


# ------------------------------------------------------------------------------------------------ the client
class Fisco2ChainClient:
    """``ChainClient`` over the FISCO BCOS 2.x JSON-RPC (port 8545 by default), for 国密 groups."""

    def __init__(
        self,
        url: str,
        signer: Sm2Signer,
        contract: bytes,
        group_id: int = 1,
        chain_id: int = 1,
        *,
        receipt_wait_s: float = RECEIPT_WAIT_S,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise TransactionFailed(f"FISCO RPC URL must be http(s)://, got {url!r}")
        if not isinstance(contract, bytes) or len(contract) != ADDRESS_SIZE:
            raise TransactionFailed("the Anchor contract address must be 20 bytes")
        self.url = url
        self.signer = signer
        self._contract = contract
        self.group_id = group_id
        self._chain_id = chain_id
        self._account = sm3(signer.public_key.point[1:])[12:]
        self._read_only = False
        self._receipt_wait_s = receipt_wait_s
        self._sleep = sleep
        self._ids = 0

    @classmethod
    def reader(cls, url: str, contract: bytes, group_id: int = 1, chain_id: int = 1) -> Fisco2ChainClient:
        """A client for verification: it holds a throwaway key and refuses to sign anything."""
        client = cls(url, generate_signer(), contract, group_id, chain_id)
        client._read_only = True
        return client

    @property
    def chain_id(self) -> int:
        return self._chain_id

    @property
    def contract(self) -> bytes:
        return self._contract

    @property
    def account(self) -> bytes:
        """The 国密 account of our key: the last 20 bytes of SM3 of the public key X‖Y."""
        return self._account

    # ------------------------------------------------------------------ transport
    def _rpc(self, method: str, *params: Any) -> Any:
        self._ids += 1
        req_id = self._ids
        body = json.dumps({"jsonrpc": "2.0", "id": req_id, "method": method, "params": list(params)}).encode()
        req = urllib.request.Request(self.url, body, {"Content-Type": "application/json"})  # noqa: S310
        try:
            with urllib.request.urlopen(req, timeout=RPC_TIMEOUT_S) as resp:  # noqa: S310 - configured node URL
                data = resp.read(MAX_REPLY_BYTES + 1)
        except (urllib.error.URLError, http.client.HTTPException, TimeoutError, OSError) as exc:
            raise ChainUnavailable(f"FISCO node {self.url} unreachable: {exc}") from exc
        if len(data) > MAX_REPLY_BYTES:
            raise MalformedReply(f"{method}: reply larger than {MAX_REPLY_BYTES} bytes")
        try:
            reply = json.loads(data)
        except ValueError as exc:  # includes invalid UTF-8
            raise MalformedReply(f"{method}: the node's reply is not JSON") from exc
        if not isinstance(reply, dict):
            raise MalformedReply(f"{method}: the node's reply is not a JSON-RPC object")
        if reply.get("id") != req_id:
            raise MalformedReply(f"{method}: reply id {_show(reply.get('id'))} does not answer request {req_id}")
        error = reply.get("error")
        if error is not None:
            code = error.get("code") if isinstance(error, dict) else None
            message = error.get("message") if isinstance(error, dict) else error
            raise _NodeError(method, code if isinstance(code, int) else None, str(message)[:200])
        if "result" not in reply:
            raise MalformedReply(f"{method}: reply has neither result nor error")
        return reply["result"]

    def _call(
        self,
        signature: str,
        types: Sequence[str],
        args: Sequence[Any],
        out: Sequence[str],
        sender: bytes = _ZERO_ADDRESS,
    ) -> tuple[Any, ...]:
        """A view call; the output decoded as ``out``. A revert raises TransactionFailed with its reason."""
        data = selector(signature) + abi_encode(list(types), list(args))
        result = self._rpc(
            "call",
            self.group_id,
            {"from": "0x" + sender.hex(), "to": "0x" + self._contract.hex(), "value": "0x0", "data": "0x" + data.hex()},
        )
        what = f"call {signature.split('(', maxsplit=1)[0]}"
        output = _field(result, "output", what)
        status = _hex_int(_field(result, "status", what), f"{what} status")
        if status != 0:
            raise TransactionFailed(f"{what} refused by the contract: {_status_text(status, output)}")
        return _abi(out, _hex_bytes(output, f"{what} output"), what)

    def block_number(self) -> int:
        return _hex_int(self._rpc("getBlockNumber", self.group_id), "getBlockNumber")

    # ------------------------------------------------------------------ transactions
    def _sign(self, data: bytes, gas: int) -> SignedTx:
        if self._read_only:
            raise TransactionFailed("this FISCO client is a reader: it has no key to sign with")
        tx = GmTransaction(
            randomid=secrets.randbits(128),
            gas_price=0,
            gas_limit=gas,
            block_limit=self.block_number() + BLOCK_LIMIT_AHEAD,
            to=self._contract,
            value=0,
            data=data,
            chain_id=self._chain_id,
            group_id=self.group_id,
        )
        return tx.sign(self.signer)

    def prepare_anchor(self, kind: AnchorKind, gw: str, root: bytes, number: int, count: int) -> SignedTx:
        kind = AnchorKind(kind)
        if len(root) != 32 or not any(root):
            raise TransactionFailed("an anchored root is 32 bytes and not zero")
        if not 1 <= len(gw.encode()) <= 64 or not 1 <= number < 1 << 64 or not 1 <= count < 1 << 32:
            raise TransactionFailed(
                "the contract takes a 1..64-byte gateway id, number in 1..2^64-1, count in 1..2^32-1"
            )
        if self.anchored_at(self._account, kind, gw, root) is not None:
            raise AlreadyAnchored(f"root {root.hex()} is already anchored by this account for {gw} ({kind.label})")
        data = selector(ANCHOR_SIG) + abi_encode(
            ["uint8", "string", "bytes32", "uint64", "uint32"], [int(kind), gw, root, number, count]
        )
        return self._sign(data, ANCHOR_GAS)

    def send(self, tx: SignedTx) -> None:
        self.send_raw(tx.raw)

    def resync_nonce(self) -> None:
        """Nothing cached: 2.x transactions carry a random id, not an account nonce."""

    def send_raw(self, raw: bytes) -> None:
        """Submit a signed transaction; re-sending one the node already holds or mined is not an error."""
        try:
            result = self._rpc("sendRawTransaction", self.group_id, "0x" + raw.hex())
        except _NodeError as exc:
            text = exc.message.lower()
            if exc.code in _KNOWN_TX_CODES or "already" in text or "known" in text:
                return
            if exc.code in _STALE_TX_CODES or "blocklimit" in text or "block limit" in text:
                # Stored too long (a long outage): this transaction can never be mined; sign a new one.
                raise StaleTransaction(f"transaction outlived its block limit: {exc}") from exc
            raise
        if _hex_bytes(result, "sendRawTransaction", 32) != sm3(raw):
            raise MalformedReply("sendRawTransaction: the node reports another transaction hash than ours")

    def _receipt_reply(self, tx_hash: bytes) -> dict[str, Any] | None:
        r = self._rpc("getTransactionReceipt", self.group_id, "0x" + tx_hash.hex())
        if r is None:
            return None
        if not isinstance(r, dict):
            raise MalformedReply(f"getTransactionReceipt: expected an object or null, got {type(r).__name__}")
        if _hex_bytes(_field(r, "transactionHash", "receipt"), "receipt transactionHash", 32) != tx_hash:
            raise MalformedReply("getTransactionReceipt: the node answered with another transaction's receipt")
        return r

    @staticmethod
    def _to_receipt(tx_hash: bytes, r: dict[str, Any]) -> TxReceipt:
        status = _hex_int(_field(r, "status", "receipt"), "receipt status")
        block = _hex_int(_field(r, "blockNumber", "receipt"), "receipt blockNumber")
        block_hash = _hex_bytes(_field(r, "blockHash", "receipt"), "receipt blockHash", 32)
        logs = _field(r, "logs", "receipt")
        if not isinstance(logs, list):
            raise MalformedReply(f"receipt logs: expected a list, got {type(logs).__name__}")
        return TxReceipt(tx_hash, status == 0, block, block_hash, tuple(_parse_log(entry) for entry in logs))

    def receipt(self, tx_hash: bytes) -> TxReceipt | None:
        r = self._receipt_reply(tx_hash)
        return None if r is None else self._to_receipt(tx_hash, r)

    # ------------------------------------------------------------------ anchors
    def anchored_in(self, receipt: TxReceipt, root: bytes) -> AnchorInfo | None:
        topic = event_topic(ANCHORED_EVENT_SIG)
        for entry in receipt.logs:
            log = entry if isinstance(entry, _Log) else _parse_log(entry)
            if log.address != self._contract or len(log.topics) < 1 or log.topics[0] != topic:
                continue
            if len(log.topics) != 3:
                raise MalformedReply(f"Anchored event with {len(log.topics)} topics (root and anchorer are indexed)")
            if log.topics[1] != root:
                continue
            if any(log.topics[2][:12]):
                raise MalformedReply("Anchored event: the anchorer topic is not an address")
            kind, gw, number, count, block = _abi(
                ["uint8", "string", "uint64", "uint32", "uint256"], log.data, "Anchored event"
            )
            return AnchorInfo(int(block), log.topics[2][12:], self._kind(kind), str(gw), int(number), int(count))
        return None

    @staticmethod
    def _kind(value: Any) -> AnchorKind:
        try:
            return AnchorKind(int(value))
        except ValueError as exc:
            raise MalformedReply(f"unknown anchor kind {_show(value)} from the chain") from exc

    def anchored_at(self, anchorer: bytes, kind: AnchorKind, gw: str, root: bytes) -> AnchorInfo | None:
        block, number, count = self._call(
            ANCHORED_AT_SIG,
            ["address", "uint8", "string", "bytes32"],
            ["0x" + anchorer.hex(), int(kind), gw, root],
            ["uint256", "uint64", "uint32"],
        )
        if block == 0:
            return None
        return AnchorInfo(int(block), anchorer, AnchorKind(kind), gw, int(number), int(count))

    def latest_anchored(self, anchorer: bytes, kind: AnchorKind, gw: str) -> tuple[int, int] | None:
        number, block = self._call(
            LATEST_ANCHORED_SIG,
            ["address", "uint8", "string"],
            ["0x" + anchorer.hex(), int(kind), gw],
            ["uint64", "uint256"],
        )
        return None if number == 0 else (int(number), int(block))

    def own_anchor(self, kind: AnchorKind, gw: str, root: bytes) -> tuple[AnchorInfo, TxReceipt] | None:
        """Our anchor of ``root`` and its receipt: the contract names the block, the block our transaction.

        2.x has no log filter over RPC, so the block's transactions from our account to our contract are read
        and their receipts searched for the event. The contract holding an anchor by us that no transaction
        of ours in that block made is a lie (or a broken node): refused, not reported as "none".
        """
        info = self.anchored_at(self._account, kind, gw, root)
        if info is None:
            return None
        block = self._rpc("getBlockByNumber", self.group_id, hex(info.block_number), True)
        if block is None:
            raise MalformedReply(f"the contract holds our anchor in block {info.block_number}, which the node lacks")
        txs = _field(block, "transactions", "getBlockByNumber")
        if not isinstance(txs, list):
            raise MalformedReply(f"getBlockByNumber transactions: expected a list, got {type(txs).__name__}")
        for tx in txs:
            sender = _hex_bytes(_field(tx, "from", "block transaction"), "transaction from", ADDRESS_SIZE)
            to = _field(tx, "to", "block transaction")
            if sender != self._account or to is None:
                continue
            if _hex_bytes(to, "transaction to", ADDRESS_SIZE) != self._contract:
                continue
            tx_hash = _hex_bytes(_field(tx, "hash", "block transaction"), "transaction hash", 32)
            rec = self.receipt(tx_hash)
            if rec is None or not rec.ok:
                continue
            event = self.anchored_in(rec, root)
            if event is None or (event.anchorer, event.kind, event.gw) != (self._account, info.kind, gw):
                continue
            if event != info or rec.block_number != info.block_number:
                raise MalformedReply(
                    f"our anchor's event ({event}) and receipt (block {rec.block_number}) disagree "
                    f"with the contract ({info})"
                )
            return info, rec
        raise MalformedReply(
            f"the contract holds our anchor of {root.hex()} in block {info.block_number}, but no "
            "transaction of ours there made it"
        )

    # ------------------------------------------------------------------ registry reads
    def gateway(self, gw: str) -> GatewayEntry | None:
        operator, revoked, revoked_block, count = self._call(
            GATEWAY_INFO_SIG, ["string"], [gw], ["address", "bool", "uint64", "uint256"]
        )
        operator_b = _address(operator)
        if operator_b == _ZERO_ADDRESS:
            return None
        if count > MAX_KEY_HISTORY:
            raise MalformedReply(
                f"gateway {gw!r} has {count} registry keys; more than {MAX_KEY_HISTORY} are refused, not truncated"
            )
        if count == 0:
            raise MalformedReply(f"gateway {gw!r} is registered without a key")
        keys: list[KeyRecord] = []
        for i in range(count):
            key, anchorer, since = self._call(
                GATEWAY_KEY_SIG, ["string", "uint256"], [gw, i], ["bytes", "address", "uint64"]
            )
            if len(key) != SM2_POINT_SIZE:
                raise MalformedReply(f"gateway {gw!r} key {i} is {len(key)} bytes, not a 64-byte SM2 point")
            if keys and since < keys[-1].since_block:
                raise MalformedReply(f"gateway {gw!r} key {i} predates key {i - 1}: a history out of order")
            keys.append(KeyRecord(bytes(key), _address(anchorer), int(since)))
        if revoked and revoked_block < keys[-1].since_block:
            raise MalformedReply(f"gateway {gw!r} is revoked in block {revoked_block}, before its last key")
        return GatewayEntry(gw, operator_b, bool(revoked), int(revoked_block), tuple(keys))

    def admin(self) -> bytes:
        (who,) = self._call(ADMIN_SIG, [], [], ["address"])
        return _address(who)

    def is_operator(self, account: bytes) -> bool:
        (yes,) = self._call(IS_OPERATOR_SIG, ["address"], ["0x" + account.hex()], ["bool"])
        return bool(yes)

    # ------------------------------------------------------------------ registry writes (tiyi chain)
    def _transact(self, signature: str, types: Sequence[str], args: Sequence[Any], what: str) -> TxReceipt:
        """Sign, send and await an administrative transaction; a refusal raises with the node's reason.

        A call from our account first surfaces the contract's reason without spending a transaction.
        """
        try:
            self._call(signature, types, args, [], sender=self._account)
        except TransactionFailed as exc:
            raise TransactionFailed(f"{what}: {exc}") from exc
        except EncodingError as exc:
            raise TransactionFailed(f"{what}: invalid argument ({exc})") from exc
        stx = self._sign(selector(signature) + abi_encode(list(types), list(args)), REGISTRY_GAS)
        self.send(stx)
        deadline = time.monotonic() + self._receipt_wait_s
        while (r := self._receipt_reply(stx.tx_hash)) is None:
            if time.monotonic() >= deadline:
                raise ChainUnavailable(
                    f"{what}: no receipt for tx 0x{stx.tx_hash.hex()} within "
                    f"{self._receipt_wait_s:.0f} s; it may still be mined"
                )
            self._sleep(RECEIPT_POLL_S)
        rec = self._to_receipt(stx.tx_hash, r)
        if not rec.ok:
            message = r.get("message")
            detail = (
                message
                if isinstance(message, str) and message
                else _status_text(_hex_int(r["status"], "receipt status"), r.get("output"))
            )
            raise TransactionFailed(f"{what} failed on chain (tx 0x{stx.tx_hash.hex()}): {detail[:200]}")
        return rec

    def approve_operator(self, operator: bytes) -> TxReceipt:
        return self._transact(
            APPROVE_OPERATOR_SIG, ["address"], ["0x" + operator.hex()], f"approving operator 0x{operator.hex()}"
        )

    def revoke_operator(self, operator: bytes) -> TxReceipt:
        return self._transact(
            REVOKE_OPERATOR_SIG, ["address"], ["0x" + operator.hex()], f"revoking operator 0x{operator.hex()}"
        )

    def transfer_admin(self, new_admin: bytes) -> TxReceipt:
        return self._transact(
            TRANSFER_ADMIN_SIG,
            ["address"],
            ["0x" + new_admin.hex()],
            f"transferring the administrator role to 0x{new_admin.hex()}",
        )

    def register_gateway(self, gw: str, sm2_public_key: bytes, anchorer: bytes) -> TxReceipt:
        return self._transact(
            REGISTER_GATEWAY_SIG,
            ["string", "bytes", "address"],
            [gw, sm2_public_key, "0x" + anchorer.hex()],
            f"registering {gw}",
        )

    def rotate_gateway_key(self, gw: str, sm2_public_key: bytes, anchorer: bytes) -> TxReceipt:
        return self._transact(
            ROTATE_GATEWAY_KEY_SIG,
            ["string", "bytes", "address"],
            [gw, sm2_public_key, "0x" + anchorer.hex()],
            f"rotating {gw}'s key",
        )

    def revoke_gateway(self, gw: str) -> TxReceipt:
        return self._transact(REVOKE_GATEWAY_SIG, ["string"], [gw], f"revoking {gw}")


class _NodeError(TransactionFailed):
    """A JSON-RPC error object from the node: its code (when numeric) and message."""

    def __init__(self, method: str, code: int | None, message: str) -> None:
        super().__init__(f"FISCO node refused {method}: {message}" + ("" if code is None else f" (code {code})"))
        self.code = code
        self.message = message
