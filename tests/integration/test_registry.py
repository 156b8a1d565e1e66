"""The on-chain gateway registry: operators vouch for keys, platforms verify against the chain."""

from __future__ import annotations

import secrets
from dataclasses import replace
from pathlib import Path

import pytest

from anchoring.errors import TransactionFailed
from anchoring.evm import EvmChainClient
from anchoring.receipt import AnchorReceipt
from anchoring.stream_verifier import Reason, StreamVerifier
from edge.sm2 import generate_signer
from gateway.cli import main
from gateway.verify_cmd import registry_lookup
from tests.conftest import Ganache
from tests.unit.anchoring.test_stream_verifier import GW, Stream


def point(signer) -> bytes:  # type: ignore[no-untyped-def]
    return signer.public_key.point[1:]


def verify_with_registry(stream: Stream, url: str, contract: str) -> set[Reason]:
    v = StreamVerifier(key_history=registry_lookup(url, contract))
    stream.feed(v)
    return {p.reason for p in v.report().problems}


def test_register_rotate_revoke(ganache: Ganache) -> None:
    operator = EvmChainClient.connect(ganache.url, secrets.token_bytes(32), contract=None)
    contract = "0x" + operator.contract.hex()
    stranger = EvmChainClient.connect(ganache.url, secrets.token_bytes(32), contract=contract)
    first, second = generate_signer(), generate_signer()

    assert operator.gateway(GW) is None
    operator.register_gateway(GW, point(first))
    entry = operator.gateway(GW)
    assert entry is not None and entry.sm2_public_key == point(first) and not entry.revoked
    assert entry.operator.lower() == operator.account_address.lower()
    with pytest.raises(TransactionFailed, match="already registered"):
        stranger.register_gateway(GW, point(second))
    with pytest.raises(TransactionFailed, match="only the gateway's operator"):
        stranger.rotate_gateway_key(GW, point(second))

    honest = Stream.honest(signer=first)
    assert verify_with_registry(honest, ganache.url, contract) == set()
    operator.rotate_gateway_key(GW, point(second))
    assert verify_with_registry(honest, ganache.url, contract) == {Reason.UNTRUSTED_KEY}
    assert verify_with_registry(Stream.honest(signer=second), ganache.url, contract) == set()
    with pytest.raises(TransactionFailed, match="only the gateway's operator"):
        stranger.revoke_gateway(GW)
    operator.revoke_gateway(GW)
    assert verify_with_registry(Stream.honest(signer=second), ganache.url, contract) == {Reason.UNTRUSTED_KEY}


def test_cli(ganache: Ganache, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    deployer = EvmChainClient.connect(ganache.url, secrets.token_bytes(32), contract=None)
    contract = "0x" + deployer.contract.hex()
    signer = generate_signer()
    pub = tmp_path / "gateway.pub"
    pub.write_text(signer.public_key_pem())
    op = tmp_path / "operator.key"
    common = ["--rpc", ganache.url, "--contract", contract, "--gateway", "gw-cli"]
    assert main(["chain", "register", *common, "--pub", str(pub), "--operator-key", str(op)]) == 0
    assert (op.stat().st_mode & 0o777) == 0o600
    assert main(["chain", "show", *common]) == 0
    assert "active" in capsys.readouterr().out
    assert main(["chain", "register", *common, "--pub", str(pub), "--operator-key", str(op)]) == 1
    assert "already registered" in capsys.readouterr().err
    assert main(["chain", "revoke", *common, "--operator-key", str(op)]) == 0
    assert main(["chain", "show", *common]) == 0
    assert "REVOKED" in capsys.readouterr().out


def test_batches_anchored_before_a_rotation_keep_verifying_under_the_old_key(ganache: Ganache) -> None:
    """Key history, not just the current key: what the old key signed and anchored before the rotation
    stays provable; the old key signs nothing valid after it; after a revocation nothing is valid."""
    operator = EvmChainClient.connect(ganache.url, secrets.token_bytes(32), contract=None)
    contract = "0x" + operator.contract.hex()
    first, second = generate_signer(), generate_signer()
    operator.register_gateway(GW, point(first))
    while operator.block_number() < 120:  # the honest stream's receipts name blocks 101..103
        ganache.rpc("evm_mine")
    operator.rotate_gateway_key(GW, point(second))
    old = Stream.honest(signer=first)
    assert verify_with_registry(old, ganache.url, contract) == set()
    late = Stream.honest(signer=first)
    late.receipts = [bytes(replace(AnchorReceipt.from_bytes(r), block=500)) for r in late.receipts]
    assert verify_with_registry(late, ganache.url, contract) == {Reason.UNTRUSTED_KEY}
    newer = Stream.honest(signer=second)
    newer.receipts = [bytes(replace(AnchorReceipt.from_bytes(r), block=500)) for r in newer.receipts]
    assert verify_with_registry(newer, ganache.url, contract) == set()
    operator.revoke_gateway(GW)  # in a block far below 500: what claims to be anchored later is refused
    assert verify_with_registry(newer, ganache.url, contract) == {Reason.UNTRUSTED_KEY}
    assert verify_with_registry(old, ganache.url, contract) == set()  # anchored before: still proven
