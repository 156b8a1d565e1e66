"""Anchoring against real EVM nodes: ganache over JSON-RPC (like FISCO BCOS Web3 RPC) and in-process."""

from __future__ import annotations

import secrets
from dataclasses import replace

import pytest

from anchoring.chain import AnchorInfo, AnchorKind, ChainReader
from anchoring.devchain import DevChain
from anchoring.errors import AlreadyAnchored, ChainUnavailable
from anchoring.evm import EvmChainClient
from anchoring.receipt import AnchorReceipt
from anchoring.verify_anchor import confirm_receipt
from tests.conftest import Ganache


def check_receipt(receipt: AnchorReceipt, client: ChainReader) -> str | None:
    got = confirm_receipt(receipt, client)
    return got if isinstance(got, str) else None


def anchor_once(client: EvmChainClient, batch: int = 1) -> tuple[bytes, AnchorReceipt]:
    root = secrets.token_bytes(32)
    tx = client.prepare_anchor(AnchorKind.BATCH, "gw-1", root, batch, 10)
    client.send(tx)
    rec = None
    for _ in range(100):
        rec = client.receipt(tx.tx_hash)
        if rec is not None:
            break
    assert rec is not None and rec.ok
    return root, AnchorReceipt(
        "gw-1",
        AnchorKind.BATCH,
        batch,
        10,
        root,
        client.chain_id,
        client.contract,
        client.account,
        tx.tx_hash,
        rec.block_number,
        rec.block_hash,
    )


def exercise(client: EvmChainClient) -> None:
    root, receipt = anchor_once(client)
    info = client.anchored_at(client.account, AnchorKind.BATCH, "gw-1", root)
    assert info == AnchorInfo(receipt.block, client.account, AnchorKind.BATCH, "gw-1", 1, 10)
    assert confirm_receipt(receipt, client) == info
    assert client.latest_anchored(client.account, AnchorKind.BATCH, "gw-1") == (1, receipt.block)
    # The kind is part of the key: the same root is no roll-up, and another gateway id is another anchor.
    assert client.anchored_at(client.account, AnchorKind.ROLLUP, "gw-1", root) is None
    assert client.anchored_at(client.account, AnchorKind.BATCH, "gw-2", root) is None
    # Idempotent per account: the same root cannot be anchored twice, and the client says so before sending.
    with pytest.raises(AlreadyAnchored):
        client.prepare_anchor(AnchorKind.BATCH, "gw-1", root, 1, 10)
    assert client.anchored_at(client.account, AnchorKind.BATCH, "gw-1", secrets.token_bytes(32)) is None
    # Tampered receipts are each refused with a reason.
    assert check_receipt(replace(receipt, tx=b"\x00" * 32), client) == "transaction not found on the chain"
    assert "block mismatch" in (check_receipt(replace(receipt, block=receipt.block + 5), client) or "")
    assert "no Anchored event" in (check_receipt(replace(receipt, root=b"\x05" * 32), client) or "")
    assert "on-chain event is" in (check_receipt(replace(receipt, kind=AnchorKind.ROLLUP), client) or "")
    assert "on-chain event is" in (check_receipt(replace(receipt, count=11), client) or "")
    assert "on-chain event is" in (check_receipt(replace(receipt, anchorer=b"\x07" * 20), client) or "")
    assert "block mismatch" in (check_receipt(replace(receipt, block_hash=b"\x08" * 32), client) or "")
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
    tx = client.prepare_anchor(AnchorKind.BATCH, "gw-1", secrets.token_bytes(32), 1, 1)
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
        client.prepare_anchor(AnchorKind.BATCH, "gw-1", secrets.token_bytes(32), 1, 1)
    ganache.start()  # a fresh node: state is gone, so deploy again
    client = EvmChainClient.connect(ganache.url, secrets.token_bytes(32), contract=None)
    assert client.contract == contract or client.contract  # address may or may not repeat
    exercise(client)


def test_in_process_chain_with_a_funded_account() -> None:
    chain = DevChain()
    client = EvmChainClient(chain.web3, secrets.token_bytes(32), contract=chain.contract_address)
    chain.fund(client.account_address)
    exercise(client)


def test_two_in_process_chains_have_distinct_ids_and_refuse_each_others_receipts() -> None:
    import dataclasses

    from anchoring.devchain import DEFAULT_CHAIN_ID
    from anchoring.receipt import AnchorReceipt
    from anchoring.verify_anchor import confirm_receipt

    clients = []
    for chain_id in (DEFAULT_CHAIN_ID, DEFAULT_CHAIN_ID + 1):
        chain = DevChain(chain_id=chain_id)
        client = EvmChainClient(chain.web3, secrets.token_bytes(32), contract=chain.contract_address)
        chain.fund(client.account_address)
        clients.append(client)
    main, supervision = clients
    assert (main.chain_id, supervision.chain_id) == (DEFAULT_CHAIN_ID, DEFAULT_CHAIN_ID + 1)
    exercise(supervision)  # transactions signed for the new id are accepted there
    root = secrets.token_bytes(32)
    tx = supervision.prepare_anchor(AnchorKind.ROLLUP, "gw-1", root, 1, 1)
    supervision.send(tx)
    rec = supervision.receipt(tx.tx_hash)
    assert rec is not None and rec.ok
    receipt = AnchorReceipt(
        "gw-1",
        AnchorKind.ROLLUP,
        1,
        1,
        root,
        supervision.chain_id,
        supervision.contract,
        supervision.account,
        tx.tx_hash,
        rec.block_number,
        rec.block_hash,
    )
    assert not isinstance(confirm_receipt(receipt, supervision), str)
    # Even naming the other chain's contract, a receipt made on one chain is never confirmed by the other.
    assert "names chain" in str(confirm_receipt(dataclasses.replace(receipt, contract=main.contract), main))
