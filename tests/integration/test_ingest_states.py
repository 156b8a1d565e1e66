"""``tiyi ingest`` beyond proving: gaps, truncation and late join are stated (never a silent wait), and with a chain
records move received → proven → anchored → final, with registry trust judged at the anchor's block. One ingest
instance on a real PostgreSQL, fed directly (the MQTT side is covered by test_ingest.py); the chain is ganache."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from anchoring.chain import AnchorKind
from anchoring.evm import EvmChainClient
from anchoring.receipt import AnchorReceipt
from anchoring.trust import TrustPolicy
from bench.services import Ganache
from edge.head import Head, sign_head
from edge.manifest import SignedManifest, build_manifest, sign_manifest
from edge.record import Record, encode_data_message
from edge.sm3 import sm3
from edge.topics import Topics
from ingest.service import ChainView, Ingest, IngestSettings, _Incoming
from tests.integration.chainkit import Alliance, anchor, point
from tests.unit.anchoring.fakes import receipt
from tests.unit.anchoring.test_stream_verifier import GW, OTHER, SIGNER, Stream

pytestmark = pytest.mark.slow
T = Topics("shenzhen", GW)
TIMEOUT = 0.6  # the gap timeout the tests run with


def ingest(dsn: str, trust: TrustPolicy | None = None, chain: ChainView | None = None, **kw: object) -> Ingest:
    settings = IngestSettings("mqtt://127.0.0.1:1", dsn, gap_timeout_s=TIMEOUT, chain_tail_s=0.01, **kw)  # type: ignore[arg-type]
    return Ingest(settings, trust or TrustPolicy(pinned={GW: [SIGNER]}), chain)


def feed(ing: Ingest, msgs: list[tuple[str, bytes]]) -> None:
    with ing.conn.transaction():
        ing._write([_Incoming(t, p, 0) for t, p in msgs])
    ing.prove()


def records_of(s: Stream, batch: int) -> list[tuple[str, bytes]]:
    m = SignedManifest.from_bytes(s.batches[batch - 1]).manifest
    return [
        (T.data(Record.from_bytes(s.records[n]).dev), encode_data_message([s.records[n]]))
        for n in range(m.first_seq, m.last_seq + 1)
    ]


def batch_msgs(s: Stream, batch: int, with_receipt: bool = False) -> list[tuple[str, bytes]]:
    out = [*records_of(s, batch), (T.batch, s.batches[batch - 1])]
    return [*out, (T.anchor, s.receipts[batch - 1])] if with_receipt else out


def head_for(s: Stream, batch: int, signer: object = SIGNER) -> bytes:
    sm = SignedManifest.from_bytes(s.batches[batch - 1])
    m = sm.manifest
    return bytes(sign_head(Head(GW, m.batch, m.last_seq, sm3(sm.body), 1_700_000_100_000), signer))  # type: ignore[arg-type]


def q(ing: Ingest, sql: str) -> list[tuple[object, ...]]:
    with ing.conn.transaction():
        return ing.conn.execute(sql).fetchall()  # type: ignore[arg-type]


def states(ing: Ingest) -> list[tuple[object, ...]]:
    return q(ing, "SELECT batch, state FROM batches ORDER BY batch")


def problems(ing: Ingest) -> list[tuple[object, ...]]:
    return q(ing, "SELECT reason, batch, seq FROM problems ORDER BY id")


def settle(ing: Ingest) -> None:
    """Let the gap timeout pass, then run the periodic checks (twice: a problem is stated once)."""
    time.sleep(TIMEOUT + 0.1)
    for _ in range(2):
        ing.check_gaps()
        ing.prove()
        ing.check_chain()


def test_a_batch_whose_predecessor_never_arrives_is_stated_as_a_gap_then_proven_without_the_link(database: str) -> None:
    s = Stream.honest(n=30)
    ing = ingest(database)
    feed(ing, batch_msgs(s, 1) + batch_msgs(s, 3))
    ing.check_gaps()
    assert states(ing) == [(1, "proven"), (3, "received")] and problems(ing) == []  # still in flight
    settle(ing)
    assert states(ing) == [(1, "proven"), (3, "proven")]
    assert problems(ing) == [("missing_batch", 2, None)]
    assert q(ing, "SELECT prev_checked FROM batches WHERE batch = 3") == [(False,)]
    # The missing batch turns up after all: the link is checked now.
    feed(ing, batch_msgs(s, 2))
    assert states(ing) == [(1, "proven"), (2, "proven"), (3, "proven")]
    assert q(ing, "SELECT prev_checked FROM batches ORDER BY batch") == [(True,), (True,), (True,)]


def test_a_late_predecessor_that_does_not_chain_rejects_the_batch_proven_across_the_gap(database: str) -> None:
    s = Stream.honest(n=30)
    forged = Stream.honest(n=30)  # the same key and numbering, other readings: batch 2's digest differs
    ing = ingest(database)
    feed(ing, batch_msgs(s, 1) + batch_msgs(s, 3))
    settle(ing)
    for n in range(11, 21):
        forged.records[n] = bytes(replace(Record.from_bytes(s.records[n]), val={"heart_rate": 150}))
    m2 = build_manifest(
        GW,
        2,
        11,
        [forged.records[n] for n in range(11, 21)],
        SignedManifest.from_bytes(s.batches[0]).manifest.digest,
        1,
    )
    forged.batches[1] = bytes(sign_manifest(m2, SIGNER))
    feed(ing, batch_msgs(forged, 2))
    assert states(ing) == [(1, "proven"), (2, "proven"), (3, "rejected")]
    assert q(ing, "SELECT DISTINCT state, reason FROM records WHERE batch = 3") == [("rejected", "broken_chain")]
    assert ("broken_chain", 3, None) in problems(ing)


def test_records_a_batch_names_that_never_arrive_are_stated_once_as_ranges(database: str) -> None:
    s = Stream.honest(n=10)
    ing = ingest(database)
    msgs = batch_msgs(s, 1)
    feed(ing, msgs[:3] + msgs[6:])  # seq 4..6 lost
    ing.check_gaps()
    assert problems(ing) == []
    settle(ing)
    assert states(ing) == [(1, "received")]  # cannot be proven without them
    assert problems(ing) == [("missing_record", 1, 4)]
    assert "seq 4..6" in str(q(ing, "SELECT message FROM problems")[0][0])


def test_a_dropped_tail_after_a_signed_head_is_truncation_and_a_forged_head_proves_nothing(database: str) -> None:
    s = Stream.honest(n=30)
    ing = ingest(database)
    feed(ing, batch_msgs(s, 1) + batch_msgs(s, 2) + [(T.head, head_for(s, 3))])
    ing.check_gaps()
    assert problems(ing) == []  # batch 3 may still be in flight
    settle(ing)
    assert problems(ing) == [("truncated", 3, None)]
    other = ingest(database)
    feed(other, [(T.head, head_for(s, 3, OTHER))])  # the same claim, signed by a key nobody pinned
    settle(other)
    assert problems(other) == [("truncated", 3, None), ("untrusted_key", None, None)]


def test_a_head_that_names_a_different_manifest_is_a_mismatch(database: str) -> None:
    s = Stream.honest(n=20)
    ing = ingest(database)
    forged = Stream.honest(n=20, per_batch=5)  # its batch 2 is another manifest
    feed(ing, batch_msgs(s, 1) + batch_msgs(s, 2) + [(T.head, head_for(forged, 2))])
    settle(ing)
    assert problems(ing) == [("head_mismatch", 2, None)]


def test_late_join_starts_at_a_trusted_signed_head_and_checks_the_link_from_it(database: str) -> None:
    s = Stream.honest(n=40)
    ing = ingest(database, late_join=True)
    feed(ing, [(T.head, head_for(s, 2)), *batch_msgs(s, 3), *batch_msgs(s, 4)])
    ing.check_gaps()
    ing.prove()
    assert states(ing) == [(3, "proven"), (4, "proven")] and problems(ing) == []  # no wait, no gap
    assert q(ing, "SELECT joined_batch, joined_by FROM gateways") == [(3, "signed head")]
    assert q(ing, "SELECT prev_checked FROM batches ORDER BY batch") == [(True,), (True,)]


def test_late_join_refuses_a_forged_head_and_without_it_the_start_is_a_stated_gap(database: str) -> None:
    s = Stream.honest(n=40)
    ing = ingest(database, late_join=True)
    feed(ing, [(T.head, head_for(s, 2, OTHER)), *batch_msgs(s, 3)])
    ing.check_gaps()
    assert states(ing) == [(3, "received")]
    settle(ing)
    assert states(ing) == [(3, "proven")]
    assert {p[:2] for p in problems(ing)} == {("missing_batch", 1), ("untrusted_key", None)}
    assert q(ing, "SELECT count(*) FROM gateways WHERE joined_batch IS NOT NULL") == [(0,)]


# ---------------------------------------------------------------- with a real chain
def anchored_stream(alliance: Alliance, client: EvmChainClient, n: int = 30) -> Stream:
    s = Stream.honest(n=n)
    s.receipts = []
    for b in s.batches:
        m = SignedManifest.from_bytes(b).manifest
        s.receipts.append(bytes(anchor(client, AnchorKind.BATCH, GW, m.root, m.batch, m.count)))
    return s


def view(alliance: Alliance) -> ChainView:
    checker = alliance.checker()
    return ChainView(checker, checker.client.block_number)


def test_records_go_proven_anchored_final_and_a_forged_receipt_is_stated(ganache: Ganache, database: str) -> None:
    alliance = Alliance(ganache.url)
    gateway = alliance.account()
    s = anchored_stream(alliance, gateway, n=20)
    ing = ingest(database, chain=view(alliance), final_depth=2)
    forged = bytes(receipt(GW, 2, 10, SignedManifest.from_bytes(s.batches[1]).manifest.root, 5))
    feed(ing, batch_msgs(s, 1, with_receipt=True) + batch_msgs(s, 2) + [(T.anchor, forged)])
    assert states(ing) == [(1, "proven"), (2, "proven")]
    ing.check_chain()
    assert states(ing) == [(1, "anchored"), (2, "proven")]  # 1 is one block deep, 2's receipt is not on the chain
    assert [p[:2] for p in problems(ing)] == [("anchor_not_on_chain", 2)]
    anchor(gateway, AnchorKind.BATCH, "gw-other", b"\x01" * 32, 1, 1)  # the chain moves on
    anchor(gateway, AnchorKind.BATCH, "gw-other", b"\x02" * 32, 2, 1)
    ing.check_chain()
    assert states(ing) == [(1, "final"), (2, "proven")]
    assert q(ing, "SELECT DISTINCT state FROM records WHERE batch = 1") == [("final",)]
    feed(ing, [(T.anchor, s.receipts[1])])  # the genuine receipt arrives (its anchor already deep enough)
    ing.check_chain()
    assert states(ing) == [(1, "final"), (2, "final")]
    genuine = AnchorReceipt.from_bytes(s.receipts[1])
    assert q(ing, "SELECT anchor_tx, anchor_block FROM batches WHERE batch = 2") == [(genuine.tx, genuine.block)]


def test_registry_trust_waits_for_the_chain_and_a_dropped_tail_the_chain_knows_is_truncation(
    ganache: Ganache, database: str
) -> None:
    alliance = Alliance(ganache.url)
    operator = alliance.operator()
    gateway = alliance.account()
    operator.register_gateway(GW, point(SIGNER), gateway.account)
    s = anchored_stream(alliance, gateway, n=30)
    ing = ingest(database, alliance.registry(), view(alliance))
    feed(ing, batch_msgs(s, 1) + batch_msgs(s, 2, with_receipt=True))
    assert states(ing) == [(1, "received"), (2, "received")]  # no anchor yet: the key cannot be judged
    feed(ing, [(T.anchor, s.receipts[0])])
    ing.check_chain()
    ing.prove()
    assert states(ing) == [(1, "anchored"), (2, "anchored")]
    assert q(ing, "SELECT DISTINCT key_source FROM batches") == [("the on-chain gateway registry",)]
    ing.check_gaps()
    assert problems(ing) == []  # batch 3 is anchored on the chain, and may still be in flight
    settle(ing)  # ... but it never comes
    assert states(ing) == [(1, "final"), (2, "final")]
    assert ("truncated", 3, None) in problems(ing)


def test_registry_trust_counts_only_the_registered_account_s_anchor_not_a_squatter_s_earlier_one(
    ganache: Ganache, database: str
) -> None:
    """The contract keys anchors by (anchorer, kind, gw, root): anyone can anchor a gateway's root. A squatter who
    anchors batch 1's root first, and whose receipt arrives first, must not become the anchor the key is judged at
    (it would reject the genuine batch): only the account the registry names for the gateway counts."""
    alliance = Alliance(ganache.url)
    operator = alliance.operator()
    gateway, squatter = alliance.account(), alliance.account()
    operator.register_gateway(GW, point(SIGNER), gateway.account)
    s = Stream.honest(n=10)
    m = SignedManifest.from_bytes(s.batches[0]).manifest
    squatted = anchor(squatter, AnchorKind.BATCH, GW, m.root, m.batch, m.count)  # first on the chain
    genuine = anchor(gateway, AnchorKind.BATCH, GW, m.root, m.batch, m.count)
    assert squatted.block < genuine.block
    ing = ingest(database, alliance.registry(), view(alliance))
    feed(ing, [*batch_msgs(s, 1), (T.anchor, bytes(squatted))])
    ing.check_chain()
    ing.prove()
    assert states(ing) == [(1, "received")]  # the squatter's anchor is confirmed on the chain, but not counted
    assert q(ing, "SELECT anchor_tx FROM batches") == [(None,)]
    assert [p[:2] for p in problems(ing)] == [("untrusted_key", 1)]
    feed(ing, [(T.anchor, bytes(genuine))])
    ing.check_chain()
    ing.prove()
    assert states(ing) == [(1, "anchored")]
    assert q(ing, "SELECT anchor_tx, anchorer, key_source FROM batches") == [
        (genuine.tx, gateway.account, "the on-chain gateway registry")
    ]
    assert q(ing, "SELECT tx, checked FROM receipts ORDER BY checked") == sorted(
        [(squatted.tx, "unregistered anchorer"), (genuine.tx, "confirmed")], key=lambda r: r[1]
    )


def test_registry_trust_rejects_a_gateway_nobody_registered(ganache: Ganache, database: str) -> None:
    alliance = Alliance(ganache.url)
    gateway = alliance.account()
    s = anchored_stream(alliance, gateway, n=10)
    ing = ingest(database, alliance.registry(), view(alliance))
    feed(ing, batch_msgs(s, 1, with_receipt=True))
    ing.check_chain()
    ing.prove()
    assert states(ing) == [(1, "rejected")]
    assert q(ing, "SELECT reason FROM batches") == [("untrusted_key",)]


def test_late_join_starts_at_a_batch_whose_anchor_the_chain_confirms(ganache: Ganache, database: str) -> None:
    alliance = Alliance(ganache.url)
    s = anchored_stream(alliance, alliance.account(), n=40)
    ing = ingest(database, chain=view(alliance), late_join=True)
    feed(ing, batch_msgs(s, 3, with_receipt=True) + batch_msgs(s, 4, with_receipt=True))
    # Nothing vouches for batch 3's start yet (4 chains to 3's manifest, so it is proven: 3's prev is what is open).
    assert states(ing) == [(3, "received"), (4, "proven")]
    ing.check_chain()  # the chain confirms batch 3's anchor: it may start there
    ing.check_gaps()
    ing.prove()
    ing.check_chain()
    assert states(ing) == [(3, "final"), (4, "final")] and problems(ing) == []
    assert q(ing, "SELECT joined_batch, joined_by FROM gateways") == [(3, "anchored manifest")]
    assert q(ing, "SELECT prev_checked FROM batches ORDER BY batch") == [(False,), (True,)]


def test_numbers_beyond_the_store_s_bigint_are_problems_not_a_failed_transaction(database: str) -> None:
    """The contract allows seqs and batch numbers up to 2**64 - 1, PostgreSQL's bigint holds less: such a record or
    manifest is stated as malformed and the rest of the transaction is stored. (Before, the insert raised and the
    instance exited; the broker redelivered the same message to it after every restart.)"""
    s = Stream.honest(n=10)
    huge = bytes(replace(Record.from_bytes(s.records[1]), seq=1 << 63))
    late = bytes(replace(Record.from_bytes(s.records[2]), t=(1 << 63) + 5))
    m = build_manifest(GW, 1 << 63, 1 << 63, [huge], b"\x00" * 32, 1)
    ing = ingest(database)
    feed(ing, [(T.data("dev-1"), encode_data_message([huge, s.records[1]]))])
    feed(ing, [(T.data("dev-2"), encode_data_message([late])), (T.batch, bytes(sign_manifest(m, SIGNER)))])
    feed(ing, batch_msgs(s, 1))
    assert states(ing) == [(1, "proven")]
    assert [r for r, _b, _q in problems(ing)] == ["malformed", "malformed", "malformed"]
    assert q(ing, "SELECT count(*) FROM records") == [(10,)]


def test_the_copy_block_stores_what_psycopg_s_own_binary_copy_stores(database: str) -> None:
    """``copy_block`` writes PostgreSQL's binary COPY format itself (faster than a dumper per value): the rows it
    stores are the rows psycopg's ``write_row`` stores, byte for byte, including texts beyond ASCII and the edges of
    bigint."""
    from ingest.store import _RECORD_TYPES, copy_block

    rows = [
        ("gw-1", 1, "dev-é", 0, "heart_rate", b"", bytes(32)),
        ("g" * 64, (1 << 63) - 1, "d", (1 << 63) - 1, "körper", bytes(range(256)) * 3, bytes(range(32))),
        ("gw-1", 2, "dev-é", 1_700_000_000_000, "heart_rate", b"\x00\xff", b"\xff" * 32),
    ]
    ing = ingest(database)
    cols = "(gw text, seq bigint, dev text, t bigint, kind text, data bytea, leaf bytea)"
    with ing.conn.transaction():
        ing.conn.execute(f"CREATE TABLE ours {cols}; CREATE TABLE theirs {cols}".encode())
        with ing.conn.cursor() as cur:
            with cur.copy(b"COPY ours FROM STDIN (FORMAT BINARY)") as cp:
                cp.write(copy_block(rows))
            with cur.copy(b"COPY theirs FROM STDIN (FORMAT BINARY)") as cp:
                cp.set_types(_RECORD_TYPES)
                for r in rows:
                    cp.write_row(r)
    got = q(ing, "SELECT * FROM ours ORDER BY seq")
    assert got == q(ing, "SELECT * FROM theirs ORDER BY seq")
    assert [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in got] == sorted(
        rows, key=lambda r: r[1]
    )


def test_a_key_twice_in_one_transaction_is_a_redelivery_or_a_conflict_whichever_it_is(database: str) -> None:
    """The fast path copies a transaction's records straight into the table; a key that comes twice within it (an
    identical redelivery, or a different record claiming the same seq) must take the staged path, which keeps the
    conflict as evidence and lets the signed batch decide which copy is the record."""
    s = Stream.honest(n=10)
    forged = bytes(replace(Record.from_bytes(s.records[6]), val={"heart_rate": 199}))
    ing = ingest(database)
    data = [(T.data(Record.from_bytes(s.records[n]).dev), encode_data_message([s.records[n]])) for n in range(1, 11)]
    feed(ing, [data[4], data[4], (T.data("dev-0"), encode_data_message([forged])), *data, (T.batch, s.batches[0])])
    assert states(ing) == [(1, "proven")]
    assert q(ing, "SELECT count(*), count(DISTINCT seq) FROM records") == [(10, 10)]
    assert q(ing, "SELECT seq FROM record_conflicts") == [(6,)]
    assert q(ing, "SELECT seq FROM records WHERE conflict") == [(6,)]
    assert [bytes(d) for (d,) in q(ing, "SELECT data FROM records WHERE seq = 6")] == [s.records[6]]  # the proven one
    assert [(r, sq) for r, _b, sq in problems(ing)] == [("conflicting_duplicate", 6)]
