"""Forgeries against the verifier's trust decisions, each refused for its own reason (issue 15).

Each test feeds the input an attacker would produce; each failed (or passed wrongly) on the verifier before this
change. Attacks that need a real chain (decoy receipts, squatted registrations, foreign anchors) live in
tests/integration/test_forgery_chain.py.
"""

from __future__ import annotations

import tracemalloc

from anchoring.chain import AnchorKind
from anchoring.receipt import AnchorReceipt
from anchoring.stream_verifier import Outcome, Reason, StreamVerifier, missing_ranges
from anchoring.trust import TrustPolicy
from edge import cbor
from edge.head import Head, sign_head
from edge.manifest import GENESIS_PREV, Manifest, sign_manifest
from edge.record import Record, encode_data_message
from edge.rollup import Rollup
from edge.sm2 import generate_signer, load_public_key_pem
from edge.topics import Topics
from tests.unit.anchoring.fakes import FakeChain, receipt
from tests.unit.anchoring.test_stream_verifier import GW, OTHER, SIGNER, Stream, T, pinned, record, rollup_message

SUP = "health_supervision"


def report(stream: Stream, trust: TrustPolicy | None = None, **kw: object):  # type: ignore[no-untyped-def]
    v = StreamVerifier(trust or pinned())
    stream.feed(v)
    return v.report(**kw)  # type: ignore[arg-type]


def reasons(stream: Stream, trust: TrustPolicy | None = None, **kw: object) -> set[Reason]:
    return {p.reason for p in report(stream, trust, **kw).problems}


def complete(stream: Stream) -> Stream:
    stream.heads = [stream.signed_head()]
    return stream


# ---------------------------------------------------------------- 5: a pinned key is bound to its gateway
def test_a_key_pinned_for_one_gateway_does_not_vouch_for_another() -> None:
    s = Stream.honest()  # gw-test's stream, signed with SIGNER
    assert reasons(s, TrustPolicy(pinned={"gw-other": [SIGNER]})) == {Reason.UNTRUSTED_KEY}
    assert reasons(s, TrustPolicy(pinned={GW: [OTHER], "gw-other": [SIGNER]})) == {Reason.UNTRUSTED_KEY}
    assert reasons(s, TrustPolicy(pinned={GW: [SIGNER]})) == set()


def test_a_bare_pinned_key_binds_only_when_one_gateway_is_in_view() -> None:
    s = Stream.honest()
    assert reasons(s, TrustPolicy(unbound=[SIGNER])) == set()
    v = StreamVerifier(TrustPolicy(unbound=[SIGNER]))
    s.feed(v)
    other = Topics("shenzhen", "gw-two")
    m = Manifest.from_bytes(sign_manifest(build_one("gw-two"), SIGNER).body)
    v.feed(other.batch, bytes(sign_manifest(m, SIGNER)))
    got = v.report()
    assert {p.reason for p in got.problems} >= {Reason.UNTRUSTED_KEY}
    assert any("pin keys per gateway" in p.message for p in got.problems)


def build_one(gw: str) -> Manifest:
    from edge.manifest import build_manifest

    data = bytes(
        Record(gw=gw, seq=1, dev="d", t=1, kind="heart_rate", val={"heart_rate": 60}, raw=b"\x00<", salt=b"\x01" * 16)
    )
    return build_manifest(gw, 1, 1, [data], GENESIS_PREV, 1)


# ---------------------------------------------------------------- 6: roll-ups checked on their chains everywhere
def test_roll_up_receipts_with_made_up_transactions_are_refused_when_the_chain_is_given() -> None:
    s = Stream.honest(n=45)
    v = StreamVerifier(pinned())
    s.feed(v)
    v.feed(T.rollup(SUP), rollup_message(s, 1, 5, 1))  # its tx exists nowhere
    got = v.report(s.chain(), require_complete=True, rollup_targets=[SUP], rollup_chains={SUP: FakeChain(SUP)})
    assert {p.reason for p in got.problems} == {Reason.ANCHOR_NOT_ON_CHAIN, Reason.MISSING_ROLLUP}


def test_roll_ups_not_checked_on_a_chain_never_count_as_verified() -> None:
    s = complete(Stream.honest(n=45))
    v = StreamVerifier(pinned())
    s.feed(v)
    v.feed(T.rollup(SUP), rollup_message(s, 1, 5, 1))
    got = v.report(s.chain(), require_complete=True)
    assert got.ok and got.outcome is Outcome.UNCHECKED
    assert f"roll-ups on {SUP} were not checked" in got.summary() and f"{SUP} (NOT consulted)" in got.summary()


# ---------------------------------------------------------------- 7: no unverified number sizes memory
def _peak_bytes(feed: list[tuple[str, bytes]], trust: TrustPolicy) -> int:
    v = StreamVerifier(trust)
    tracemalloc.start()
    try:
        for topic, payload in feed:
            v.feed(topic, payload)
        got = v.report(require_complete=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert not got.ok
    return peak


def test_a_record_with_seq_ten_to_the_twelfth_costs_no_memory() -> None:
    s = Stream.honest()
    far = Record.from_bytes(record(1))
    from dataclasses import replace

    feed = [(T.data(r.dev), encode_data_message([d])) for d in s.records.values() for r in [Record.from_bytes(d)]]
    feed.append((T.data(far.dev), encode_data_message([bytes(replace(far, seq=10**12))])))
    assert _peak_bytes(feed, pinned()) < 8 << 20
    v = StreamVerifier(pinned())
    for t, p in feed:
        v.feed(t, p)
    gaps = [p.message for p in v.report().problems if p.reason == Reason.MISSING_RECORD]
    assert gaps == [f"seq 26..{10**12 - 1} ({10**12 - 26} records) never received"]


def test_a_manifest_claiming_ten_to_the_twelfth_records_costs_no_memory() -> None:
    # Worst case: trust on first use of an attacker's key, so the manifest's signature does verify.
    attacker = generate_signer()
    s = Stream.honest()
    m = Manifest(GW, 1, 1, 10**12, 10**12, b"\x01" * 32, GENESIS_PREV, 1)
    feed = [
        (T.key, cbor.dumps({"key_id": attacker.key_id, "pem": attacker.public_key_pem()})),
        (T.batch, bytes(sign_manifest(m, attacker))),
    ]
    feed += [(T.data(Record.from_bytes(d).dev), encode_data_message([d])) for d in s.records.values()]
    assert _peak_bytes(feed, TrustPolicy(tofu=load_public_key_pem)) < 8 << 20
    # The junk-signed variant under a pinned key is refused as untrusted, and costs nothing either.
    assert _peak_bytes(feed[1:], pinned()) < 8 << 20


def test_missing_ranges_are_counted_not_listed() -> None:
    assert missing_ranges([2, 3, 7], 1, 10) == [(1, 1), (4, 6), (8, 10)]
    assert missing_ranges([], 5, 10**15) == [(5, 10**15)]
    assert missing_ranges([1, 2, 3], 1, 3) == []


# ---------------------------------------------------------------- 8: a dropped tail shows
def test_dropping_the_whole_last_batch_is_detected_by_the_signed_head() -> None:
    s = complete(Stream.honest(n=30))  # three batches, head names batch 3
    assert reasons(s, require_complete=True) == set()
    s.batches.pop()
    s.receipts.pop()
    for q in range(21, 31):
        del s.records[q]
    assert reasons(s, require_complete=True) == {Reason.TRUNCATED}


def test_dropping_the_tail_and_the_head_is_detected_by_the_chain() -> None:
    s = Stream.honest(n=30)
    chain = s.chain()  # the chain holds all three anchors
    s.batches.pop()
    s.receipts.pop()
    for q in range(21, 31):
        del s.records[q]
    got = report(s, chain=chain, require_complete=True)
    assert {p.reason for p in got.problems} == {Reason.TRUNCATED}
    assert got.gateways[GW].chain_latest == 3


def test_a_head_that_does_not_match_the_manifest_or_is_not_trusted_is_refused() -> None:
    s = Stream.honest(n=30)
    bad = Head(GW, 3, 30, b"\x07" * 32, 5)
    s.heads = [bytes(sign_head(bad, SIGNER))]
    assert reasons(s) == {Reason.HEAD_MISMATCH}
    s.heads = [s.signed_head(signer=OTHER)]
    assert reasons(s) == {Reason.UNTRUSTED_KEY}
    good = Stream.honest(n=30).signed_head()
    env = cbor.loads(good)
    env["head"] = bytes(Head(GW, 9, 90, b"\x07" * 32, 5))  # a bigger claim under the old signature
    s.heads = [cbor.dumps(env)]
    assert reasons(s) == {Reason.BAD_SIGNATURE}


# ---------------------------------------------------------------- 9: outcomes and exit codes
def test_only_a_fully_checked_stream_is_verified() -> None:
    s = complete(Stream.honest())
    assert report(s, chain=s.chain()).outcome is Outcome.VERIFIED
    assert "RESULT: every record verified" in report(s, chain=s.chain()).summary()
    assert report(s).outcome is Outcome.UNCHECKED  # no chain
    assert report(Stream.honest(), chain=s.chain()).outcome is Outcome.UNCHECKED  # no signed head
    tofu = StreamVerifier(TrustPolicy(tofu=load_public_key_pem))
    tofu.feed(T.key, cbor.dumps({"key_id": SIGNER.key_id, "pem": SIGNER.public_key_pem()}))
    s.feed(tofu)
    got = tofu.report(s.chain())
    assert got.ok and got.outcome is Outcome.UNCHECKED and "every record verified" not in got.summary()
    s.records[26] = record(26)
    pending = report(s, chain=s.chain())
    assert pending.outcome is Outcome.PENDING and "pending" in pending.summary()
    assert report(s, chain=s.chain(), require_complete=True).outcome is Outcome.PROBLEMS
    assert [int(o) for o in Outcome] == [0, 1, 3, 4]


def test_the_failed_anchor_state_is_well_formed() -> None:
    v = StreamVerifier(pinned())
    v.feed(T.anchor_state, cbor.dumps({"target": "shenzhen", "kind": "batch", "n": 3, "state": "failed", "t": 1}))
    Stream.honest().feed(v)
    assert v.report().ok


# ---------------------------------------------------------------- 15: roll-ups and batches never mix
def test_a_batch_anchor_is_not_a_roll_up_and_a_look_alike_gateway_id_is_not_a_roll_up() -> None:
    s = Stream.honest(n=45)
    good = cbor.loads(rollup_message(s, 1, 5, 1))
    r = AnchorReceipt.from_bytes(good["receipt"])
    from dataclasses import replace

    for forged in (replace(r, kind=AnchorKind.BATCH), replace(r, gw=GW + ".rollup"), replace(r, count=4)):
        v = StreamVerifier(pinned())
        s.feed(v)
        v.feed(T.rollup(SUP), cbor.dumps({"rollup": good["rollup"], "receipt": bytes(forged)}))
        assert Reason.ROLLUP_MISMATCH in {p.reason for p in v.report().problems}
    # A roll-up receipt published as a batch anchor is not one.
    m = Rollup.from_bytes(good["rollup"])
    v = StreamVerifier(pinned())
    v.feed(T.anchor, bytes(receipt(GW, 1, len(m.roots), m.root, 9, kind=AnchorKind.ROLLUP)))
    assert Reason.WRONG_TOPIC in {p.reason for p in v.report().problems}
