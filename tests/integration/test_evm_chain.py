"""Anchoring against real EVM nodes: ganache over JSON-RPC (like FISCO BCOS Web3 RPC) and in-process."""

from __future__ import annotations

import secrets
from dataclasses import replace

import pytest

from anchoring.devchain import DevChain
from anchoring.errors import AlreadyAnchored, ChainUnavailable
from anchoring.evm import EvmChainClient
from anchoring.receipt import AnchorReceipt
from anchoring.verify_anchor import check_receipt
from tests.conftest import Ganache


def anchor_once(client: EvmChainClient, batch: int = 1) -> tuple[bytes, AnchorReceipt]:
    root = secrets.token_bytes(32)
    tx = client.prepare_anchor(root, "gw-1", batch, 10)
    client.send(tx)
    rec = None
    for _ in range(100):
        rec = client.receipt(tx.tx_hash)
        if rec is not None:
            break
    assert rec is not None and rec.ok
    return root, AnchorReceipt("gw-1", batch, root, client.chain_id, client.contract, tx.tx_hash, rec.block_number)


def exercise(client: EvmChainClient) -> None:
    root, receipt = anchor_once(client)
    info = client.lookup(root)
    assert info is not None and (info.gw, info.batch, info.count, info.block_number) == ("gw-1", 1, 10, receipt.block)
    assert check_receipt(receipt, client) is None
    # Idempotent: the same root cannot be anchored twice, and the client says so before sending.
    with pytest.raises(AlreadyAnchored):
        client.prepare_anchor(root, "gw-1", 1, 10)
    # Re-sending the very same signed transaction is harmless.
    assert client.lookup(secrets.token_bytes(32)) is None
    # Tampered receipts are each refused with a reason.
    assert check_receipt(replace(receipt, tx=b"\x00" * 32), client) == "transaction not found on the chain"
    assert "block mismatch" in (check_receipt(replace(receipt, block=receipt.block + 5), client) or "")
    assert "no Anchored event" in (check_receipt(replace(receipt, root=b"\x05" * 32), client) or "")
    assert "contract" in (check_receipt(replace(receipt, contract=b"\x01" * 20), client) or "")


def test_ganache_unfunded_account_with_zero_gas_price(ganache: Ganache) -> None:
    client = EvmChainClient.connect(ganache.url, secrets.token_bytes(32), contract=None)
    assert client.chain_id == 20200
    exercise(client)
    reader = EvmChainClient.reader(ganache.url, client.contract)
    _, receipt = anchor_once(client, batch=2)
    assert check_receipt(receipt, reader) is None


def test_resubmitting_the_same_signed_transaction_is_harmless(ganache: Ganache) -> None:
    client = EvmChainClient.connect(ganache.url, secrets.token_bytes(32), contract=None)
    tx = client.prepare_anchor(secrets.token_bytes(32), "gw-1", 1, 1)
    client.send(tx)
    client.send(tx)
    client.send_raw(tx.raw)
    rec = client.receipt(tx.tx_hash)
    assert rec is not None and rec.ok


def test_node_down_is_reported_as_unavailable_and_recovers(ganache: Ganache) -> None:
    client = EvmChainClient.connect(ganache.url, secrets.token_bytes(32), contract=None)
    contract = client.contract
    ganache.stop()
    with pytest.raises(ChainUnavailable):
        client.block_number()
    with pytest.raises(ChainUnavailable):
        client.prepare_anchor(secrets.token_bytes(32), "gw-1", 1, 1)
    ganache.start()  # a fresh node: state is gone, so deploy again
    client = EvmChainClient.connect(ganache.url, secrets.token_bytes(32), contract=None)
    assert client.contract == contract or client.contract  # address may or may not repeat
    exercise(client)


def test_in_process_chain_with_a_funded_account() -> None:
    chain = DevChain()
    client = EvmChainClient(chain.web3, secrets.token_bytes(32), contract=chain.contract_address)
    chain.fund(client.account_address)
    exercise(client)
