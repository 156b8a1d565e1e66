"""An alliance on a real EVM node for tests: the deployer is the administrator, operators are approved by it,
gateways anchor from accounts of their own, and streams get real anchors and receipts."""

from __future__ import annotations

import secrets
import time

from anchoring.chain import AnchorKind
from anchoring.evm import EvmChainClient
from anchoring.readers import point_verifier
from anchoring.receipt import AnchorReceipt
from anchoring.trust import TrustPolicy
from anchoring.verify_anchor import ChainAnchorChecker
from edge.manifest import SignedManifest
from edge.signing import Signer
from tests.unit.anchoring.test_stream_verifier import Stream


def point(signer: Signer) -> bytes:
    from edge.sm2 import load_public_key_pem

    return load_public_key_pem(signer.public_key_pem()).public_key.point[1:]


def anchor(client: EvmChainClient, kind: AnchorKind, gw: str, root: bytes, number: int, count: int) -> AnchorReceipt:
    """Anchor from ``client``'s account, wait for inclusion, and return the receipt a gateway would publish."""
    tx = client.prepare_anchor(kind, gw, root, number, count)
    client.send(tx)
    deadline = time.monotonic() + 30
    while (rec := client.receipt(tx.tx_hash)) is None:
        assert time.monotonic() < deadline, "anchor never included"
        time.sleep(0.05)
    assert rec.ok
    return AnchorReceipt(
        gw,
        kind,
        number,
        count,
        root,
        client.chain_id,
        client.contract,
        client.account,
        tx.tx_hash,
        rec.block_number,
        rec.block_hash,
    )


def anchor_stream(stream: Stream, client: EvmChainClient) -> Stream:
    """Anchor every batch of ``stream`` from ``client``'s account; its receipts become the real ones."""
    stream.receipts = []
    for b in stream.batches:
        m = SignedManifest.from_bytes(b).manifest
        stream.receipts.append(bytes(anchor(client, AnchorKind.BATCH, m.gw, m.root, m.batch, m.count)))
    return stream


class Alliance:
    """One Anchor contract on ``url``: ``admin`` deployed it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.admin = EvmChainClient.connect(url, secrets.token_bytes(32), contract=None)
        self.contract = "0x" + self.admin.contract.hex()

    def account(self) -> EvmChainClient:
        """A fresh account on the contract, with no rights at all."""
        return EvmChainClient.connect(self.url, secrets.token_bytes(32), contract=self.contract)

    def operator(self) -> EvmChainClient:
        op = self.account()
        self.admin.approve_operator(op.account)
        return op

    def checker(self) -> ChainAnchorChecker:
        return ChainAnchorChecker("ganache", EvmChainClient.reader(self.url, self.contract))

    def registry(self, operator: bytes | None = None) -> TrustPolicy:
        reader = EvmChainClient.reader(self.url, self.contract)
        return TrustPolicy(registry=reader.gateway, point_verifier=point_verifier, operator=operator)
