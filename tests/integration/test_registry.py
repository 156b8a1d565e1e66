"""The on-chain gateway registry: the administrator approves operators, operators vouch for keys and anchoring
accounts, and platforms verify against the chain (ganache: a real EVM node over JSON-RPC)."""

from __future__ import annotations

from pathlib import Path

import pytest

from anchoring.errors import TransactionFailed
from anchoring.stream_verifier import Outcome, Reason, StreamVerifier
from anchoring.trust import TrustPolicy
from edge.sm2 import generate_signer
from gateway.cli import main
from tests.conftest import Ganache
from tests.integration.chainkit import Alliance, anchor_stream, point
from tests.unit.anchoring.test_stream_verifier import GW, Stream


def verify(stream: Stream, alliance: Alliance, trust: TrustPolicy | None = None) -> set[Reason]:
    v = StreamVerifier(trust or alliance.registry())
    stream.feed(v)
    return {p.reason for p in v.report(alliance.checker()).problems}


def test_only_the_administrator_approves_and_only_approved_operators_register(ganache: Ganache) -> None:
    alliance = Alliance(ganache.url)
    stranger, gateway_account = alliance.account(), alliance.account()
    key = generate_signer()
    assert alliance.admin.admin() == alliance.admin.account
    with pytest.raises(TransactionFailed, match="not an approved operator"):
        stranger.register_gateway(GW, point(key), gateway_account.account)  # first come is no longer first served
    with pytest.raises(TransactionFailed, match="only the alliance administrator"):
        stranger.approve_operator(stranger.account)
    operator = alliance.operator()
    assert alliance.admin.is_operator(operator.account) and not alliance.admin.is_operator(stranger.account)
    operator.register_gateway(GW, point(key), gateway_account.account)
    entry = operator.gateway(GW)
    assert entry is not None and entry.operator == operator.account and not entry.revoked
    assert [(k.key, k.anchorer) for k in entry.keys] == [(point(key), gateway_account.account)]
    other = alliance.operator()
    with pytest.raises(TransactionFailed, match="already registered"):
        other.register_gateway(GW, point(generate_signer()), other.account)
    with pytest.raises(TransactionFailed, match="only the gateway's operator"):
        other.rotate_gateway_key(GW, point(generate_signer()), other.account)
    with pytest.raises(TransactionFailed, match="64 bytes"):
        operator.register_gateway("gw-short", point(key)[:63], gateway_account.account)
    # A withdrawn operator can neither register nor rotate; the administrator can still revoke its gateway.
    alliance.admin.revoke_operator(operator.account)
    with pytest.raises(TransactionFailed, match="not an approved operator"):
        operator.register_gateway("gw-new", point(key), gateway_account.account)
    with pytest.raises(TransactionFailed, match="not an approved operator"):
        operator.rotate_gateway_key(GW, point(generate_signer()), gateway_account.account)
    alliance.admin.revoke_gateway(GW)
    revoked = operator.gateway(GW)
    assert revoked is not None and revoked.revoked
    # The administrator role moves, and the old administrator loses it.
    successor = alliance.account()
    alliance.admin.transfer_admin(successor.account)
    with pytest.raises(TransactionFailed, match="only the alliance administrator"):
        alliance.admin.approve_operator(stranger.account)
    successor.approve_operator(stranger.account)


def test_register_rotate_revoke_with_real_anchors(ganache: Ganache) -> None:
    alliance = Alliance(ganache.url)
    operator, gateway_account = alliance.operator(), alliance.account()
    first, second = generate_signer(), generate_signer()
    operator.register_gateway(GW, point(first), gateway_account.account)

    old = anchor_stream(Stream.honest(signer=first), gateway_account)
    assert verify(old, alliance) == set()
    operator.rotate_gateway_key(GW, point(second), gateway_account.account)
    assert verify(old, alliance) == set()  # anchored while its key was registered: stays proven
    # (Each stream cuts its batches differently, so no two share a root: every anchor here is a new one.)
    late = anchor_stream(Stream.honest(per_batch=9, signer=first), gateway_account)  # old key, after the rotation
    assert verify(late, alliance) == {Reason.UNTRUSTED_KEY}
    newer = anchor_stream(Stream.honest(per_batch=8, signer=second), gateway_account)
    assert verify(newer, alliance) == set()
    operator.revoke_gateway(GW)
    after = anchor_stream(Stream.honest(per_batch=7, signer=second), gateway_account)
    assert verify(after, alliance) == {Reason.UNTRUSTED_KEY}  # nothing anchored after a revocation
    assert verify(newer, alliance) == set()  # anchored before it: still proven


def test_a_required_operator_must_be_the_one_that_registered_the_gateway(ganache: Ganache) -> None:
    alliance = Alliance(ganache.url)
    ours, theirs, gateway_account = alliance.operator(), alliance.operator(), alliance.account()
    key = generate_signer()
    theirs.register_gateway(GW, point(key), gateway_account.account)
    stream = anchor_stream(Stream.honest(signer=key), gateway_account)
    assert verify(stream, alliance, alliance.registry(operator=theirs.account)) == set()
    assert verify(stream, alliance, alliance.registry(operator=ours.account)) == {Reason.UNTRUSTED_KEY}


def test_cli(ganache: Ganache, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    alliance = Alliance(ganache.url)
    admin_key = tmp_path / "admin.key"
    admin_key.write_text(alliance.admin.account_key.hex())
    admin_key.chmod(0o600)
    signer = generate_signer()
    pub = tmp_path / "gateway.pub"
    pub.write_text(signer.public_key_pem())
    op = tmp_path / "operator.key"
    anchorer = "0x" + alliance.account().account.hex()
    chain = ["--rpc", ganache.url, "--contract", alliance.contract]
    common = [*chain, "--gateway", "gw-cli"]
    register = ["chain", "register", *common, "--pub", str(pub), "--anchorer", anchorer, "--operator-key", str(op)]
    assert main(register) == 1  # the operator account is not approved yet (its key file is created now)
    assert "not an approved operator" in capsys.readouterr().err
    assert (op.stat().st_mode & 0o777) == 0o600
    from eth_account import Account

    op_address = Account.from_key(bytes.fromhex(op.read_text().strip())).address
    assert main(["chain", "approve-operator", *chain, "--account", op_address, "--operator-key", str(admin_key)]) == 0
    assert main(register) == 0
    assert main(["chain", "show", *common]) == 0
    out = capsys.readouterr().out
    assert "active" in out and f"anchoring account {anchorer}" in out and op_address.lower()[2:] in out
    assert main(register) == 1
    assert "already registered" in capsys.readouterr().err
    assert main(["chain", "revoke", *common, "--operator-key", str(op)]) == 0
    assert main(["chain", "show", *common]) == 0
    assert "REVOKED" in capsys.readouterr().out
    assert (
        main(["chain", "register", *common, "--pub", str(pub), "--anchorer", "0x1234", "--operator-key", str(op)]) == 2
    )
    assert "--anchorer" in capsys.readouterr().err


def test_registry_trust_is_refused_without_the_chain(ganache: Ganache, capsys: pytest.CaptureFixture[str]) -> None:
    alliance = Alliance(ganache.url)
    v = StreamVerifier(alliance.registry())
    Stream.honest().feed(v)
    with pytest.raises(ValueError, match="needs the chain"):
        v.report(None)
    assert main(["verify", "--capture", "/dev/null", "--registry", alliance.contract]) == 2
    assert "--registry needs --rpc" in capsys.readouterr().err
    report = StreamVerifier(alliance.registry())
    Stream.honest().feed(report)
    assert report.report(alliance.checker()).outcome is Outcome.PROBLEMS  # not registered, not anchored
