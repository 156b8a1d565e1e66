"""FISCO BCOS 2.x 国密 transactions: RLP layout, SM3 hashes, SM2 signatures, and the RPC client's rules."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import rlp
from eth_abi.abi import encode as abi_encode

from anchoring.errors import StaleTransaction
from anchoring.fisco2 import (
    ANCHOR_SIG,
    ANCHORED_EVENT_SIG,
    BLOCK_LIMIT_AHEAD,
    Fisco2ChainClient,
    GmTransaction,
    decode_transaction,
    event_topic,
    selector,
)
from edge.sm2 import GmsslSm2Verifier, generate_signer
from edge.sm3 import sm3

TX = GmTransaction(randomid=1, gas_price=0, gas_limit=300_000, block_limit=500, to=b"\x11" * 20, value=0,
                   data=b"\xab", chain_id=1, group_id=1)


def test_rlp_of_the_signed_fields_is_laid_out_by_hand() -> None:
    expected = bytes.fromhex(
        "e4"          # list, 36 bytes of items
        "01"          # randomid 1
        "80"          # gasPrice 0 (empty string)
        "83" "0493e0"  # gasLimit 300000
        "82" "01f4"   # blockLimit 500
        "94" + "11" * 20 +  # to
        "80"          # value 0
        "81" "ab"     # data: one byte >= 0x80 needs a length prefix
        "01"          # fiscoChainId 1
        "01"          # groupId 1
        "80"          # extraData empty
    )
    assert rlp.encode(TX.fields()) == expected
    assert TX.signing_hash() == sm3(expected)


def test_signed_transaction_round_trip() -> None:
    signer = generate_signer()
    stx = TX.sign(signer)
    tx, pub, r, s = decode_transaction(stx.raw)
    assert tx == TX and pub == signer.public_key.point[1:]
    assert stx.tx_hash == sm3(stx.raw)
    from edge.sm2 import encode_signature
    assert GmsslSm2Verifier(signer.public_key).verify(TX.signing_hash(), encode_signature(r, s))


def test_selectors_are_sm3_based() -> None:
    assert selector(ANCHOR_SIG) == sm3(b"anchor(bytes32,string,uint64,uint32)")[:4]
    assert selector("anchoredAt(bytes32)") != bytes.fromhex("00000000")


class FakeNode:
    """Just enough of the FISCO 2.x JSON-RPC to check what the client sends (unit test of its rules)."""

    def __init__(self) -> None:
        self.block = 100
        self.sent: list[list[Any]] = []
        self.reject: str | None = None  # an error message for sendRawTransaction
        self.blocks: dict[str, dict[str, Any]] = {}
        self.receipts: dict[str, dict[str, Any]] = {}
        node = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                m, p = req["method"], req["params"]
                if m == "getBlockNumber":
                    node.block += 7
                    result: Any = hex(node.block)
                elif m == "sendRawTransaction" and node.reject:
                    body = json.dumps({"jsonrpc": "2.0", "id": req["id"],
                                       "error": {"code": -32000, "message": node.reject}}).encode()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                elif m == "sendRawTransaction":
                    node.sent.append(p)
                    result = "0x" + sm3(bytes.fromhex(p[1][2:])).hex()
                elif m == "getBlockByNumber":
                    result = node.blocks.get(p[1])
                elif m == "getTransactionReceipt":
                    result = node.receipts.get(p[1])
                elif m == "call":
                    result = {"output": "0x" + "00" * 32 + "00" * 31 + "80" + "00" * 64 + "00" * 32}
                else:
                    result = None
                body = json.dumps({"jsonrpc": "2.0", "id": req["id"], "result": result}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_a: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def node() -> Iterator[FakeNode]:
    n = FakeNode()
    yield n
    n.server.shutdown()


def test_block_limit_is_refreshed_before_every_signature_and_randomids_differ(node: FakeNode) -> None:
    client = Fisco2ChainClient(node.url, generate_signer(), b"\x22" * 20, group_id=3)
    a = client.prepare_anchor(b"\x01" * 32, "gw-1", 1, 10)
    b = client.prepare_anchor(b"\x02" * 32, "gw-1", 2, 10)
    ta, _, _, _ = decode_transaction(a.raw)
    tb, _, _, _ = decode_transaction(b.raw)
    assert tb.block_limit > ta.block_limit  # a fresh block number each time
    assert ta.block_limit == 107 + BLOCK_LIMIT_AHEAD  # the node's block number, fetched right before signing
    assert ta.randomid != tb.randomid and ta.group_id == 3 and ta.to == b"\x22" * 20
    assert ta.data[:4] == selector(ANCHOR_SIG)
    client.send(a)
    assert node.sent == [[3, "0x" + a.raw.hex()]]


def test_a_transaction_past_its_block_limit_is_stale(node: FakeNode) -> None:
    client = Fisco2ChainClient(node.url, generate_signer(), b"\x22" * 20)
    tx = client.prepare_anchor(b"\x01" * 32, "gw-1", 1, 10)
    node.reject = "BlockLimitCheckFail"
    with pytest.raises(StaleTransaction):
        client.send(tx)
    node.reject = "TxPool already known transaction"
    client.send(tx)  # a resend of what the node holds is fine


def test_own_anchor_is_found_in_the_block_only_when_our_account_sent_it(node: FakeNode) -> None:
    contract = b"\x22" * 20
    ours = Fisco2ChainClient(node.url, generate_signer(), contract)
    theirs = Fisco2ChainClient(node.url, generate_signer(), contract)
    root = b"\x05" * 32
    assert ours.address != theirs.address and len(ours.address) == 42
    topics = ["0x" + event_topic(ANCHORED_EVENT_SIG).hex(), "0x" + root.hex()]
    log = {"address": "0x" + contract.hex(), "topics": topics,
           "data": "0x" + abi_encode(["string", "uint64", "uint32", "uint256"], ["gw-1", 7, 10, 300]).hex()}
    node.blocks[hex(300)] = {"transactions": [
        {"hash": "0x" + "aa" * 32, "from": theirs.address, "to": "0x" + contract.hex()},
        {"hash": "0x" + "bb" * 32, "from": ours.address.upper().replace("0X", "0x"), "to": "0x" + contract.hex()},
    ]}
    for h in ("aa", "bb"):
        node.receipts["0x" + h * 32] = {"status": "0x0", "blockNumber": hex(300), "blockHash": "0x" + "cc" * 32,
                                        "logs": [log]}
    rec = ours.own_anchor(root, 300)
    assert rec is not None and rec.tx_hash == b"\xbb" * 32 and rec.block_number == 300
    other = theirs.own_anchor(root, 300)
    assert other is not None and other.tx_hash == b"\xaa" * 32
    assert ours.own_anchor(b"\x06" * 32, 300) is None  # another root
    assert ours.own_anchor(root, 301) is None  # a block we know nothing of
