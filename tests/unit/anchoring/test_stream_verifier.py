"""The platform-side verifier accepts an honest stream and names each forgery by its reason."""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anchoring.chain import AnchorKind
from anchoring.receipt import AnchorReceipt
from anchoring.stream_verifier import Reason, StreamVerifier
from anchoring.trust import TrustPolicy
from edge import cbor
from edge.manifest import GENESIS_PREV, SignedManifest, build_manifest, sign_manifest
from edge.record import Record, encode_data_message
from edge.sm2 import (
    GmsslSm2Signer,
    N,
    decode_signature,
    encode_signature,
    generate_signer,
    load_public_key_pem,
)
from edge.sm3 import sm3
from edge.topics import Topics
from tests.unit.anchoring.fakes import FakeChain, receipt

GW = "gw-test"
T = Topics("shenzhen", GW)
SIGNER = generate_signer()
OTHER = generate_signer()


def pinned(*keys: GmsslSm2Signer, gw: str = GW) -> TrustPolicy:
    return TrustPolicy(pinned={gw: list(keys or (SIGNER,))})


def der_unchecked(r: int, s: int) -> bytes:
    """DER for any r, s — including out-of-range ones our encoder refuses to produce."""

    def integer(v: int) -> bytes:
        body = v.to_bytes(v.bit_length() // 8 + 1, "big")
        return bytes([0x02, len(body)]) + body

    body = integer(r) + integer(s)
    return bytes([0x30, len(body)]) + body


def record(seq: int) -> bytes:
    return bytes(
        Record(
            gw=GW,
            seq=seq,
            dev=f"dev-{seq % 3}",
            t=1_700_000_000_000 + seq,
            kind="heart_rate",
            val={"heart_rate": 60 + seq},
            raw=bytes([0, 60 + seq]),
            salt=random.Random(seq).randbytes(16),
        )
    )


@dataclass
class Stream:
    """An honest gateway's output: records, signed batches, receipts; mutate it to forge."""

    records: dict[int, bytes] = field(default_factory=dict)
    batches: list[bytes] = field(default_factory=list)
    receipts: list[bytes] = field(default_factory=list)
    heads: list[bytes] = field(default_factory=list)

    def signed_head(self, signer: GmsslSm2Signer = SIGNER, issued: int = 1_700_000_100_000) -> bytes:
        """The gateway's signed head naming the last batch of this stream."""
        from edge.head import Head, sign_head

        sm = SignedManifest.from_bytes(self.batches[-1])
        m = sm.manifest
        return bytes(sign_head(Head(m.gw, m.batch, m.last_seq, sm3(sm.body), issued), signer))

    @classmethod
    def honest(cls, n: int = 25, per_batch: int = 10, signer: GmsslSm2Signer = SIGNER) -> Stream:
        s = cls({i: record(i) for i in range(1, n + 1)})
        prev, first, number = GENESIS_PREV, 1, 1
        while first <= n:
            last = min(n, first + per_batch - 1)
            m = build_manifest(GW, number, first, [s.records[i] for i in range(first, last + 1)], prev, 1)
            s.batches.append(bytes(sign_manifest(m, signer)))
            s.receipts.append(bytes(receipt(GW, number, m.count, m.root, 100 + number)))
            prev, first, number = m.digest, last + 1, number + 1
        return s

    def feed(self, v: StreamVerifier) -> None:
        for _seq, data in sorted(self.records.items()):
            v.feed(T.data(Record.from_bytes(data).dev), encode_data_message([data]))
        for b in self.batches:
            v.feed(T.batch, b)
        for r in self.receipts:
            v.feed(T.anchor, r)
        for h in self.heads:
            v.feed(T.head, h, True)

    def chain(self) -> FakeChain:
        """The chain as the honest gateway left it: every receipt's anchor is there."""
        c = FakeChain()
        for r in self.receipts:
            c.put(AnchorReceipt.from_bytes(r))
        return c

    def verify(self, **kw: object) -> set[Reason]:
        v = StreamVerifier(pinned())
        self.feed(v)
        report = v.report(**kw)  # type: ignore[arg-type]
        return {p.reason for p in report.problems}


def test_honest_stream_verifies() -> None:
    v = StreamVerifier(pinned())
    Stream.honest().feed(v)
    report = v.report(require_complete=True)
    assert report.ok, report.summary()
    g = report.gateways[GW]
    assert (g.records, g.batches_verified, g.anchors_verified, g.records_in_verified_batches) == (25, 3, 3, 25)


def test_order_of_arrival_does_not_matter() -> None:
    s = Stream.honest()
    v = StreamVerifier(pinned())
    msgs = [(T.data(f"dev-{q % 3}"), encode_data_message([d])) for q, d in s.records.items()]
    msgs += [(T.batch, b) for b in s.batches] + [(T.anchor, r) for r in s.receipts]
    random.Random(1).shuffle(msgs)
    for topic, payload in msgs:
        v.feed(topic, payload)
    assert v.report().ok


def test_identical_duplicates_are_fine_different_ones_are_not() -> None:
    s = Stream.honest()
    v = StreamVerifier(pinned())
    s.feed(v)
    s.feed(v)  # a full re-send after a reconnect
    assert v.report().ok
    forged = Record.from_bytes(s.records[5])
    v.feed(T.data(forged.dev), encode_data_message([bytes(replace(forged, val={"heart_rate": 200}))]))
    assert Reason.CONFLICTING_DUPLICATE in {p.reason for p in v.report().problems}


def test_altered_record_byte() -> None:
    s = Stream.honest()
    r = Record.from_bytes(s.records[7])
    s.records[7] = bytes(replace(r, val={"heart_rate": 180}))
    assert Reason.ROOT_MISMATCH in s.verify()


def test_reordered_records() -> None:
    s = Stream.honest()
    a, b = Record.from_bytes(s.records[3]), Record.from_bytes(s.records[4])
    s.records[3], s.records[4] = bytes(replace(b, seq=3)), bytes(replace(a, seq=4))
    assert Reason.ROOT_MISMATCH in s.verify()


def test_missing_record() -> None:
    s = Stream.honest()
    del s.records[12]
    assert Reason.MISSING_RECORD in s.verify()


def test_manifest_signed_by_another_gateway_key() -> None:
    s = Stream.honest()
    forged = Stream.honest(signer=OTHER)
    s.batches[1] = forged.batches[1]
    assert Reason.UNTRUSTED_KEY in s.verify()


def test_signature_that_does_not_verify() -> None:
    s = Stream.honest()
    sm = cbor.loads(s.batches[0])
    r, sig_s = decode_signature(sm["sig"])
    sm["sig"] = encode_signature(r, (sig_s + 1) % N)
    s.batches[0] = cbor.dumps(sm)
    assert Reason.BAD_SIGNATURE in s.verify()


def test_signature_with_s_out_of_range() -> None:
    s = Stream.honest()
    sm = cbor.loads(s.batches[0])
    r, sig_s = decode_signature(sm["sig"])
    sm["sig"] = der_unchecked(r, sig_s + N)
    s.batches[0] = cbor.dumps(sm)
    assert Reason.BAD_SIGNATURE in s.verify()


def test_signature_made_with_another_sm2_id() -> None:
    s = Stream.honest()
    sm = cbor.loads(s.batches[0])
    sm["sig"] = GmsslSm2Signer(SIGNER.private_key, user_id=b"").sign(sm["manifest"])
    s.batches[0] = cbor.dumps(sm)
    assert Reason.BAD_SIGNATURE in s.verify()


def test_replayed_old_batch_breaks_the_chain() -> None:
    s = Stream.honest(n=30)
    # Batch 3 replaced by a re-signed copy of batch 2's content under number 3.
    m2 = cbor.loads(cbor.loads(s.batches[1])["manifest"])
    m2["batch"] = 3
    from edge.manifest import Manifest

    s.batches[2] = bytes(sign_manifest(Manifest.from_bytes(cbor.dumps(m2)), SIGNER))
    reasons = s.verify()
    assert Reason.BROKEN_CHAIN in reasons or Reason.BATCH_GAP in reasons


def test_broken_prev_chain() -> None:
    s = Stream.honest()
    m = cbor.loads(cbor.loads(s.batches[2])["manifest"])
    m["prev"] = b"\x00" * 32
    from edge.manifest import Manifest

    s.batches[2] = bytes(sign_manifest(Manifest.from_bytes(cbor.dumps(m)), SIGNER))
    assert s.verify() == {Reason.BROKEN_CHAIN}


def test_missing_batch() -> None:
    s = Stream.honest()
    del s.batches[1]
    assert Reason.MISSING_BATCH in s.verify()


def test_missing_anchor_and_mismatched_anchor() -> None:
    s = Stream.honest()
    del s.receipts[0]
    assert Reason.MISSING_ANCHOR in s.verify()
    s = Stream.honest()
    r = AnchorReceipt.from_bytes(s.receipts[0])
    s.receipts[0] = bytes(replace(r, root=b"\x22" * 32))
    assert Reason.ANCHOR_MISMATCH in s.verify()


def test_receipt_not_confirmed_by_the_chain() -> None:
    s = Stream.honest()
    chain = s.chain()
    chain.refuse[AnchorReceipt.from_bytes(s.receipts[1]).tx] = "transaction not found"
    assert s.verify(chain=chain) == {Reason.ANCHOR_NOT_ON_CHAIN}


def test_unbatched_records_are_pending_unless_completeness_is_required() -> None:
    s = Stream.honest()
    s.records[26] = record(26)
    assert s.verify() == set()
    assert s.verify(require_complete=True) == {Reason.UNBATCHED}


def test_key_from_retained_topic_is_trust_on_first_use() -> None:
    v = StreamVerifier(TrustPolicy(tofu=load_public_key_pem))
    v.feed(T.key, cbor.dumps({"key_id": SIGNER.key_id, "pem": SIGNER.public_key_pem()}), True)
    Stream.honest().feed(v)
    report = v.report()
    assert report.ok and "trust on first use" in report.gateways[GW].key_source


def test_an_empty_data_message_is_malformed() -> None:
    v = StreamVerifier(pinned())
    v.feed(T.data("d"), b"\x80")  # found by the fuzz test below: an empty array used to pass as a clean stream
    assert {p.reason for p in v.report().problems} == {Reason.MALFORMED}


def test_a_batch_message_whose_signed_body_is_not_a_manifest_is_malformed_not_a_crash() -> None:
    """A well-formed envelope on ``batch`` around another kind's body (here a signed head, validly signed by the
    gateway's own key) used to pass decoding and raise when the verifier read the manifest, ending the whole
    verification with a traceback. It is a malformed message; the honest stream around it still verifies."""
    from edge.head import Head, sign_head

    sh = sign_head(Head(GW, 0, 0, bytes(32), 1), SIGNER)
    v = StreamVerifier(pinned())
    v.feed(T.batch, cbor.dumps({"manifest": sh.body, "sig": sh.sig, "key_id": sh.key_id}))
    Stream.honest().feed(v)
    problems = v.report().problems
    assert [p.reason for p in problems] == [Reason.MALFORMED] and "missing field" in problems[0].message


def test_record_on_the_wrong_topic() -> None:
    v = StreamVerifier(pinned())
    v.feed(T.data("dev-x"), encode_data_message([record(1)]))
    assert Reason.WRONG_TOPIC in {p.reason for p in v.report().problems}


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(
        [T.data("d"), T.batch, T.anchor, T.key, T.status, T.rollup("health_supervision"), "tiyi/v1/x", "other"]
    ),
    st.binary(max_size=200),
)
def test_random_payloads_never_raise(topic: str, payload: bytes) -> None:
    v = StreamVerifier(pinned())
    v.feed(topic, payload)
    assert not v.report().ok


@pytest.mark.parametrize("payload", [cbor.dumps([b"\xa0"]), cbor.dumps({"x": 1}), b"\xff"])
def test_malformed_payloads_are_findings(payload: bytes) -> None:
    v = StreamVerifier(pinned())
    v.feed(T.data("d"), payload)
    assert {p.reason for p in v.report().problems} == {Reason.MALFORMED}


# ---------------------------------------------------------------- roll-ups
SUP = "health_supervision"


def rollup_message(
    stream: Stream, first: int, last: int, number: int, root: bytes | None = None, target: str | None = SUP
) -> bytes:
    from edge.manifest import SignedManifest
    from edge.rollup import Rollup

    roots = tuple(SignedManifest.from_bytes(stream.batches[n - 1]).manifest.root for n in range(first, last + 1))
    r = Rollup(GW, SUP, number, first, roots)
    rr = replace(
        receipt(
            GW,
            number,
            len(roots),
            root or r.root,
            7 + number,
            kind=AnchorKind.ROLLUP,
            chain_id=20201,
            contract=b"\x22" * 20,
        ),
        target=target,
    )
    return cbor.dumps({"rollup": bytes(r), "receipt": bytes(rr)})


def verify_with_rollups(stream: Stream, messages: list[bytes], **kw: object) -> tuple[set[Reason], object]:
    v = StreamVerifier(pinned())
    stream.feed(v)
    for m in messages:
        v.feed(T.rollup(SUP), m)
    report = v.report(require_complete=True, rollup_targets=[SUP], **kw)  # type: ignore[arg-type]
    return {p.reason for p in report.problems}, report


def test_roll_ups_covering_every_batch_verify() -> None:
    s = Stream.honest(n=45)  # 5 batches
    reasons, report = verify_with_rollups(s, [rollup_message(s, 1, 3, 1), rollup_message(s, 4, 5, 2)])
    assert reasons == set(), report.summary()  # type: ignore[attr-defined]
    assert report.gateways[GW].rollups == {SUP: (2, 5)}  # type: ignore[attr-defined]


def test_a_batch_left_out_of_the_roll_ups_is_named() -> None:
    s = Stream.honest(n=45)
    assert verify_with_rollups(s, [rollup_message(s, 1, 3, 1)])[0] == {Reason.MISSING_ROLLUP}


def test_a_roll_up_whose_leaves_are_not_the_signed_roots_or_whose_receipt_differs_is_refused() -> None:
    s = Stream.honest(n=45)
    good = rollup_message(s, 1, 5, 1)
    m = cbor.loads(good)
    from edge.rollup import Rollup

    r = Rollup.from_bytes(m["rollup"])
    swapped = Rollup(r.gw, r.target, r.number, r.first_batch, (r.roots[1], r.roots[0], *r.roots[2:]))
    bad_leaves = cbor.dumps({"rollup": bytes(swapped), "receipt": m["receipt"]})
    assert Reason.ROLLUP_MISMATCH in verify_with_rollups(s, [bad_leaves])[0]
    wrong_root = rollup_message(s, 1, 5, 1, root=b"\x33" * 32)
    assert Reason.ROLLUP_MISMATCH in verify_with_rollups(s, [wrong_root])[0]


def test_a_roll_up_receipt_made_for_another_target_is_refused() -> None:
    s = Stream.honest(n=45)
    assert verify_with_rollups(s, [rollup_message(s, 1, 5, 1, target=None)])[0] == set()  # contract 1.0 receipts
    elsewhere = rollup_message(s, 1, 5, 1, target="insurer_chain")
    reasons, report = verify_with_rollups(s, [elsewhere])
    assert Reason.ROLLUP_MISMATCH in reasons
    assert "it names target insurer_chain" in report.summary()  # type: ignore[attr-defined]


def test_a_roll_up_not_confirmed_by_its_chain_is_refused() -> None:
    s = Stream.honest(n=45)
    reasons, _ = verify_with_rollups(s, [rollup_message(s, 1, 5, 1)], rollup_chains={SUP: FakeChain()})
    assert reasons == {Reason.ANCHOR_NOT_ON_CHAIN, Reason.MISSING_ROLLUP}
