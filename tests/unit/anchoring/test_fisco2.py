"""FISCO BCOS 2.x 国密 transactions and the ``fisco2`` client: RLP layout, SM3 hashes and selectors, and every read,
write and malformed reply against a local node replaying recorded 2.x-shaped replies (fisco2_replies.json)."""

from __future__ import annotations

import copy
import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import rlp

from anchoring import fisco2
from anchoring.chain import (
    MAX_KEY_HISTORY,
    AnchorInfo,
    AnchorKind,
    ChainClient,
    ChainReader,
    KeyPeriod,
    anchor_artifact,
)
from anchoring.errors import (
    AlreadyAnchored,
    ChainUnavailable,
    MalformedReply,
    MalformedTransaction,
    StaleTransaction,
    TransactionFailed,
)
from anchoring.fisco2 import BLOCK_LIMIT_AHEAD, Fisco2ChainClient, GmTransaction, decode_transaction
from edge.sm2 import GmsslSm2Signer, GmsslSm2Verifier, N, Sm2PrivateKey, Sm2PublicKey, encode_signature, generate_signer
from edge.sm3 import sm3

FIXTURES = json.loads((Path(__file__).parent / "fisco2_replies.json").read_text(encoding="utf-8"))
REPLIES: dict[str, Any] = FIXTURES["replies"]
OURS = bytes.fromhex(FIXTURES["accounts"]["ours"][2:])
THEIRS = bytes.fromhex(FIXTURES["accounts"]["theirs"][2:])
OPERATOR = bytes.fromhex(FIXTURES["accounts"]["operator"][2:])
CONTRACT = bytes.fromhex(FIXTURES["accounts"]["contract"][2:])
ROOT = bytes.fromhex(FIXTURES["root"][2:])
GW = "gw-1"


def our_signer() -> GmsslSm2Signer:
    return GmsslSm2Signer(Sm2PrivateKey(int("11" * 32, 16)))


def their_signer() -> GmsslSm2Signer:
    return GmsslSm2Signer(Sm2PrivateKey(int("22" * 32, 16)))


# ------------------------------------------------------------------------------ hand-built ABI (no eth_abi here)
def sel(signature: str) -> str:
    return hashlib.new("sm3", signature.encode()).digest()[:4].hex()


def word(n: int) -> str:
    return f"{n:064x}"


def addr(a: bytes) -> str:
    return "00" * 12 + a.hex()


def tail(b: bytes) -> str:
    """A dynamic value's tail: its length, then its bytes right-padded to whole words."""
    return word(len(b)) + b.hex().ljust((len(b) + 31) // 32 * 64, "0")


def data(signature: str, *words: str) -> str:
    return "0x" + sel(signature) + "".join(words)


ANCHORED_AT_OURS = data(
    "anchoredAt(address,uint8,string,bytes32)", addr(OURS), word(0), word(0x80), ROOT.hex(), tail(b"gw-1")
)
ANCHORED_AT_THEIRS = data(
    "anchoredAt(address,uint8,string,bytes32)", addr(THEIRS), word(0), word(0x80), ROOT.hex(), tail(b"gw-1")
)
LATEST_OURS_ROLLUP = data("latestAnchored(address,uint8,string)", addr(OURS), word(1), word(0x60), tail(b"gw-1"))
GATEWAY_INFO = data("gatewayInfo(string)", word(0x20), tail(b"gw-1"))


def gateway_key(i: int) -> str:
    return data("gatewayKey(string,uint256)", word(0x40), word(i), tail(b"gw-1"))


# ------------------------------------------------------------------------------------------- RLP: the layout
TX = GmTransaction(
    randomid=1,
    gas_price=0,
    gas_limit=300_000,
    block_limit=500,
    to=b"\x11" * 20,
    value=0,
    data=b"\xab",
    chain_id=1,
    group_id=1,
)
TX_FIELDS_PAYLOAD = (
    "01"  # randomid 1
    "80"  # gasPrice 0 (empty string)
    "83"
    "0493e0"  # gasLimit 300000
    "82"
    "01f4"  # blockLimit 500
    "94"
    + "11"
    * 20  # to
    + "80"  # value 0
    "81"
    "ab"  # data: one byte >= 0x80 needs a length prefix
    "01"  # fiscoChainId 1
    "01"  # groupId 1
    "80"  # extraData empty
)  # 36 bytes


def test_rlp_of_the_signed_fields_is_laid_out_by_hand() -> None:
    expected = bytes.fromhex("e4" + TX_FIELDS_PAYLOAD)  # list of 36 bytes: 0xc0 + 36
    assert rlp.encode(TX.fields()) == expected
    assert TX.signing_hash() == sm3(expected)


def test_signed_transaction_round_trip() -> None:
    signer = generate_signer()
    stx = TX.sign(signer)
    tx, pub, r, s = decode_transaction(stx.raw)
    assert tx == TX and pub == signer.public_key.point[1:]
    assert stx.tx_hash == sm3(stx.raw)
    assert GmsslSm2Verifier(signer.public_key).verify(TX.signing_hash(), encode_signature(r, s))


def _der_int(v: int) -> bytes:
    body = v.to_bytes(v.bit_length() // 8 + 1, "big")  # minimal, with a 00 sign byte when the top bit is set
    return bytes([0x02, len(body)]) + body


class FixedSigner:
    """Returns one DER signature whatever it signs: forces the r and s the encoder must write."""

    def __init__(self, r: int, s: int) -> None:
        body = _der_int(r) + _der_int(s)
        self.der = bytes([0x30, len(body)]) + body
        self.public_key = SimpleNamespace(point=b"\x04" + bytes(range(64)))

    def sign(self, message: bytes) -> bytes:
        return self.der


PUB = "b840" + bytes(range(64)).hex()  # v: a 64-byte string, 0xb7 + 1 length byte (0x40)


@pytest.mark.parametrize(
    ("r", "s", "expected"),
    [
        # r = 1 is the single byte 01; s = 0x80 needs a prefix: 81 80. Items: 36 + 66 + 1 + 2 = 105 = 0x69 bytes,
        # over 55, so the list header is f8 69.
        (1, 0x80, "f869" + TX_FIELDS_PAYLOAD + PUB + "01" + "8180"),
        # r = 2^247 is 31 bytes (80 00..00): 9f + 31 bytes; s = 2^248 - 1 is 31 bytes of ff. The old encoder wrote
        # both as a0 00 ..., with the leading zero the node refuses. Items: 36 + 66 + 32 + 32 = 166 = 0xa6.
        (1 << 247, (1 << 248) - 1, "f8a6" + TX_FIELDS_PAYLOAD + PUB + "9f80" + "00" * 30 + "9f" + "ff" * 31),
        # r = n - 1 takes all 32 bytes (a0 + 32); s = 2^8 is 01 00 (82 01 00). Items: 36 + 66 + 33 + 3 = 138 = 0x8a.
        (N - 1, 1 << 8, "f88a" + TX_FIELDS_PAYLOAD + PUB + "a0" + f"{N - 1:064x}" + "820100"),
    ],
)
def test_r_and_s_are_minimal_rlp_integers(r: int, s: int, expected: str) -> None:
    stx = TX.sign(cast(GmsslSm2Signer, FixedSigner(r, s)))
    assert stx.raw.hex() == expected
    assert stx.tx_hash == sm3(bytes.fromhex(expected))
    assert decode_transaction(stx.raw)[2:] == (r, s)


@pytest.mark.parametrize(("r", "s"), [(0, 5), (5, 0), (N, 5), (5, N + 1)])
def test_a_signature_with_r_or_s_outside_1_to_n_minus_1_is_refused_at_signing(r: int, s: int) -> None:
    with pytest.raises(MalformedTransaction, match="unusable signature"):
        TX.sign(cast(GmsslSm2Signer, FixedSigner(r, s)))


def test_real_signatures_always_decode_strictly() -> None:
    """~1 in 128 signatures has r or s below 2^248: 200 of them meet that case with probability ~0.8."""
    signer = generate_signer()
    for i in range(200):
        tx = GmTransaction(i, 0, 300_000, 500, b"\x11" * 20, 0, b"", 1, 1)
        assert decode_transaction(tx.sign(signer).raw)[0] == tx


def _raw(items: list[Any]) -> bytes:
    return bytes(rlp.encode(items))


def _good_items() -> list[Any]:
    return [*TX.fields(), bytes(range(64)), 5, 6]


def _with(i: int, value: Any) -> bytes:
    items = _good_items()
    items[i] = value
    return _raw(items)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (_raw(_good_items()[:12]), "13 RLP items"),
        (_raw([*_good_items(), b""]), "13 RLP items"),
        (_raw(b"\x01" * 40), "13 RLP items"),  # a string, not a list
        (_with(6, [b"nested"]), "nested list"),
        (_with(11, b"\x00\x05"), "r is not a minimal RLP integer"),
        (_with(12, b"\x00" + b"\x07" * 31), "s is not a minimal RLP integer"),
        (_with(11, b""), "r must be 1..32 bytes"),  # zero
        (_with(12, b"\x01" * 33), "s must be 1..32 bytes"),
        (_with(0, b"\x00\x01"), "randomid is not a minimal"),
        (_with(1, b"\x00"), "gasPrice is not a minimal"),  # zero written as a 00 byte instead of the empty string
        (_with(0, b"\x01" * 33), "randomid must be 0..32 bytes"),
        (_with(3, b"\x01" * 33), "blockLimit must be 0..32 bytes"),
        (_with(4, b"\x11" * 19), "to must be 0 or 20 bytes"),
        (_with(10, bytes(63)), "v must be the 64-byte"),
        (_with(10, b"\x04" + bytes(64)), "v must be the 64-byte"),  # the 65-byte point form is not what 2.x carries
        (_raw(_good_items()) + b"\x00", "bad RLP"),  # trailing byte
        (bytes.fromhex("c2") + bytes.fromhex("8105"), "bad RLP"),  # 05 written as a one-byte string: non-canonical
        (b"", "bad RLP"),
    ],
)
def test_decode_transaction_is_as_strict_as_the_node(raw: bytes, reason: str) -> None:
    with pytest.raises(MalformedTransaction, match=reason):
        decode_transaction(raw)


def test_a_deployment_without_to_decodes() -> None:
    tx, _, r, s = decode_transaction(_with(4, b""))
    assert tx.to == b"" and (r, s) == (5, 6)


def test_rlp_strict_mode_alone_does_not_check_integer_minimality() -> None:
    """Why decode_transaction checks leading zeros itself: ``rlp`` cannot tell integers from strings."""
    assert rlp.decode(bytes.fromhex("c3820005"), strict=True) == [b"\x00\x05"]
    assert rlp.decode(bytes.fromhex("c100"), strict=True) == [b"\x00"]


def test_a_gm_transaction_from_fisco_documentation_decodes_and_verifies() -> None:
    """The 国密 sendRawTransaction example of FISCO BCOS 2.x's JSON-RPC API page (FISCO-BCOS-DOC, docs/api.md):
    its signature verifies over SM3(RLP of the first ten fields) with v as the key, our definition exactly."""
    raw = bytes.fromhex(
        "f90114a003eebc46c9c0e3b84799097c5a6ccd6657a9295c11270407707366d0750fcd598411e1a30084b2d05e008201f594bab78c"
        "ea98af2320ad4ee81bba8a7473e0c8c48d80a48fff0fc40000000000000000000000000000000000000000000000000000000000"
        "0000040101a48fff0fc40000000000000000000000000000000000000000000000000000000000000004b8408234c544a9f3ce3b"
        "401a92cc7175602ce2a1e29b1ec135381c7d2a9e8f78f3edc9c06ee55252857c9a4560cb39e9d70d40f4331cace4d2b3121b967f"
        "a7a829f0a00f16d87c5065ad5c3b110ef0b97fe9a67b62443cb8ddde60d4e001a64429dc6ea03d2569e0449e9a900c236541afb9"
        "d8a8d5e1a36844439c7076f6e75ed624256f"
    )
    tx, pub, r, s = decode_transaction(raw)
    assert (tx.block_limit, tx.chain_id, tx.group_id) == (501, 1, 1)
    assert tx.to.hex() == "bab78cea98af2320ad4ee81bba8a7473e0c8c48d"
    assert GmsslSm2Verifier(Sm2PublicKey.from_point(b"\x04" + pub)).verify(tx.signing_hash(), encode_signature(r, s))


# ------------------------------------------------------------------------------------ selectors and the ABI
def _canonical(item: dict[str, Any]) -> str:
    return f"{item['name']}({','.join(i['type'] for i in item['inputs'])})"


def test_every_signature_the_client_uses_is_in_the_compiled_anchor_abi() -> None:
    abi = {_canonical(i) for i in anchor_artifact()["abi"] if i["type"] in ("function", "event")}
    used = {v for k, v in vars(fisco2).items() if k.endswith("_SIG")}
    assert len(used) == 14 and used <= abi
    assert fisco2.selector(fisco2.ANCHOR_SIG).hex() == sel("anchor(uint8,string,bytes32,uint64,uint32)")
    assert (
        fisco2.event_topic(fisco2.ANCHORED_EVENT_SIG)
        == hashlib.new("sm3", b"Anchored(bytes32,address,uint8,string,uint64,uint32,uint256)").digest()
    )


# ------------------------------------------------------------------------------------------ the replay node
Reply = str | dict[str, Any]


class ReplayNode:
    """A local HTTP JSON-RPC server answering with recorded FISCO 2.x replies, chosen by what the client asks.

    A ``call`` is answered only when its data is exactly the hand-built encoding a test registered, so each
    read test also checks what the client sends.
    """

    def __init__(self) -> None:
        self.block = 300
        self.requests: list[dict[str, Any]] = []
        self.calls: dict[str, Reply] = {}
        self.blocks: dict[str, Reply] = {}
        self.receipts: dict[str, Reply] = {}
        self.sent: list[bytes] = []
        self.send_reply: Reply | None = None
        self.sent_receipts: list[Reply | None] = []  # getTransactionReceipt of a sent tx, poll by poll
        self.raw: dict[str, Callable[[dict[str, Any]], bytes]] = {}  # method -> verbatim HTTP body
        node = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                node.requests.append(req)
                body = node.answer(req)
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_a: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, req: dict[str, Any]) -> bytes:
        m, p = req["method"], req["params"]
        if m in self.raw:
            return self.raw[m](req)
        reply: Reply | None = None
        if m == "getBlockNumber":
            self.block += 7
            reply = {**REPLIES["getBlockNumber"], "result": hex(self.block)}
        elif m == "call":
            reply = self.calls.get(p[1]["data"])
            if reply is None:
                reply = {"jsonrpc": "2.0", "error": {"code": -32602, "message": f"no recorded reply for {p[1]}"}}
        elif m == "getBlockByNumber":
            reply = self.blocks.get(p[1])
        elif m == "getTransactionReceipt":
            reply = self.receipts.get(p[1])
            sent = {"0x" + sm3(raw).hex() for raw in self.sent}
            if reply is None and p[1] in sent and self.sent_receipts:
                reply = self.sent_receipts.pop(0)
                if reply is not None:
                    reply = copy.deepcopy(REPLIES[reply] if isinstance(reply, str) else reply)
                    reply["result"]["transactionHash"] = p[1]
        elif m == "sendRawTransaction":
            self.sent.append(bytes.fromhex(p[1][2:]))
            reply = self.send_reply or {"jsonrpc": "2.0", "result": "0x" + sm3(self.sent[-1]).hex()}
        if reply is None:
            reply = {"jsonrpc": "2.0", "result": None}
        out = copy.deepcopy(REPLIES[reply] if isinstance(reply, str) else reply)
        out["id"] = req["id"]
        return json.dumps(out).encode()


@pytest.fixture
def node() -> Iterator[ReplayNode]:
    n = ReplayNode()
    yield n
    n.server.shutdown()


def ours(node: ReplayNode, **kw: Any) -> Fisco2ChainClient:
    return Fisco2ChainClient(node.url, our_signer(), CONTRACT, **kw)


def test_the_client_fills_the_chain_client_role(node: ReplayNode) -> None:
    client = ours(node)
    members = {n for role in (ChainReader, ChainClient) for n in vars(role) if not n.startswith("_")}
    assert {"anchored_at", "latest_anchored", "gateway", "own_anchor", "prepare_anchor", "account"} <= members
    assert all(hasattr(client, n) for n in members)
    assert client.contract == CONTRACT and client.chain_id == 1


def test_the_account_is_the_last_20_bytes_of_sm3_of_x_and_y(node: ReplayNode) -> None:
    point = our_signer().public_key.point
    assert ours(node).account == hashlib.new("sm3", point[1:]).digest()[-20:] == OURS


def test_block_number(node: ReplayNode) -> None:
    assert ours(node).block_number() == 307


# --------------------------------------------------------------------------------------------------- anchors
def test_anchored_at_reads_the_contract_and_block_zero_means_none(node: ReplayNode) -> None:
    client = ours(node)
    node.calls[ANCHORED_AT_OURS] = "call anchoredAt found"
    assert client.anchored_at(OURS, AnchorKind.BATCH, GW, ROOT) == AnchorInfo(290, OURS, AnchorKind.BATCH, GW, 7, 10)
    assert node.requests[-1]["params"][0] == 1 and node.requests[-1]["params"][1]["to"] == "0x" + CONTRACT.hex()
    node.calls[ANCHORED_AT_OURS] = "call anchoredAt none"
    assert client.anchored_at(OURS, AnchorKind.BATCH, GW, ROOT) is None


def test_latest_anchored_and_number_zero_means_none(node: ReplayNode) -> None:
    client = ours(node)
    node.calls[LATEST_OURS_ROLLUP] = "call latestAnchored found"
    assert client.latest_anchored(OURS, AnchorKind.ROLLUP, GW) == (7, 290)
    node.calls[LATEST_OURS_ROLLUP] = "call latestAnchored none"
    assert client.latest_anchored(OURS, AnchorKind.ROLLUP, GW) is None


def test_prepare_anchor_signs_the_new_abi_with_a_fresh_block_limit_and_random_ids(node: ReplayNode) -> None:
    client = Fisco2ChainClient(node.url, our_signer(), CONTRACT, group_id=3)
    node.calls[ANCHORED_AT_OURS] = "call anchoredAt none"
    node.calls[ANCHORED_AT_OURS.replace(ROOT.hex(), "02" * 32)] = "call anchoredAt none"
    a = client.prepare_anchor(AnchorKind.BATCH, GW, ROOT, 7, 10)
    b = client.prepare_anchor(AnchorKind.BATCH, GW, b"\x02" * 32, 8, 10)
    ta, pub, _, _ = decode_transaction(a.raw)
    tb, _, _, _ = decode_transaction(b.raw)
    assert ta.block_limit == 307 + BLOCK_LIMIT_AHEAD and tb.block_limit > ta.block_limit  # fetched before each
    assert ta.randomid != tb.randomid and ta.group_id == 3 and ta.to == CONTRACT
    assert pub == our_signer().public_key.point[1:]
    assert "0x" + ta.data.hex() == data(
        "anchor(uint8,string,bytes32,uint64,uint32)", word(0), word(0xA0), ROOT.hex(), word(7), word(10), tail(b"gw-1")
    )
    client.send(a)
    assert node.sent == [a.raw] and node.requests[-1]["params"] == [3, "0x" + a.raw.hex()]


def test_prepare_anchor_refuses_what_this_account_already_anchored(node: ReplayNode) -> None:
    node.calls[ANCHORED_AT_OURS] = "call anchoredAt found"
    with pytest.raises(AlreadyAnchored):
        ours(node).prepare_anchor(AnchorKind.BATCH, GW, ROOT, 7, 10)
    assert node.sent == []


@pytest.mark.parametrize(
    ("root", "gw", "number", "count"),
    [
        (b"\x01" * 31, GW, 1, 1),
        (bytes(32), GW, 1, 1),
        (ROOT, "", 1, 1),
        (ROOT, "g" * 65, 1, 1),
        (ROOT, GW, 0, 1),
        (ROOT, GW, 1 << 64, 1),
        (ROOT, GW, 1, 0),
        (ROOT, GW, 1, 1 << 32),
    ],
)
def test_prepare_anchor_refuses_what_the_contract_would(
    node: ReplayNode, root: bytes, gw: str, number: int, count: int
) -> None:
    with pytest.raises(TransactionFailed):
        ours(node).prepare_anchor(AnchorKind.BATCH, gw, root, number, count)
    assert node.requests == []


def test_a_transaction_past_its_block_limit_is_stale_and_a_resend_is_fine(node: ReplayNode) -> None:
    client = ours(node)
    node.calls[ANCHORED_AT_OURS] = "call anchoredAt none"
    tx = client.prepare_anchor(AnchorKind.BATCH, GW, ROOT, 7, 10)
    node.send_reply = "sendRawTransaction block limit"
    with pytest.raises(StaleTransaction):
        client.send(tx)
    node.send_reply = "sendRawTransaction already in pool"
    client.send(tx)
    node.send_reply = {"jsonrpc": "2.0", "error": {"code": -32000, "message": "TxPool already known transaction"}}
    client.send(tx)
    node.send_reply = {"jsonrpc": "2.0", "error": {"code": 10008, "message": "InvalidSignature"}}
    with pytest.raises(TransactionFailed, match="InvalidSignature"):
        client.send(tx)


def test_a_node_reporting_another_hash_for_our_transaction_is_refused(node: ReplayNode) -> None:
    node.send_reply = {"jsonrpc": "2.0", "result": "0x" + "ab" * 32}
    with pytest.raises(MalformedReply, match="another transaction hash"):
        ours(node).send_raw(b"\xc0")


def test_receipt_and_anchored_in_read_only_our_contracts_event(node: ReplayNode) -> None:
    client = ours(node)
    node.receipts["0x" + "cc" * 32] = "receipt ours"
    rec = client.receipt(b"\xcc" * 32)
    assert rec is not None and rec.ok and rec.block_number == 290 and len(rec.logs) == 2
    # The first log has the same topics from another contract (number 99): skipped.
    assert client.anchored_in(rec, ROOT) == AnchorInfo(290, OURS, AnchorKind.BATCH, GW, 7, 10)
    assert client.anchored_in(rec, b"\x06" * 32) is None
    node.receipts["0x" + "bb" * 32] = "receipt ours to another contract"
    other = client.receipt(b"\xbb" * 32)
    assert other is not None and client.anchored_in(other, ROOT) is None
    assert client.receipt(b"\x01" * 32) is None  # unknown: the node says null


def test_own_anchor_finds_only_our_accounts_transaction_in_the_block(node: ReplayNode) -> None:
    node.calls[ANCHORED_AT_OURS] = "call anchoredAt found"
    node.calls[ANCHORED_AT_THEIRS] = "call anchoredAt found"
    node.blocks[hex(290)] = "getBlockByNumber 290"
    for h, name in (("aa", "receipt theirs"), ("bb", "receipt ours to another contract"), ("cc", "receipt ours")):
        node.receipts["0x" + h * 32] = name
    found = ours(node).own_anchor(AnchorKind.BATCH, GW, ROOT)
    assert found is not None
    info, rec = found
    assert info == AnchorInfo(290, OURS, AnchorKind.BATCH, GW, 7, 10) and rec.tx_hash == b"\xcc" * 32
    # Ours went to the contract as the block's last transaction: theirs and ours-to-another-contract were skipped,
    # and the deployment (to: null) too.
    asked = [r["params"][1] for r in node.requests if r["method"] == "getTransactionReceipt"]
    assert asked == ["0x" + "cc" * 32]
    theirs = Fisco2ChainClient(node.url, their_signer(), CONTRACT).own_anchor(AnchorKind.BATCH, GW, ROOT)
    assert theirs is not None and theirs[1].tx_hash == b"\xaa" * 32 and theirs[0].anchorer == THEIRS


def test_own_anchor_is_none_when_this_account_never_anchored_it(node: ReplayNode) -> None:
    node.calls[ANCHORED_AT_OURS] = "call anchoredAt none"
    assert ours(node).own_anchor(AnchorKind.BATCH, GW, ROOT) is None
    assert [r["method"] for r in node.requests] == ["call"]


def test_own_anchor_refuses_a_contract_claim_no_transaction_of_ours_backs(node: ReplayNode) -> None:
    node.calls[ANCHORED_AT_OURS] = "call anchoredAt found"
    block = copy.deepcopy(REPLIES["getBlockByNumber 290"])
    block["result"]["transactions"] = block["result"]["transactions"][:1]  # only theirs
    node.blocks[hex(290)] = block
    node.receipts["0x" + "aa" * 32] = "receipt theirs"
    with pytest.raises(MalformedReply, match="no transaction of ours"):
        ours(node).own_anchor(AnchorKind.BATCH, GW, ROOT)
    node.blocks.clear()  # the node lacks the block the contract names
    with pytest.raises(MalformedReply, match="lacks"):
        ours(node).own_anchor(AnchorKind.BATCH, GW, ROOT)


def test_own_anchor_refuses_an_event_that_disagrees_with_the_contract(node: ReplayNode) -> None:
    node.calls[ANCHORED_AT_OURS] = {
        **REPLIES["call anchoredAt found"],
        "result": {**REPLIES["call anchoredAt found"]["result"], "output": "0x" + word(290) + word(8) + word(10)},
    }  # the contract says number 8, the event 7
    node.blocks[hex(290)] = "getBlockByNumber 290"
    node.receipts["0x" + "cc" * 32] = "receipt ours"
    with pytest.raises(MalformedReply, match="disagree"):
        ours(node).own_anchor(AnchorKind.BATCH, GW, ROOT)


# ------------------------------------------------------------------------------------------------- registry
def test_an_unregistered_gateway_is_none(node: ReplayNode) -> None:
    node.calls[GATEWAY_INFO] = "call gatewayInfo unregistered"
    assert ours(node).gateway(GW) is None


def test_the_registry_history_with_a_rotation_and_a_revocation(node: ReplayNode) -> None:
    node.calls[GATEWAY_INFO] = "call gatewayInfo rotated and revoked"
    node.calls[gateway_key(0)] = "call gatewayKey 0"
    node.calls[gateway_key(1)] = "call gatewayKey 1"
    entry = ours(node).gateway(GW)
    assert entry is not None
    key_ours, key_theirs = our_signer().public_key.point[1:], their_signer().public_key.point[1:]
    assert (entry.gw, entry.operator, entry.revoked, entry.revoked_block) == (GW, OPERATOR, True, 420)
    history = [(k.key, k.anchorer, k.since_block) for k in entry.keys]
    assert history == [(key_ours, OURS, 100), (key_theirs, THEIRS, 250)]
    assert entry.current is None  # revoked
    assert entry.periods() == [KeyPeriod(key_ours, OURS, None, 250), KeyPeriod(key_theirs, THEIRS, 250, 420)]


def test_an_active_gateway_has_a_current_key(node: ReplayNode) -> None:
    node.calls[GATEWAY_INFO] = "call gatewayInfo active"
    node.calls[gateway_key(0)] = "call gatewayKey 0"
    entry = ours(node).gateway(GW)
    assert entry is not None and entry.current is not None and entry.current.anchorer == OURS
    assert entry.periods() == [KeyPeriod(our_signer().public_key.point[1:], OURS, None, None)]


def _info(revoked: bool, revoked_block: int, count: int) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "result": {
            "currentBlockNumber": "0x12c",
            "status": "0x0",
            "output": "0x" + addr(OPERATOR) + word(int(revoked)) + word(revoked_block) + word(count),
        },
    }


def _key(key: bytes, since: int) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "result": {
            "currentBlockNumber": "0x12c",
            "status": "0x0",
            "output": "0x" + word(0x60) + addr(OURS) + word(since) + tail(key),
        },
    }


def test_a_history_longer_than_max_key_history_is_refused_not_truncated(node: ReplayNode) -> None:
    node.calls[GATEWAY_INFO] = _info(False, 0, MAX_KEY_HISTORY + 1)
    with pytest.raises(MalformedReply, match="refused, not truncated"):
        ours(node).gateway(GW)
    assert [r["method"] for r in node.requests] == ["call"]  # no key was read


@pytest.mark.parametrize(
    ("info", "keys", "reason"),
    [
        (_info(False, 0, 0), [], "without a key"),
        (_info(False, 0, 1), [_key(bytes(63), 5)], "not a 64-byte SM2 point"),
        (_info(False, 0, 1), [_key(b"\x04" + bytes(64), 5)], "not a 64-byte SM2 point"),
        (_info(False, 0, 2), [_key(bytes(64), 50), _key(bytes(64), 40)], "out of order"),
        (_info(True, 30, 1), [_key(bytes(64), 50)], "revoked in block 30, before its last key"),
    ],
)
def test_a_registry_entry_that_cannot_be_true_is_refused(
    node: ReplayNode, info: dict[str, Any], keys: list[dict[str, Any]], reason: str
) -> None:
    node.calls[GATEWAY_INFO] = info
    for i, k in enumerate(keys):
        node.calls[gateway_key(i)] = k
    with pytest.raises(MalformedReply, match=reason):
        ours(node).gateway(GW)


def test_admin_and_operator_reads(node: ReplayNode) -> None:
    node.calls[data("admin()")] = "call admin"
    node.calls[data("isOperator(address)", addr(THEIRS))] = "call isOperator true"
    assert ours(node).admin() == OPERATOR
    assert ours(node).is_operator(THEIRS) is True


REGISTER = data(
    "registerGateway(string,bytes,address)", word(0x60), word(0xA0), addr(THEIRS), tail(b"gw-1"), tail(bytes(range(64)))
)


def test_a_registry_write_is_checked_signed_sent_and_its_receipt_awaited(node: ReplayNode) -> None:
    node.calls[REGISTER] = "call void"
    node.sent_receipts = [None, None, "receipt registry ok"]
    sleeps: list[float] = []
    rec = ours(node, sleep=sleeps.append).register_gateway(GW, bytes(range(64)), THEIRS)
    assert rec.ok and rec.block_number == 290 and len(sleeps) == 2
    preflight = node.requests[0]["params"][1]
    assert preflight["from"] == "0x" + OURS.hex()  # the contract checks msg.sender: the call must come from us
    tx, _, _, _ = decode_transaction(node.sent[0])
    assert "0x" + tx.data.hex() == REGISTER and tx.to == CONTRACT and rec.tx_hash == sm3(node.sent[0])


@pytest.mark.parametrize(
    ("method", "args", "expected"),
    [
        ("approve_operator", (THEIRS,), data("approveOperator(address)", addr(THEIRS))),
        ("revoke_operator", (THEIRS,), data("revokeOperator(address)", addr(THEIRS))),
        ("transfer_admin", (THEIRS,), data("transferAdmin(address)", addr(THEIRS))),
        (
            "rotate_gateway_key",
            (GW, bytes(range(64)), THEIRS),
            data(
                "rotateGatewayKey(string,bytes,address)",
                word(0x60),
                word(0xA0),
                addr(THEIRS),
                tail(b"gw-1"),
                tail(bytes(range(64))),
            ),
        ),
        ("revoke_gateway", (GW,), data("revokeGateway(string)", word(0x20), tail(b"gw-1"))),
    ],
)
def test_each_registry_write_sends_its_abi(node: ReplayNode, method: str, args: tuple[Any, ...], expected: str) -> None:
    node.calls[expected] = "call void"
    node.sent_receipts = ["receipt registry ok"]
    getattr(ours(node), method)(*args)
    assert "0x" + decode_transaction(node.sent[0])[0].data.hex() == expected


def test_a_registry_write_the_contract_refuses_is_not_sent(node: ReplayNode) -> None:
    node.calls[REGISTER] = "call reverted"
    with pytest.raises(TransactionFailed, match=r"registering gw-1.*RevertInstruction: not an approved operator"):
        ours(node).register_gateway(GW, bytes(range(64)), THEIRS)
    assert node.sent == []


def test_a_registry_write_failing_on_chain_raises_with_the_nodes_reason(node: ReplayNode) -> None:
    node.calls[REGISTER] = "call void"
    node.sent_receipts = ["receipt registry reverted"]
    with pytest.raises(TransactionFailed, match=r"failed on chain.*not an approved operator"):
        ours(node, sleep=lambda _s: None).register_gateway(GW, bytes(range(64)), THEIRS)


def test_a_registry_write_without_a_receipt_gives_up_after_its_bound(node: ReplayNode) -> None:
    node.calls[REGISTER] = "call void"
    with pytest.raises(ChainUnavailable, match="no receipt"):
        ours(node, receipt_wait_s=0.05, sleep=lambda _s: None).register_gateway(GW, bytes(range(64)), THEIRS)


def test_a_reader_never_signs(node: ReplayNode) -> None:
    reader = Fisco2ChainClient.reader(node.url, CONTRACT, group_id=2, chain_id=5)
    node.calls[ANCHORED_AT_OURS] = "call anchoredAt found"
    assert reader.anchored_at(OURS, AnchorKind.BATCH, GW, ROOT) is not None and reader.chain_id == 5
    node.calls[ANCHORED_AT_OURS.replace(addr(OURS), addr(reader.account))] = "call anchoredAt none"
    with pytest.raises(TransactionFailed, match="reader"):
        reader.prepare_anchor(AnchorKind.BATCH, GW, ROOT, 7, 10)
    node.calls[REGISTER] = "call void"
    with pytest.raises(TransactionFailed, match="reader"):
        reader.register_gateway(GW, bytes(range(64)), THEIRS)
    assert node.sent == []


# ------------------------------------------------------------------------------------------ malformed replies
def _reply_with(name: str, path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    """A recorded reply with one field replaced (``...`` deletes it)."""
    out = copy.deepcopy(REPLIES[name])
    target = out
    for step in path[:-1]:
        target = target[step]
    if value is ...:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return cast(dict[str, Any], out)


def _anchored_at(reply: dict[str, Any]) -> Callable[[ReplayNode], object]:
    def go(node: ReplayNode) -> object:
        node.calls[ANCHORED_AT_OURS] = reply
        return ours(node).anchored_at(OURS, AnchorKind.BATCH, GW, ROOT)

    return go


def _receipt(reply: dict[str, Any]) -> Callable[[ReplayNode], object]:
    def go(node: ReplayNode) -> object:
        node.receipts["0x" + "cc" * 32] = reply
        client = ours(node)
        rec = client.receipt(b"\xcc" * 32)
        assert rec is not None
        return client.anchored_in(rec, ROOT)

    return go


def _own_anchor(block: dict[str, Any]) -> Callable[[ReplayNode], object]:
    def go(node: ReplayNode) -> object:
        node.calls[ANCHORED_AT_OURS] = "call anchoredAt found"
        node.blocks[hex(290)] = block
        node.receipts["0x" + "cc" * 32] = "receipt ours"
        return ours(node).own_anchor(AnchorKind.BATCH, GW, ROOT)

    return go


def _block_number(result: Any) -> Callable[[ReplayNode], object]:
    def go(node: ReplayNode) -> object:
        node.raw["getBlockNumber"] = lambda req: json.dumps(
            {"jsonrpc": "2.0", "id": req["id"], "result": result}
        ).encode()
        return ours(node).block_number()

    return go


def _raw_body(body: Callable[[dict[str, Any]], bytes]) -> Callable[[ReplayNode], object]:
    def go(node: ReplayNode) -> object:
        node.raw["getBlockNumber"] = body
        return ours(node).block_number()

    return go


def _log(i: int, key: str, value: Any) -> dict[str, Any]:
    return _reply_with("receipt ours", ("result", "logs", i, key), value)


OUT = ("result", "output")
TOPICS = ("result", "logs", 1, "topics")
ANCHORED_TOPIC = REPLIES["receipt ours"]["result"]["logs"][1]["topics"]
GOOD_EVENT_DATA = REPLIES["receipt ours"]["result"]["logs"][1]["data"]

MALFORMED: dict[str, Callable[[ReplayNode], object]] = {
    "block number as a JSON number": _block_number(300),
    "block number without 0x": _block_number("12c"),
    "block number not hex": _block_number("0xzz"),
    "block number empty": _block_number("0x"),
    "block number null": _block_number(None),
    "block number of 300 bits": _block_number("0x" + "f" * 75),
    "reply not JSON": _raw_body(lambda req: b"<html>502 Bad Gateway</html>"),
    "reply not UTF-8": _raw_body(lambda req: b'{"id": 1, "result": "\xff"}'),
    "reply a JSON list": _raw_body(lambda req: b"[]"),
    "reply for another request id": _raw_body(
        lambda req: json.dumps({"jsonrpc": "2.0", "id": req["id"] + 1, "result": "0x1"}).encode()
    ),
    "reply without result or error": _raw_body(lambda req: json.dumps({"jsonrpc": "2.0", "id": req["id"]}).encode()),
    "call result not an object": _anchored_at({"jsonrpc": "2.0", "result": "0x" + "00" * 96}),
    "call without output": _anchored_at(_reply_with("call anchoredAt found", OUT, ...)),
    "call without status": _anchored_at(_reply_with("call anchoredAt found", ("result", "status"), ...)),
    "call output short": _anchored_at(_reply_with("call anchoredAt found", OUT, "0x" + "00" * 64)),
    "call output long": _anchored_at(_reply_with("call anchoredAt found", OUT, "0x" + "00" * 128)),
    "call output odd hex": _anchored_at(_reply_with("call anchoredAt found", OUT, "0x" + "0" * 191)),
    "call output with spaces": _anchored_at(_reply_with("call anchoredAt found", OUT, "0x" + "00 " * 96)),
    "call output a number": _anchored_at(_reply_with("call anchoredAt found", OUT, 0)),
    "uint64 with high bits set": _anchored_at(
        _reply_with("call anchoredAt found", OUT, "0x" + word(290) + "01" + "00" * 31 + word(10))
    ),
    "receipt a list": _receipt({"jsonrpc": "2.0", "result": []}),
    "receipt without blockHash": _receipt(_reply_with("receipt ours", ("result", "blockHash"), ...)),
    "receipt blockHash 31 bytes": _receipt(_reply_with("receipt ours", ("result", "blockHash"), "0x" + "11" * 31)),
    "receipt without status": _receipt(_reply_with("receipt ours", ("result", "status"), ...)),
    "receipt logs not a list": _receipt(_reply_with("receipt ours", ("result", "logs"), {})),
    "receipt of another transaction": _receipt(
        _reply_with("receipt ours", ("result", "transactionHash"), "0x" + "aa" * 32)
    ),
    "log without data": _receipt(_log(1, "data", ...)),
    "log address not hex": _receipt(_log(1, "address", "0x" + "zz" * 20)),
    "log topic 31 bytes": _receipt(_log(1, "topics", [ANCHORED_TOPIC[0], "0x" + "11" * 31, ANCHORED_TOPIC[2]])),
    "log topics not a list": _receipt(_log(1, "topics", ANCHORED_TOPIC[0])),
    "event without the anchorer topic": _receipt(_log(1, "topics", ANCHORED_TOPIC[:2])),
    "event anchorer topic not an address": _receipt(_log(1, "topics", [*ANCHORED_TOPIC[:2], "0x" + "ff" * 32])),
    "event data truncated": _receipt(_log(1, "data", GOOD_EVENT_DATA[:-64])),
    "event of an unknown kind": _receipt(_log(1, "data", "0x" + word(7) + GOOD_EVENT_DATA[66:])),
    "event gw not UTF-8": _receipt(_log(1, "data", GOOD_EVENT_DATA[:-64] + "ff" + "00" * 31)),
    "block transactions not a list": _own_anchor(
        _reply_with("getBlockByNumber 290", ("result", "transactions"), "0x" + "cc" * 32)
    ),
    "block without transactions": _own_anchor(_reply_with("getBlockByNumber 290", ("result", "transactions"), ...)),
    "block transaction without from": _own_anchor(
        _reply_with("getBlockByNumber 290", ("result", "transactions", 3, "from"), ...)
    ),
    "block transaction hash short": _own_anchor(
        _reply_with("getBlockByNumber 290", ("result", "transactions", 3, "hash"), "0xcc")
    ),
    "block transaction a string": _own_anchor(
        _reply_with("getBlockByNumber 290", ("result", "transactions", 0), "0x" + "aa" * 32)
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_reply_is_a_clear_error_never_a_traceback(node: ReplayNode, case: str) -> None:
    with pytest.raises(MalformedReply, match=BECAUSE[case.split(" ", maxsplit=1)[0]]):
        MALFORMED[case](node)


# What each kind of case is refused for (the message names the broken part).
BECAUSE = {
    "block": "block|getBlock|transaction",
    "call": "call anchoredAt",
    "uint64": "undecodable ABI",
    "receipt": "(?i)receipt",
    "log": "receipt log",
    "event": "Anchored event|anchor kind",
    "reply": "getBlockNumber: (the node's reply|reply)",
}


def test_a_reply_larger_than_the_bound_is_refused(node: ReplayNode, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fisco2, "MAX_REPLY_BYTES", 1000)
    node.raw["getBlockNumber"] = lambda req: json.dumps(
        {"jsonrpc": "2.0", "id": req["id"], "result": "0x1", "pad": "x" * 2000}
    ).encode()
    with pytest.raises(MalformedReply, match="larger than"):
        ours(node).block_number()


def test_a_node_error_object_is_a_clear_error(node: ReplayNode) -> None:
    node.raw["getBlockNumber"] = lambda req: json.dumps(
        {
            "jsonrpc": "2.0",
            "id": req["id"],
            "error": {"code": -40001, "data": None, "message": "GroupID does not exist"},
        }
    ).encode()
    with pytest.raises(TransactionFailed, match="GroupID does not exist"):
        ours(node).block_number()


def test_a_node_that_is_down_or_failing_is_unavailable(node: ReplayNode) -> None:
    node.server.shutdown()
    node.server.server_close()
    with pytest.raises(ChainUnavailable):
        ours(node).block_number()


def test_an_http_error_status_is_unavailable() -> None:
    class Failing(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_error(502)

        def log_message(self, *_a: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
    try:
        with pytest.raises(ChainUnavailable):
            Fisco2ChainClient(f"http://127.0.0.1:{server.server_address[1]}", our_signer(), CONTRACT).block_number()
    finally:
        server.shutdown()


# ------------------------------------------------------------------------------------------------- the CLI
def test_tiyi_chain_show_reads_a_fisco2_registry(node: ReplayNode, capsys: pytest.CaptureFixture[str]) -> None:
    """`tiyi chain show --rpc fisco2+URL`: the platform's and operator's tools speak FISCO 2.x too."""
    from gateway.cli import main

    node.calls[GATEWAY_INFO] = "call gatewayInfo rotated and revoked"
    node.calls[gateway_key(0)] = "call gatewayKey 0"
    node.calls[gateway_key(1)] = "call gatewayKey 1"
    assert (
        main(["chain", "show", "--rpc", "fisco2+" + node.url, "--contract", "0x" + CONTRACT.hex(), "--gateway", GW])
        == 0
    )
    out = capsys.readouterr().out
    assert "REVOKED in block 420" in out and f"anchoring account 0x{THEIRS.hex()}" in out
    assert "valid from block 250 until block 420" in out


def test_tiyi_verify_reads_the_registry_over_fisco2(
    node: ReplayNode, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`tiyi verify --registry … --rpc fisco2+URL` asks the FISCO node for keys (here: an unregistered gateway,
    so a stream signed by anyone is untrusted, exit 1)."""
    from anchoring.capture import write_capture_item
    from gateway.cli import main
    from tests.unit.anchoring.test_stream_verifier import Stream, T

    node.calls[data("gatewayInfo(string)", word(0x20), tail(b"gw-test"))] = "call gatewayInfo unregistered"
    s = Stream.honest()
    path = tmp_path / "c.cbor"
    with path.open("wb") as fh:
        for b in s.batches:
            write_capture_item(fh, T.batch, b, False, 0)
    assert (
        main(["verify", "--capture", str(path), "--rpc", "fisco2+" + node.url, "--registry", "0x" + CONTRACT.hex()])
        == 1
    )
    assert "is not in the on-chain registry" in capsys.readouterr().out
