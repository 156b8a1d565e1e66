"""An audience's verifier accepts an honest view stream and names each forgery by its reason."""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anchoring.chain import AnchorKind
from anchoring.findings import Outcome, Reason
from anchoring.receipt import AnchorReceipt
from anchoring.trust import TrustPolicy
from anchoring.view_verify import AudienceReport, AudienceVerifier, parse_audience_keys
from edge.consent import ConsentEvent, sign_consent
from edge.errors import CodecError
from edge.head import Head, sign_head
from edge.manifest import GENESIS_PREV, SignedManifest, build_manifest, sign_manifest
from edge.merkle import MerkleTree
from edge.record import Record, encode_data_message
from edge.sm2 import generate_signer
from edge.topics import Topics
from edge.view import AudienceSpec, SignedView, ViewManifest, ViewRule, build_view, derive_view_salt, sign_view
from tests.unit.anchoring.fakes import FakeChain, receipt

GW, AUD = "gw-v", "lab-1"
T = Topics("shenzhen", GW)
SIGNER, OTHER = generate_signer(), generate_signer()
ANN, BOB, CAT = "sub-00000000000000a1", "sub-00000000000000b2", "sub-00000000000000c3"
KEY, SECRET = bytes(range(16)), bytes(range(32))
SEALED = AudienceSpec(AUD, "research", {"*": ViewRule(drop_raw=True)}, key=("k1", KEY))
AGGREGATING = AudienceSpec(AUD, "research", {"heart_rate": ViewRule(aggregate=True)}, unbound=True)


def source_record(seq: int) -> Record:
    sub = (ANN, BOB, CAT, None)[seq % 4]
    kind = "heart_rate" if seq % 3 else "temperature"
    val = {"heart_rate": 60 + seq} if kind == "heart_rate" else {"temperature": 36.5}
    return Record(GW, seq, f"dev-{seq % 2}", 1_700_000_000_000 + seq, kind, val, b"\x01", random.randbytes(16), (), sub)


def consent_chain(*steps: tuple[str, str, bool]) -> list[bytes]:
    out, prev = [], GENESIS_PREV
    for n, (sub, purpose, granted) in enumerate(steps, 1):
        e = ConsentEvent(GW, n, 1_700_000_000_000 + n, sub, purpose, granted, prev)
        out.append(bytes(sign_consent(e, SIGNER)))
        prev = e.digest
    return out


# The ledger: Ann and Cat consent to research, Bob only to insurance (event 2: not for this audience's topic).
LEDGER = (
    (ANN, "research", True),
    (BOB, "insurance", True),
    (CAT, "research", True),
)


@dataclass
class ViewStream:
    """What an audience receives from an honest gateway; mutate it to forge."""

    spec: AudienceSpec
    batches: list[bytes] = field(default_factory=list)
    receipts: list[bytes] = field(default_factory=list)
    views: list[bytes] = field(default_factory=list)
    records: dict[int, bytes] = field(default_factory=dict)
    consents: list[bytes] = field(default_factory=list)
    heads: list[bytes] = field(default_factory=list)
    source: dict[int, bytes] = field(default_factory=dict)  # the full stream (data/), for site-owner tests

    @classmethod
    def honest(
        cls,
        spec: AudienceSpec = SEALED,
        n: int = 24,
        per_batch: int = 8,
        ledger: tuple[tuple[str, str, bool], ...] = LEDGER,
        consent: frozenset[str] | None = None,
    ) -> ViewStream:
        random.seed(7)
        s = cls(spec)
        events = consent_chain(*ledger)
        state = {(sub, p): g for sub, p, g in ledger}
        s.consents = [e for e, (_, p, _) in zip(events, ledger, strict=True) if p == spec.purpose]

        def allows(sub: str, p: str) -> bool:  # the gateway's answer (a forger's, when ``consent`` is given)
            return sub in consent if consent is not None else state.get((sub, p), False)

        prev, first, number = GENESIS_PREV, 1, 1
        while first <= n:
            source = [source_record(q) for q in range(first, min(n, first + per_batch - 1) + 1)]
            m = build_manifest(GW, number, first, [bytes(r) for r in source], prev, 1)
            s.batches.append(bytes(sign_manifest(m, SIGNER)))
            s.source.update({r.seq: bytes(r) for r in source})
            s.receipts.append(bytes(receipt(GW, number, m.count, m.root, 100 + number)))
            records, vm = build_view(
                source,
                number,
                m.root,
                spec,
                "shenzhen",
                allows,
                len(events),
                lambda q: derive_view_salt(SECRET, spec.aud, GW, q),
                consent_count=len(s.consents),  # the events of the audience's purpose, all <= consent_n here
                since=1,
            )
            s.views.append(bytes(sign_view(vm, SIGNER)))
            s.records.update({Record.from_bytes(b).seq: b for b in records})
            prev, first, number = m.digest, m.last_seq + 1, number + 1
        last = SignedManifest.from_bytes(s.batches[-1])
        lm = last.manifest
        s.heads = [bytes(sign_head(Head(GW, lm.batch, lm.last_seq, last.manifest.digest, 1_700_000_100_000), SIGNER))]
        return s

    def messages(self) -> list[tuple[str, bytes]]:
        out = [(T.aud_data(AUD, Record.from_bytes(d).dev), encode_data_message([d])) for d in self.records.values()]
        out += [(T.aud_view(AUD), v) for v in self.views] + [(T.aud_consent(AUD), c) for c in self.consents]
        out += [(T.batch, b) for b in self.batches] + [(T.anchor, r) for r in self.receipts]
        return out + [(T.head, h) for h in self.heads]

    def chain(self) -> FakeChain:
        c = FakeChain()
        for r in self.receipts:
            c.put(AnchorReceipt.from_bytes(r))
        return c

    def report(
        self,
        keys: dict[str, bytes] | None = None,
        purpose: str = "research",
        chain: FakeChain | None = None,
        trust: TrustPolicy | None = None,
        extra: list[tuple[str, bytes]] | None = None,
        **options: object,
    ) -> AudienceReport:
        v = AudienceVerifier(trust or TrustPolicy(pinned={GW: [SIGNER]}), AUD, purpose, keys, **options)  # type: ignore[arg-type]
        for topic, payload in [*self.messages(), *(extra or [])]:
            v.feed(topic, payload)
        return v.report(chain if chain is not None else self.chain())

    def reasons(self, keys: dict[str, bytes] | None = None, **kw: object) -> set[Reason]:
        """The reasons found by a platform holding the key when the stream is sealed (else none)."""
        held = keys if keys is not None else ({"k1": KEY} if self.spec.key is not None else None)
        return {p.reason for p in self.report(held, **kw).problems}  # type: ignore[arg-type]

    def view(self, n: int) -> ViewManifest:
        return SignedView.from_bytes(self.views[n - 1]).manifest

    def resign(self, n: int, signer: object = SIGNER, **change: object) -> None:
        """The gateway (its key) signs a changed view ``n``: the root is recomputed over the records it holds."""
        m = replace(self.view(n), **change)  # type: ignore[arg-type]
        if "root" not in change:
            ours = [self.records[q] for q in sorted(self.records) if m.first <= q <= m.last]
            m = replace(m, root=MerkleTree(ours).root, count=len(ours))
        self.views[n - 1] = bytes(sign_view(m, signer))  # type: ignore[arg-type]

    def sent(self, n: int) -> list[int]:
        m = self.view(n)
        return [q for q in sorted(self.records) if m.first <= q <= m.last]


# ----------------------------------------------------------------------------- honest streams


def test_an_honest_sealed_stream_verifies_with_the_key() -> None:
    s = ViewStream.honest()
    report = s.report({"k1": KEY})
    assert report.ok and report.outcome is Outcome.VERIFIED, report.summary()
    g = report.gateways[GW]
    assert (g.views, g.views_verified, g.anchors_verified, g.sealed_unchecked) == (3, 3, 3, 0)
    assert g.opened == g.records == len(s.records) > 0
    assert g.withheld == {"no_consent": 6, "unbound": 6} and g.consent_events == 2


def test_without_the_key_sealed_content_is_not_checked_never_verified() -> None:
    report = ViewStream.honest().report(None)
    g = report.gateways[GW]
    assert report.ok and report.outcome is Outcome.UNCHECKED and g.opened == 0
    assert g.sealed_unchecked == g.records and any("not checked" in u for u in g.unchecked())


def test_an_honest_aggregating_stream_verifies() -> None:
    s = ViewStream.honest(AGGREGATING)
    report = s.report()
    assert report.ok and report.outcome is Outcome.VERIFIED, report.summary()
    g = report.gateways[GW]
    assert g.aggregates > 0 and g.withheld.get("aggregated", 0) > 0 and g.sealed_unchecked == 0


def test_order_of_arrival_and_other_audiences_do_not_matter() -> None:
    s = ViewStream.honest()
    msgs = s.messages()
    random.Random(3).shuffle(msgs)
    v = AudienceVerifier(TrustPolicy(pinned={GW: [SIGNER]}), AUD, "research", {"k1": KEY})
    for topic, payload in msgs:
        v.feed(topic, payload)
    v.feed(T.aud_view("someone-else"), b"\x00garbage")
    v.feed(T.data("dev-0"), b"not for us")
    assert v.report(s.chain()).outcome is Outcome.VERIFIED


def test_without_a_chain_anchors_are_not_checked() -> None:
    s = ViewStream.honest()
    v = AudienceVerifier(TrustPolicy(pinned={GW: [SIGNER]}), AUD, "research", {"k1": KEY})
    for topic, payload in s.messages():
        v.feed(topic, payload)
    report = v.report(None)
    assert report.ok and report.outcome is Outcome.UNCHECKED
    assert "the source batches' anchors were not checked on a chain" in report.gateways[GW].unchecked()


# ----------------------------------------------------------------------------- forgeries


def test_a_view_signed_by_another_key_is_refused() -> None:
    s = ViewStream.honest()
    s.resign(2, OTHER)
    assert Reason.UNTRUSTED_KEY in s.reasons()
    s = ViewStream.honest()
    sv = SignedView.from_bytes(s.views[1])
    s.views[1] = bytes(SignedView(sv.body, bytes(sign_view(sv.manifest, OTHER).sig), SIGNER.key_id))
    assert Reason.BAD_SIGNATURE in s.reasons()


def test_a_view_record_not_in_the_root_is_refused() -> None:
    s = ViewStream.honest(AudienceSpec(AUD, "research"))  # unsealed, to alter a value in clear
    q = s.sent(1)[0]
    r = Record.from_bytes(s.records[q])
    s.records[q] = bytes(replace(r, val={k: v + 1 for k, v in r.val.items()}))
    assert s.reasons() == {Reason.ROOT_MISMATCH}


def test_an_extra_record_for_a_withheld_seq_is_refused() -> None:
    s = ViewStream.honest()
    m = s.view(1)
    _, a, _ = m.withheld[0]
    s.records[a] = bytes(replace(Record.from_bytes(s.records[s.sent(1)[0]]), seq=a))
    assert {Reason.ROOT_MISMATCH, Reason.VIEW_OVERLAP} <= s.reasons()


def test_a_missing_view_record_is_named() -> None:
    s = ViewStream.honest()
    del s.records[s.sent(2)[0]]
    assert s.reasons() == {Reason.MISSING_RECORD}


def test_a_seq_neither_sent_nor_withheld_is_refused() -> None:
    s = ViewStream.honest()
    m = s.view(2)
    s.resign(2, withheld=m.withheld[1:])  # the gateway signs a view that forgets a withheld range
    assert s.reasons() == {Reason.VIEW_INCOMPLETE}


def test_a_seq_both_sent_and_withheld_is_refused() -> None:
    s = ViewStream.honest()
    m = s.view(1)
    q = s.sent(1)[0]
    withheld = tuple(sorted([*m.withheld, ("no_consent", q, q)], key=lambda w: w[1]))
    s.resign(1, withheld=withheld)
    assert s.reasons() == {Reason.VIEW_OVERLAP}


def test_views_whose_ranges_overlap_are_refused() -> None:
    s = ViewStream.honest()
    m1, m2 = s.view(1), s.view(2)
    s.resign(2, first=m1.last, withheld=m2.withheld)
    assert {Reason.VIEW_OVERLAP, Reason.VIEW_SOURCE_MISMATCH} <= s.reasons()


def test_a_view_whose_source_root_is_not_anchored_is_refused() -> None:
    s = ViewStream.honest()
    chain = s.chain()
    chain.refuse[AnchorReceipt.from_bytes(s.receipts[1]).tx] = "transaction not found on the chain"
    assert s.reasons(chain=chain) == {Reason.ANCHOR_NOT_ON_CHAIN}
    s.receipts.pop(1)
    assert s.reasons() == {Reason.MISSING_ANCHOR}


def test_a_view_naming_another_source_root_is_refused() -> None:
    s = ViewStream.honest()
    s.resign(3, src_root=bytes(32))
    assert s.reasons() == {Reason.VIEW_SOURCE_MISMATCH}
    s = ViewStream.honest()
    s.batches.pop(2)
    assert Reason.VIEW_SOURCE_MISMATCH in s.reasons()


def test_a_tampered_ciphertext_byte_is_refused() -> None:
    s = ViewStream.honest()
    q = s.sent(1)[0]
    r = Record.from_bytes(s.records[q])
    assert r.enc is not None
    ct = bytearray(r.enc["ct"])
    ct[2] ^= 0x04
    s.records[q] = bytes(replace(r, enc={**r.enc, "ct": bytes(ct)}))
    assert s.reasons() == {Reason.ROOT_MISMATCH, Reason.SEAL_BROKEN}
    s.resign(1)  # even the gateway's own signature over the altered record does not make the tag verify
    assert s.reasons() == {Reason.SEAL_BROKEN}
    assert Reason.SEAL_BROKEN not in s.reasons(keys={})  # no key given: not checked ...
    assert s.report(None).outcome is Outcome.UNCHECKED  # ... and never reported as verified


def test_a_wrong_key_id_is_refused() -> None:
    s = ViewStream.honest()
    q = s.sent(1)[0]
    r = Record.from_bytes(s.records[q])
    assert r.enc is not None
    s.records[q] = bytes(replace(r, enc={**r.enc, "kid": "k2"}))
    s.resign(1)
    assert s.reasons() == {Reason.WRONG_KEY_ID}
    assert s.reasons(keys={"k9": KEY}) >= {Reason.WRONG_KEY_ID}  # the audience holds no key of that id


def test_sealing_must_be_as_the_view_declares() -> None:
    s = ViewStream.honest()
    s.resign(1, kid="")
    assert s.reasons() == {Reason.SEAL_BROKEN, Reason.NOT_SEALED}
    s = ViewStream.honest()
    s.resign(1, kid="")
    assert Reason.SEAL_BROKEN in {p.reason for p in s.report(None).problems}
    clear = ViewStream.honest(AudienceSpec(AUD, "research"))
    clear.resign(1, kid="k1")
    assert clear.reasons() == {Reason.SEAL_BROKEN}


def test_a_subject_without_a_grant_is_refused() -> None:
    s = ViewStream.honest(consent=frozenset({ANN, BOB, CAT}))  # the gateway sends Bob's records anyway
    assert s.reasons() == {Reason.NO_CONSENT}


def test_a_grant_withdrawn_at_or_before_consent_n_is_refused() -> None:
    ledger = (*LEDGER, (ANN, "research", False))
    s = ViewStream.honest(ledger=ledger, consent=frozenset({ANN, CAT}))  # Ann's withdrawal (event 4) ignored
    assert s.reasons() == {Reason.NO_CONSENT}
    ok = ViewStream.honest(ledger=ledger, consent=frozenset({ANN, CAT}))
    for i in range(3):
        ok.resign(i + 1, consent_n=3, consent_count=2)  # built before the withdrawal: Ann's grant was in force
    assert ok.reasons() == set()


def test_a_consent_event_with_a_bad_signature_grants_nothing() -> None:
    s = ViewStream.honest()
    from edge.consent import SignedConsent

    c = SignedConsent.from_bytes(s.consents[0])  # Ann's grant
    s.consents[0] = bytes(SignedConsent(c.body, bytes(sign_consent(c.event, OTHER).sig), c.key_id))
    assert s.reasons() == {Reason.BAD_SIGNATURE, Reason.NO_CONSENT, Reason.CONSENT_INCOMPLETE}


def test_a_view_for_another_purpose_is_refused() -> None:
    """The purpose is the verifier's configuration; the message's claim is checked against it."""
    s = ViewStream.honest()
    s.resign(1, purpose="insurance")
    assert Reason.PURPOSE_MISMATCH in s.reasons()
    assert Reason.PURPOSE_MISMATCH in ViewStream.honest().reasons(purpose="insurance")


def test_a_missing_view_and_a_dropped_tail_are_named() -> None:
    s = ViewStream.honest()
    s.views.pop(1)
    assert Reason.MISSING_VIEW in s.reasons()
    s = ViewStream.honest()
    s.views.pop()
    assert {Reason.MISSING_VIEW, Reason.TRUNCATED} <= s.reasons()


def test_aggregates_must_account_for_the_aggregated_seqs() -> None:
    s = ViewStream.honest(AGGREGATING)
    q = next(q for q in s.sent(1) if Record.from_bytes(s.records[q]).kind.endswith("_agg"))
    r = Record.from_bytes(s.records[q])
    s.records[q] = bytes(replace(r, val={**r.val, "n": r.val["n"] + 1}))  # type: ignore[operator]
    s.resign(1)
    assert s.reasons() == {Reason.BAD_AGGREGATE}
    s = ViewStream.honest(AGGREGATING)
    for q in [q for q in s.sent(1) if Record.from_bytes(s.records[q]).kind.endswith("_agg")]:
        del s.records[q]
    assert any(r == "aggregated" for r, _, _ in s.view(1).withheld)
    s.resign(1)  # the gateway drops the aggregates but keeps their seqs' marks
    assert Reason.BAD_AGGREGATE in s.reasons()


def test_malformed_messages_are_findings() -> None:
    s = ViewStream.honest()
    reasons = s.reasons(extra=[(T.aud_view(AUD), b"\xa0"), (T.aud_data(AUD, "dev-0"), b"\x81\x41\x00")])
    assert Reason.MALFORMED in reasons


def test_audience_key_files() -> None:
    text = "# lab-1 keys\nk1 000102030405060708090a0b0c0d0e0f\n\nk2 " + "ff" * 16 + "  # newest\n"
    assert parse_audience_keys(text) == {"k1": KEY, "k2": b"\xff" * 16}
    for bad in ("k1", "k1 zz", "k1 0011", "bad id " + "00" * 16, f"k1 {'00' * 16}\nk1 {'11' * 16}"):
        with pytest.raises(CodecError):
            parse_audience_keys(bad)


def test_anchor_kinds_other_than_batch_do_not_vouch_for_a_source() -> None:
    s = ViewStream.honest()
    r = AnchorReceipt.from_bytes(s.receipts[0])
    s.receipts[0] = bytes(receipt(GW, r.number, r.count, r.root, r.block, kind=AnchorKind.ROLLUP))
    assert Reason.MISSING_ANCHOR in s.reasons()


def test_the_full_stream_verifier_is_not_disturbed_by_audience_topics() -> None:
    """A site owner subscribed to base/# receives the audiences' topics too: they are not part of its proof."""
    from anchoring.stream_verifier import StreamVerifier

    s = ViewStream.honest()
    v = StreamVerifier(TrustPolicy(pinned={GW: [SIGNER]}))
    for q, data in s.source.items():
        v.feed(T.data(f"dev-{q % 2}"), encode_data_message([data]))
    for topic, payload in s.messages():
        v.feed(topic, payload)
    report = v.report(s.chain())
    assert report.ok, report.summary()
    assert report.gateways[GW].records_in_verified_batches == len(s.source)


def test_consent_as_of_an_older_ledger_head_is_refused() -> None:
    """A later view built at an earlier consent head could undo a withdrawal recorded in between."""
    s = ViewStream.honest()
    s.resign(3, consent_n=s.view(2).consent_n - 1, consent_count=1)
    problems = s.report({"k1": KEY}).problems
    assert {p.reason for p in problems} == {Reason.NO_CONSENT}
    assert any(p.batch == 3 and "before view 2" in p.message for p in problems)


def test_a_forged_head_is_named_and_does_not_count() -> None:
    s = ViewStream.honest()
    from edge.head import SignedHead

    h = SignedHead.from_bytes(s.heads[0])
    s.heads = [bytes(sign_head(replace(h.head, batch=h.head.batch + 5, last_seq=99), OTHER))]
    report = s.report({"k1": KEY})
    assert {p.reason for p in report.problems} == {Reason.UNTRUSTED_KEY} and report.gateways[GW].head is None


# ----------------------------------------------------------------------------- network input


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["aud_data", "aud_view", "aud_consent", "batch", "head", "anchor"]),
    st.binary(max_size=300)
    | st.builds(
        lambda d: cbor2.dumps(d, canonical=True),
        st.dictionaries(
            st.sampled_from(["view", "sig", "key_id", "consent", "type", "gw", "aud", "n", "kid", "enc", "x"]),
            st.integers(min_value=-5, max_value=5) | st.binary(max_size=40) | st.text(max_size=10),
            max_size=6,
        ),
    ),
)
def test_the_audience_verifier_never_raises_on_network_input(channel: str, payload: bytes) -> None:
    topic = {
        "aud_data": T.aud_data(AUD, "dev-0"),
        "aud_view": T.aud_view(AUD),
        "aud_consent": T.aud_consent(AUD),
        "batch": T.batch,
        "head": T.head,
        "anchor": T.anchor,
    }[channel]
    v = AudienceVerifier(TrustPolicy(pinned={GW: [SIGNER]}), AUD, "research", {"k1": KEY})
    v.feed(topic, payload)
    v.feed(topic, encode_data_message([payload]))
    v.report(FakeChain())


def test_a_forged_view_number_far_ahead_costs_nothing() -> None:
    """Views are held before their signature is checked: a number of 10^15 must not size anything."""
    s = ViewStream.honest()
    m = s.view(3)
    far = sign_view(replace(m, n=10**15), OTHER)
    reasons = s.reasons(extra=[(T.aud_view(AUD), bytes(far))])
    assert reasons == {Reason.UNTRUSTED_KEY}  # reported; nothing else is done with an unsigned view


# ----------------------------------------------------------------------------- review findings (attacker review)


def test_forged_views_cost_one_signature_check_each(monkeypatch: pytest.MonkeyPatch) -> None:
    """Review d2/D5: 300 views signed by a stranger over the real batch's range ran coverage, Merkle and SM4 over
    it (59 s vs 0.39 s). Now a view whose signature fails is reported and nothing else is done with it: the
    expensive calls are counted, not timed."""
    import anchoring.view_verify as vv

    calls = {"merkle": 0, "open": 0, "coverage": 0}
    real_merkle, real_open, real_coverage = vv.MerkleTree, vv.open_view_record, vv.AudienceVerifier._check_coverage

    def merkle(leaves: list[bytes]) -> MerkleTree:
        calls["merkle"] += 1
        return real_merkle(leaves)

    def opener(rec: Record, keys: dict[str, bytes]) -> object:
        calls["open"] += 1
        return real_open(rec, keys)

    def coverage(self: AudienceVerifier, *a: object) -> bool:
        calls["coverage"] += 1
        return real_coverage(self, *a)  # type: ignore[arg-type]

    monkeypatch.setattr(vv, "MerkleTree", merkle)
    monkeypatch.setattr(vv, "open_view_record", opener)
    monkeypatch.setattr(vv.AudienceVerifier, "_check_coverage", coverage)
    s = ViewStream.honest()
    good = s.view(1)
    stranger = generate_signer()
    forged = [(T.aud_view(AUD), bytes(sign_view(replace(good, n=1000 + k), stranger))) for k in range(60)]
    forged += [(T.aud_view(AUD), bytes(sign_view(replace(good, n=2000 + k), OTHER))) for k in range(60)]
    report = s.report({"k1": KEY}, extra=forged)
    assert calls == {"merkle": 3, "open": len(s.records), "coverage": 3}
    assert {p.reason for p in report.problems} == {Reason.UNTRUSTED_KEY}
    g = report.gateways[GW]
    assert g.views_verified == 3 and g.withheld == {"no_consent": 6, "unbound": 6}  # forged ranges count nothing


def test_a_dropped_withdrawal_is_detected_and_fails_closed() -> None:
    """Review d2/D2: the broker drops Ann's withdrawal (event 4). The view signs consent_count = 3 events of the
    purpose up to consent_n; the audience received 2, so it says so and treats no sub of the view as consented."""
    ledger = (*LEDGER, (ANN, "research", False))
    honest = ViewStream.honest(ledger=ledger)
    assert honest.reasons() == set() and honest.view(1).consent_count == 3
    dropped = ViewStream.honest(ledger=ledger)
    dropped.consents = dropped.consents[:-1]
    report = dropped.report({"k1": KEY})
    assert {p.reason for p in report.problems} == {Reason.CONSENT_INCOMPLETE, Reason.NO_CONSENT}
    assert all(p.batch in (1, 2, 3) for p in report.problems if p.reason is Reason.CONSENT_INCOMPLETE)
    # The gateway that ignored the withdrawal, and the broker dropped it: caught as well.
    ignored = ViewStream.honest(ledger=ledger, consent=frozenset({ANN, CAT}))
    ignored.consents = ignored.consents[:-1]
    assert Reason.CONSENT_INCOMPLETE in ignored.reasons()
    # A view that understates the count is the gateway's signed claim against its own signed events.
    ok = ViewStream.honest(ledger=ledger)
    assert ok.view(1).consent_count == len(ok.consents)


def test_a_dropped_start_of_the_stream_is_a_missing_view_unless_declared() -> None:
    """Review d2/D3: the first view and its records are dropped. Every view signs since = 1, so views 2..3 are
    not the whole stream. A platform that joined later declares its start: reported as not checked."""
    s = ViewStream.honest()
    v1 = s.view(1)
    s.views = s.views[1:]
    s.records = {q: b for q, b in s.records.items() if q > v1.last}
    report = s.report({"k1": KEY})
    assert {p.reason for p in report.problems} == {Reason.MISSING_VIEW}
    assert any(p.batch == 1 for p in report.problems)
    late = s.report({"k1": KEY}, start=2)
    assert late.ok and late.outcome is Outcome.UNCHECKED, late.summary()
    assert late.gateways[GW].joined_at == (1, 2)
    assert "views 1..1 of the stream were not checked (joined at batch 2)" in late.summary()
    assert s.report({"k1": KEY}, start=1).problems  # declaring the true start changes nothing
    with pytest.raises(ValueError, match="batch number"):
        AudienceVerifier(TrustPolicy(pinned={GW: [SIGNER]}), AUD, "research", start=0)


def test_views_disagreeing_on_the_start_are_refused() -> None:
    s = ViewStream.honest()
    s.resign(3, since=2)
    assert s.reasons() == {Reason.MISSING_VIEW}


def test_a_platform_holding_keys_expects_sealed_views() -> None:
    """Review d2/D4: with keys, a view in clear (kid "") is a finding; --audience-clear accepts it."""
    clear = ViewStream.honest(AudienceSpec(AUD, "research", {"*": ViewRule(drop_raw=True)}))
    report = clear.report({"k1": KEY})
    assert {p.reason for p in report.problems} == {Reason.NOT_SEALED} and report.gateways[GW].views_verified == 0
    assert clear.report({"k1": KEY}, clear=True).outcome is Outcome.VERIFIED
    assert clear.report(None).outcome is Outcome.VERIFIED  # no keys: nothing to expect


def test_only_the_gateways_asked_for_are_verified_and_every_gateway_seen_is_named() -> None:
    """Review finding 10: a foreign account publishing under its own gateway id on aud/AUD/. With --gateway the
    foreign messages are listed as seen and ignored; without it they are judged per gateway by the trust
    policy (the pinned keys), in their own report, and never by the message."""
    s = ViewStream.honest()
    foreign_topics = Topics("shenzhen", "gw-evil")
    fake = replace(s.view(1), gw="gw-evil")
    extra = [(foreign_topics.aud_view(AUD), bytes(sign_view(fake, OTHER)))]
    only = s.report({"k1": KEY}, extra=extra, gateways=frozenset({GW}))
    assert only.outcome is Outcome.VERIFIED and only.seen == ["gw-evil", GW] and only.ignored == ["gw-evil"]
    assert set(only.gateways) == {GW} and "gw-evil" in only.summary()
    both = s.report({"k1": KEY}, extra=extra)
    assert both.gateways[GW].ok and not both.gateways["gw-evil"].ok and both.ignored == []
    assert {p.reason for p in both.gateways["gw-evil"].problems} == {Reason.UNTRUSTED_KEY}
    # A key pinned without a gateway id binds to the single gateway asked for, whoever else publishes.
    bare = TrustPolicy(unbound=[SIGNER])
    assert s.report({"k1": KEY}, extra=extra, trust=bare, gateways=frozenset({GW})).outcome is Outcome.VERIFIED
    assert not s.report({"k1": KEY}, extra=extra, trust=bare).gateways[GW].ok  # ambiguous: fail closed
