"""Forgeries that need a real chain (ganache over JSON-RPC), each refused for its own reason (issue 15).

The attacker here can publish anything on the broker, anchor anything from accounts of its own, and in the worst
cases holds a gateway's old (rotated-away) SM2 key or even its anchoring account. What it cannot do is act as the
alliance administrator or an approved operator.
"""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import pytest

from anchoring.bundle import build_bundle
from anchoring.capture import write_capture_item
from anchoring.chain import AnchorKind
from anchoring.receipt import AnchorReceipt
from anchoring.stream_verifier import Outcome, Reason, StreamVerifier
from edge.manifest import SignedManifest
from edge.sm2 import generate_signer
from gateway.cli import main
from tests.conftest import Ganache
from tests.integration.chainkit import Alliance, anchor, anchor_stream, point
from tests.unit.anchoring.test_stream_verifier import GW, SIGNER, Stream, T


def capture(path: Path, stream: Stream) -> Path:
    buf = io.BytesIO()
    for d in stream.records.values():
        from edge.record import Record, encode_data_message

        write_capture_item(buf, T.data(Record.from_bytes(d).dev), encode_data_message([d]), False, 0)
    for topic, items in ((T.batch, stream.batches), (T.anchor, stream.receipts), (T.head, stream.heads)):
        for item in items:
            write_capture_item(buf, topic, item, topic == T.head, 0)
    path.write_bytes(buf.getvalue())
    return path


def registered(alliance: Alliance, signer=SIGNER):  # type: ignore[no-untyped-def]
    """An operator registers GW with ``signer``'s key, anchoring from an account of the gateway's own."""
    operator, account = alliance.operator(), alliance.account()
    operator.register_gateway(GW, point(signer), account.account)
    return operator, account


# ---------------------------------------------------------------- 1: key validity judged at the chain's block
def test_an_old_key_with_a_decoy_receipt_naming_an_earlier_block_is_refused(
    ganache: Ganache, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    alliance = Alliance(ganache.url)
    old, new = generate_signer(), generate_signer()
    operator, account = registered(alliance, old)
    honest = anchor_stream(Stream.honest(signer=old), account)  # anchored while the old key was valid
    honest.heads = [honest.signed_head(signer=old)]
    early_block = AnchorReceipt.from_bytes(honest.receipts[0]).block
    common = ["--rpc", ganache.url, "--registry", alliance.contract]
    assert main(["verify", "--capture", str(capture(tmp_path / "honest.cbor", honest)), *common]) == 0
    assert "every record verified" in capsys.readouterr().out
    operator.rotate_gateway_key(GW, point(new), account.account)

    # The forger holds the old key and anchors its forged batches after the rotation from its own account, then
    # publishes, first, decoy receipts that claim the honest stream's early block.
    forger = alliance.account()
    forged = anchor_stream(Stream.honest(per_batch=9, signer=old), forger)
    real = [AnchorReceipt.from_bytes(r) for r in forged.receipts]
    forged.receipts = [bytes(replace(r, block=early_block)) for r in real] + forged.receipts
    forged.heads = [forged.signed_head(signer=new)]
    assert main(["verify", "--capture", str(capture(tmp_path / "forged.cbor", forged)), *common]) == 1
    assert "untrusted_key" in capsys.readouterr().out

    # Worse: the forger also holds the gateway's anchoring account. The chain's block still decides.
    worse = anchor_stream(Stream.honest(per_batch=8, signer=old), account)
    v = StreamVerifier(alliance.registry())
    worse.feed(v)
    for r in worse.receipts:
        v.feed(T.anchor, bytes(replace(AnchorReceipt.from_bytes(r), block=early_block)))
    assert Reason.UNTRUSTED_KEY in {p.reason for p in v.report(alliance.checker()).problems}


# ---------------------------------------------------------------- 2: bundles honour the platform's trust root
def test_a_bundle_signed_by_an_attacker_and_anchored_under_the_victims_id_is_never_proven(
    ganache: Ganache, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    alliance = Alliance(ganache.url)
    registered(alliance, SIGNER)
    attacker = generate_signer()
    forged = anchor_stream(Stream.honest(signer=attacker), alliance.account())
    signed = SignedManifest.from_bytes(forged.batches[0])
    m = signed.manifest
    bundle = build_bundle(
        3,
        [forged.records[i] for i in range(m.first_seq, m.last_seq + 1)],
        signed,
        AnchorReceipt.from_bytes(forged.receipts[0]),
        attacker.public_key_pem(),
    )
    path = tmp_path / "forged.json"
    path.write_text(json.dumps(bundle))
    victim_pub = tmp_path / "victim.pub"
    victim_pub.write_text(SIGNER.public_key_pem())
    chain = ["--rpc", ganache.url, "--contract", alliance.contract]
    assert main(["verify", "--bundle", str(path), "--rpc", ganache.url, "--registry", alliance.contract]) == 1
    assert "anchoring account" in capsys.readouterr().out  # the attacker's account is not the registered one
    assert main(["verify", "--bundle", str(path), "--key", f"{GW}={victim_pub}", *chain]) == 1
    assert "FAIL signature" in capsys.readouterr().out
    assert main(["verify", "--bundle", str(path), *chain]) == 2  # no trust root: refused, not guessed
    assert "exactly one trust root" in capsys.readouterr().err
    assert main(["verify", "--bundle", str(path), "--tofu", *chain]) == int(Outcome.UNCHECKED)  # never 0
    assert "trust on first use" in capsys.readouterr().out


# ---------------------------------------------------------------- 3: registration needs authority
def test_a_squatter_cannot_register_and_a_required_operator_is_enforced(
    ganache: Ganache, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from anchoring.errors import TransactionFailed

    alliance = Alliance(ganache.url)
    squatter = alliance.account()
    with pytest.raises(TransactionFailed, match="not an approved operator"):
        squatter.register_gateway(GW, point(generate_signer()), squatter.account)
    operator, account = registered(alliance)
    stream = anchor_stream(Stream.honest(), account)
    stream.heads = [stream.signed_head()]
    path = capture(tmp_path / "s.cbor", stream)
    common = ["--rpc", ganache.url, "--registry", alliance.contract]
    assert main(["verify", "--capture", str(path), *common, "--operator", "0x" + operator.account.hex()]) == 0
    assert f"operator 0x{operator.account.hex()}" in capsys.readouterr().out  # who vouched for the key
    other = alliance.operator()
    assert main(["verify", "--capture", str(path), *common, "--operator", "0x" + other.account.hex()]) == 1
    assert "not the required" in capsys.readouterr().out


# ---------------------------------------------------------------- 4: only the registered account's anchors count
def test_anchors_by_an_account_the_registry_does_not_name_do_not_count(ganache: Ganache) -> None:
    alliance = Alliance(ganache.url)
    registered(alliance)
    stranger = alliance.account()
    stream = anchor_stream(Stream.honest(), stranger)  # correctly signed, but anchored by someone else
    v = StreamVerifier(alliance.registry())
    stream.feed(v)
    problems = v.report(alliance.checker()).problems
    assert {p.reason for p in problems} == {Reason.UNTRUSTED_KEY}
    assert "anchoring account" in problems[0].message


# ---------------------------------------------------------------- 15: the kind is on chain, not in the id
def test_a_gateway_named_like_a_roll_up_cannot_pass_its_batches_off_as_roll_ups(ganache: Ganache) -> None:
    alliance = Alliance(ganache.url)
    account = alliance.account()
    root = b"\x42" * 32
    r = anchor(account, AnchorKind.BATCH, GW + ".rollup", root, 1, 3)  # "gw-test.rollup" anchors a batch
    as_rollup = replace(r, gw=GW, kind=AnchorKind.ROLLUP)
    got = alliance.checker().confirm(as_rollup)
    assert isinstance(got, str) and "on-chain event is batch gw-test.rollup" in got
    assert account.anchored_at(account.account, AnchorKind.ROLLUP, GW, root) is None
