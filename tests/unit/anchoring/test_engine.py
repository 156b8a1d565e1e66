"""The incremental engine: records are held only until their batch is proven, then released exactly once; gaps are
seq ranges; a late joiner starts from a signed head or an anchored manifest; memory stays flat over a long run."""

from __future__ import annotations

import random
import tracemalloc
from dataclasses import replace

from anchoring.engine import (
    BatchAnchored,
    Event,
    Finding,
    RecordsProven,
    RecordsRejected,
    SeqSet,
    VerificationEngine,
)
from anchoring.findings import Outcome, Reason
from anchoring.receipt import AnchorReceipt
from edge.head import Head, sign_head
from edge.manifest import GENESIS_PREV, SignedManifest, build_manifest, sign_manifest
from edge.record import Record, encode_data_message
from edge.sm3 import sm3
from tests.unit.anchoring.fakes import receipt
from tests.unit.anchoring.test_stream_verifier import GW, OTHER, SIGNER, Stream, T, pinned, record


def live(**kw: object) -> tuple[VerificationEngine, list[Event]]:
    events: list[Event] = []
    return VerificationEngine(pinned(), on_event=events.append, **kw), events  # type: ignore[arg-type]


def messages(s: Stream) -> list[tuple[str, bytes]]:
    msgs = [(T.data(Record.from_bytes(d).dev), encode_data_message([d])) for d in s.records.values()]
    return msgs + [(T.batch, b) for b in s.batches] + [(T.anchor, r) for r in s.receipts]


def proven_seqs(events: list[Event]) -> list[int]:
    return [seq for e in events if isinstance(e, RecordsProven) for seq, _ in e.records]


# ---------------------------------------------------------------- SeqSet
def test_seqset_keeps_intervals_and_names_missing_runs() -> None:
    s = SeqSet()
    for n in (1, 2, 3, 7, 5, 6, 10):
        assert s.add(n)
    assert not s.add(2)
    assert (s.count, s.intervals, s.first, s.last) == (7, 3, 1, 10)
    assert s.missing(1, 12) == [(4, 4), (8, 9), (11, 12)]
    assert s.covers(5, 7) and not s.covers(3, 5)
    assert s.count_above(5) == 3


def test_a_forged_huge_seq_costs_one_interval() -> None:
    s = SeqSet()
    s.add(1)
    s.add(10**12)
    assert s.missing(1, 10**12) == [(2, 10**12 - 1)] and s.intervals == 2


# ---------------------------------------------------------------- live release
def test_records_are_released_once_when_their_batch_is_proven_whatever_the_order() -> None:
    s = Stream.honest(n=25)
    engine, events = live()
    msgs = messages(s) * 2  # everything twice, as after a reconnect
    random.Random(7).shuffle(msgs)
    for topic, payload in msgs:
        engine.feed(topic, payload)
    assert sorted(proven_seqs(events)) == list(range(1, 26))
    assert engine.held_records() == 0
    assert all(e.key_source.name == "PINNED" for e in events if isinstance(e, RecordsProven))
    assert engine.report().outcome is Outcome.UNCHECKED  # no chain, no head: verified but not everything checked


def test_a_record_is_held_until_the_manifest_arrives() -> None:
    s = Stream.honest(n=10)
    engine, events = live()
    for topic, payload in messages(s)[:10]:  # the records only
        engine.feed(topic, payload)
    assert engine.held_records() == 10 and not events
    engine.feed(T.batch, s.batches[0])
    assert proven_seqs(events) == list(range(1, 11)) and engine.held_records() == 0


def test_an_altered_record_rejects_its_batch_with_the_reason() -> None:
    s = Stream.honest(n=20)
    r = Record.from_bytes(s.records[13])
    s.records[13] = bytes(replace(r, val={"heart_rate": 180}))
    engine, events = live()
    for topic, payload in messages(s):
        engine.feed(topic, payload)
    rejected = [e for e in events if isinstance(e, RecordsRejected)]
    assert [(e.batch, e.reason) for e in rejected] == [(2, Reason.ROOT_MISMATCH)]
    assert proven_seqs(events) == list(range(1, 11))
    assert Reason.ROOT_MISMATCH in {p.reason for p in engine.report().problems}


def test_a_batch_signed_by_an_unpinned_key_or_badly_is_rejected() -> None:
    s = Stream.honest(n=20)
    s.batches[1] = Stream.honest(n=20, signer=OTHER).batches[1]
    engine, events = live()
    for topic, payload in messages(s):
        engine.feed(topic, payload)
    assert [(e.batch, e.reason) for e in events if isinstance(e, RecordsRejected)] == [(2, Reason.UNTRUSTED_KEY)]


def test_conflicting_resend_after_release_is_still_caught() -> None:
    s = Stream.honest(n=10)
    engine, events = live()
    for topic, payload in messages(s):
        engine.feed(topic, payload)
    forged = replace(Record.from_bytes(s.records[4]), val={"heart_rate": 201})
    engine.feed(T.data(forged.dev), encode_data_message([bytes(forged)]))
    assert any(isinstance(e, Finding) and e.problem.reason is Reason.CONFLICTING_DUPLICATE for e in events)


def test_a_resend_older_than_the_kept_leaves_is_reported_not_checked() -> None:
    s = Stream.honest(n=30)
    engine, _ = live(keep_leaves=1)
    for topic, payload in messages(s):
        engine.feed(topic, payload)
    forged = replace(Record.from_bytes(s.records[4]), val={"heart_rate": 201})
    engine.feed(T.data(forged.dev), encode_data_message([bytes(forged)]))
    report = engine.report()
    assert report.ok and report.outcome is Outcome.UNCHECKED
    assert report.gateways[GW].late_duplicates_unchecked == 1


def test_gaps_are_reported_as_seq_ranges() -> None:
    s = Stream.honest(n=30)
    for q in (12, 13, 14, 27):
        del s.records[q]
    engine, events = live()
    for topic, payload in messages(s):
        engine.feed(topic, payload)
    missing = sorted((p.seq, p.message) for p in engine.report().problems if p.reason is Reason.MISSING_RECORD)
    assert [m[0] for m in missing] == [12, 27]
    assert "seq 12..14 (3 records)" in missing[0][1]
    assert proven_seqs(events) == list(range(1, 11))  # batches 2 and 3 stay held, unproven
    assert engine.held_records() == 16


def test_live_anchor_confirmation_with_a_chain() -> None:
    s = Stream.honest(n=20)
    events: list[Event] = []
    engine = VerificationEngine(pinned(), chain=s.chain(), on_event=events.append)
    for topic, payload in messages(s):
        engine.feed(topic, payload)
    assert [e.batch for e in events if isinstance(e, BatchAnchored)] == [1, 2]


def test_a_receipt_the_chain_does_not_confirm_never_marks_a_batch_anchored() -> None:
    s = Stream.honest(n=20)
    chain = s.chain()
    chain.refuse[AnchorReceipt.from_bytes(s.receipts[1]).tx] = "transaction not found"
    events: list[Event] = []
    engine = VerificationEngine(pinned(), chain=chain, on_event=events.append)
    for topic, payload in messages(s):
        engine.feed(topic, payload)
    assert [e.batch for e in events if isinstance(e, BatchAnchored)] == [1]


# ---------------------------------------------------------------- late join
def joined_stream() -> tuple[Stream, bytes]:
    """Five batches of 10; the head a late joiner finds retained names batch 2."""
    s = Stream.honest(n=50)
    sm = SignedManifest.from_bytes(s.batches[1])
    head = bytes(sign_head(Head(GW, 2, 20, sm3(sm.body), 1_700_000_050_000), SIGNER))
    return s, head


def feed_from(engine: VerificationEngine, s: Stream, head: bytes | None, first_batch: int = 3) -> None:
    if head is not None:
        engine.feed(T.head, head, True)
    first_seq = (first_batch - 1) * 10 + 1
    for q in range(first_seq - 4, 51):  # a few records of the batch before arrive too
        d = s.records[q]
        engine.feed(T.data(Record.from_bytes(d).dev), encode_data_message([d]))
    for b in s.batches[first_batch - 1 :]:
        engine.feed(T.batch, b)
    for r in s.receipts[first_batch - 1 :]:
        engine.feed(T.anchor, r)


def test_late_join_from_a_signed_head_verifies_forward() -> None:
    s, head = joined_stream()
    engine = VerificationEngine(pinned(), late_join=True)
    feed_from(engine, s, head)
    report = engine.report()
    g = report.gateways[GW]
    assert report.ok, report.summary()
    assert g.joined_at == ("signed head", 3) and g.batches_verified == 3 and g.before_join == 4
    assert "before the join point" in " ".join(g.unchecked())


def test_without_late_join_the_same_stream_misses_batches() -> None:
    s, head = joined_stream()
    engine = VerificationEngine(pinned())
    feed_from(engine, s, head)
    assert Reason.MISSING_BATCH in {p.reason for p in engine.report().problems}


def test_a_head_signed_by_another_key_is_no_join_point() -> None:
    s, _ = joined_stream()
    sm = SignedManifest.from_bytes(s.batches[1])
    forged = bytes(sign_head(Head(GW, 2, 20, sm3(sm.body), 1_700_000_050_000), OTHER))
    engine = VerificationEngine(pinned(), late_join=True)
    feed_from(engine, s, forged)
    reasons = {p.reason for p in engine.report().problems}
    assert {Reason.MISSING_BATCH, Reason.UNTRUSTED_KEY} <= reasons


def test_a_join_head_whose_digest_is_not_the_next_batch_prev_breaks_the_chain() -> None:
    s, _ = joined_stream()
    forged = bytes(sign_head(Head(GW, 2, 20, b"\x42" * 32, 1_700_000_050_000), SIGNER))
    engine = VerificationEngine(pinned(), late_join=True)
    feed_from(engine, s, forged)
    assert Reason.BROKEN_CHAIN in {p.reason for p in engine.report().problems}


def test_late_join_from_an_anchored_manifest() -> None:
    s, _ = joined_stream()
    engine = VerificationEngine(pinned(), late_join=True)
    feed_from(engine, s, None)
    report = engine.report(chain=s.chain())
    g = report.gateways[GW]
    assert report.ok, report.summary()
    assert g.joined_at == ("anchored manifest", 3) and g.batches_verified == 3
    # Without the chain to confirm the first manifest's anchor there is no join point.
    assert Reason.MISSING_BATCH in {p.reason for p in engine.report().problems}


def test_no_join_point_from_a_manifest_the_chain_does_not_confirm() -> None:
    s, _ = joined_stream()
    chain = s.chain()
    chain.refuse[AnchorReceipt.from_bytes(s.receipts[2]).tx] = "transaction not found"
    engine = VerificationEngine(pinned(), late_join=True)
    feed_from(engine, s, None)
    assert Reason.MISSING_BATCH in {p.reason for p in engine.report(chain=chain).problems}


# ---------------------------------------------------------------- bounded memory
def long_run_record(seq: int) -> bytes:
    return bytes(
        replace(
            Record.from_bytes(record(1)),
            seq=seq,
            dev=f"dev-{seq % 3}",
            t=1_700_000_000_000 + seq,
            val={"heart_rate": 60 + seq % 100},
            raw=bytes([0, 60 + seq % 100]),
        )
    )


def stream_batches(n_batches: int, per_batch: int) -> list[list[tuple[str, bytes]]]:
    """Messages for an honest gateway, batch by batch (records, manifest, receipt), generated lazily by callers."""
    out: list[list[tuple[str, bytes]]] = []
    prev, seq = GENESIS_PREV, 1
    for number in range(1, n_batches + 1):
        recs = [long_run_record(q) for q in range(seq, seq + per_batch)]
        m = build_manifest(GW, number, seq, recs, prev, 1)
        msgs = [(T.data(Record.from_bytes(d).dev), encode_data_message([d])) for d in recs]
        msgs += [
            (T.batch, bytes(sign_manifest(m, SIGNER))),
            (T.anchor, bytes(receipt(GW, number, m.count, m.root, 100 + number))),
        ]
        out.append(msgs)
        prev, seq = m.digest, seq + per_batch
    return out


def test_memory_stays_flat_over_a_long_run() -> None:
    batches = stream_batches(300, 50)  # 15,000 records, generated before measuring
    released = 0

    def sink(e: Event) -> None:
        nonlocal released
        if isinstance(e, RecordsProven):
            released += len(e.records)

    engine = VerificationEngine(pinned(), on_event=sink, keep_leaves=4)
    tracemalloc.start()
    samples: list[int] = []
    try:
        for i, msgs in enumerate(batches, 1):
            for topic, payload in msgs:
                engine.feed(topic, payload)
            if i % 10 == 0:
                engine.checkpoint(keep=2)
                samples.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    assert released == 15_000 and engine.held_records() == 0
    assert engine.retained_batches() <= 2
    # After warm-up, from 3,000 to 15,000 records memory grows only by each folded batch's 32-byte root (kept for
    # checking roll-ups) and its dict slot: under 200 bytes a batch, nothing per record.
    assert (samples[-1] - samples[5]) / 240 < 200, samples
    report = engine.report()
    g = report.gateways[GW]
    assert report.ok, report.summary()
    assert (g.batches_verified, g.records_in_verified_batches) == (300, 15_000)


# ---------------------------------------------------------------- registry trust, live
def test_with_registry_trust_a_squatter_s_earlier_anchor_of_the_root_is_not_the_one_that_counts() -> None:
    """Anyone can anchor a gateway's root (anchors are keyed by account). A squatter's anchor, earlier on the chain
    and whose receipt comes first, must neither reject the batch (its account is not registered) nor be reported as
    the batch's anchor: the registered account's anchor is."""
    from anchoring.chain import GatewayEntry, KeyRecord
    from anchoring.readers import point_verifier
    from anchoring.trust import TrustPolicy
    from edge.sm2 import load_public_key_pem
    from tests.unit.anchoring.fakes import ANCHORER, FakeChain

    squatter = b"\x55" * 20
    xy = load_public_key_pem(SIGNER.public_key_pem()).public_key.point[1:]
    entry = GatewayEntry(GW, b"o" * 20, False, 0, (KeyRecord(xy, ANCHORER, 1),))
    trust = TrustPolicy(registry=lambda gw: entry if gw == GW else None, point_verifier=point_verifier)
    s = Stream.honest(n=10)
    m = SignedManifest.from_bytes(s.batches[0]).manifest
    squatted = receipt(GW, 1, m.count, m.root, block=5, anchorer=squatter)
    genuine = receipt(GW, 1, m.count, m.root, block=9)
    squatted = replace(squatted, tx=b"\x99" * 32)
    chain = FakeChain()
    chain.put(squatted)
    chain.put(genuine)
    events: list[Event] = []
    engine = VerificationEngine(trust, chain=chain, on_event=events.append)
    engine.feed(T.anchor, bytes(squatted))
    engine.feed(T.anchor, bytes(genuine))
    for topic, payload in messages(s)[: len(s.records)]:
        engine.feed(topic, payload)
    engine.feed(T.batch, s.batches[0])
    assert not [e for e in events if isinstance(e, RecordsRejected)]
    assert proven_seqs(events) == list(range(1, 11))
    anchored = [e for e in events if isinstance(e, BatchAnchored)]
    assert [(e.anchor.anchorer, e.anchor.block_number) for e in anchored] == [(ANCHORER, 9)]
