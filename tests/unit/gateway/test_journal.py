"""The journal keeps exact bytes, continuous seqs, batch continuity and the anchor queue."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anchoring.lifecycle import AnchorState as S
from anchoring.lifecycle import Event, Job, Step
from edge.manifest import GENESIS_PREV, build_manifest, sign_manifest
from edge.record import Record
from edge.sm2 import generate_signer
from gateway.errors import JournalError
from gateway.journal import SCHEMA_VERSION, SqliteJournal

SIGNER = generate_signer()


def rec(seq: int, gw: str = "gw-1", dev: str = "dev-1") -> Record:
    return Record(
        gw=gw,
        seq=seq,
        dev=dev,
        t=1_700_000_000_000 + seq,
        kind="heart_rate",
        val={"heart_rate": 60 + seq % 50},
        raw=bytes([0, 60 + seq % 50]),
        salt=seq.to_bytes(16, "big"),
    )


@pytest.fixture
def journal(tmp_path: Path) -> SqliteJournal:
    return SqliteJournal.open(tmp_path / "j.sqlite3", "gw-1")


def test_append_and_read_back_exact_bytes(journal: SqliteJournal) -> None:
    records = [rec(i) for i in range(1, 11)]
    journal.records.append(records)
    assert journal.records.next_seq == 11
    assert journal.records.read(1, 10) == [bytes(r) for r in records]
    assert [s for s, _, _ in journal.records.undelivered(0, 100)] == list(range(1, 11))


@pytest.mark.parametrize("bad", [[rec(2)], [rec(1), rec(3)], [rec(1, gw="gw-2")]])
def test_seq_continuity_and_gateway_enforced(journal: SqliteJournal, bad: list[Record]) -> None:
    with pytest.raises(JournalError):
        journal.records.append(bad)
    assert journal.records.next_seq == 1
    assert journal.stats().records == 0


def test_seq_survives_reopen(tmp_path: Path) -> None:
    j = SqliteJournal.open(tmp_path / "j.sqlite3", "gw-1")
    j.records.append([rec(1), rec(2)])
    j.close()
    j = SqliteJournal.open(tmp_path / "j.sqlite3", "gw-1")
    assert j.records.next_seq == 3
    with pytest.raises(JournalError):
        j.records.append([rec(2)])


def test_journal_of_another_gateway_refused(tmp_path: Path) -> None:
    SqliteJournal.open(tmp_path / "j.sqlite3", "gw-1").close()
    with pytest.raises(JournalError, match="belongs to gateway"):
        SqliteJournal.open(tmp_path / "j.sqlite3", "gw-2")


def test_delivery_marks(journal: SqliteJournal) -> None:
    journal.records.append([rec(i) for i in range(1, 6)])
    journal.records.mark_delivered([2, 4])
    assert [s for s, _, _ in journal.records.undelivered(0, 10)] == [1, 3, 5]
    assert [s for s, _, _ in journal.records.undelivered(3, 10)] == [5]


def _batch(journal: SqliteJournal, number: int, first: int, last: int, prev: bytes):  # type: ignore[no-untyped-def]
    m = build_manifest("gw-1", number, first, journal.records.read(first, last), prev, 1)
    return m, sign_manifest(m, SIGNER)


def test_batches_must_chain(journal: SqliteJournal) -> None:
    journal.records.append([rec(i) for i in range(1, 11)])
    assert journal.batches.unbatched_range() == (1, 10)
    m1, s1 = _batch(journal, 1, 1, 4, GENESIS_PREV)
    journal.batches.add_batch(m1, s1)
    assert journal.batches.unbatched_range() == (5, 10)
    bad_prev, sb = _batch(journal, 2, 5, 8, GENESIS_PREV)
    with pytest.raises(JournalError, match="prev"):
        journal.batches.add_batch(bad_prev, sb)
    gap, sg = _batch(journal, 2, 6, 8, m1.digest)
    with pytest.raises(JournalError, match="continuity"):
        journal.batches.add_batch(gap, sg)
    m2, s2 = _batch(journal, 2, 5, 10, m1.digest)
    journal.batches.add_batch(m2, s2)
    assert journal.batches.unbatched_range() is None
    last = journal.batches.last_batch()
    assert last is not None and (last.batch, last.last_seq, last.digest) == (2, 10, m2.digest)


def test_the_head_names_only_batches_whose_publication_was_recorded(tmp_path: Path) -> None:
    journal = SqliteJournal.open(tmp_path / "j.sqlite3", "gw-1")
    journal.records.append([rec(i) for i in range(1, 10)])
    assert journal.batches.last_published_batch() is None
    m1, s1 = _batch(journal, 1, 1, 3, GENESIS_PREV)
    journal.batches.add_batch(m1, s1)
    m2, s2 = _batch(journal, 2, 4, 6, m1.digest)
    journal.batches.add_batch(m2, s2)
    assert journal.batches.last_published_batch() is None  # closed and signed, but no broker has acknowledged them
    journal.batches.mark_batch_published(1)
    row = journal.batches.last_published_batch()
    assert row is not None and (row.batch, row.last_seq, row.digest) == (1, 3, m1.digest)
    m3, s3 = _batch(journal, 3, 7, 9, m2.digest)
    journal.batches.add_batch(m3, s3)
    journal.batches.mark_batch_published(2)
    journal.close()
    again = SqliteJournal.open(tmp_path / "j.sqlite3", "gw-1")  # what a restarted gateway starts from
    row = again.batches.last_published_batch()
    assert row is not None and (row.batch, row.last_seq, row.digest) == (2, 6, m2.digest)


def test_anchor_queue_lifecycle(journal: SqliteJournal) -> None:
    journal.records.append([rec(i) for i in range(1, 4)])
    m, s = _batch(journal, 1, 1, 3, GENESIS_PREV)
    journal.batches.add_batch(m, s)
    assert journal.batches.unpublished_batches() == [(1, bytes(s))]
    journal.batches.mark_batch_published(1)
    (job,) = journal.anchors.anchor_jobs(["pending"])
    assert (job.number, job.root, job.count) == (1, m.root, 3)
    journal.anchors.advance(1, Step(S.SIGNED, Event.SIGNED, raw_tx=b"raw", tx_hash=b"h" * 32))
    journal.anchors.advance(1, Step(S.SUBMITTED, Event.SENT))
    (job,) = journal.anchors.anchor_jobs(["submitted"])
    assert job.raw_tx == b"raw" and job.tx_hash == b"h" * 32
    # a fresh transaction will be prepared
    journal.anchors.advance(1, Step(S.PENDING, Event.REVERTED, forget_tx=True, forget_block=True, retry=True))
    (job,) = journal.anchors.anchor_jobs(["pending"])
    assert job.raw_tx is None and job.attempts == 1
    journal.anchors.advance(1, Step(S.INCLUDED, Event.INCLUDED, receipt=b"receipt"))
    assert journal.anchors.unpublished_receipts() == [(1, b"receipt")]
    journal.anchors.mark_receipt_published(1)
    st = journal.stats()
    assert st.anchors == {"included": 1} and st.unpublished_receipts == 0


def test_roll_ups_continue_exactly_and_their_jobs_move_like_batch_anchors(journal: SqliteJournal) -> None:
    j = journal
    prev = GENESIS_PREV
    for b in range(1, 5):
        r = rec(b)
        j.records.append([r])
        m = build_manifest("gw-1", b, b, [bytes(r)], prev, 1)
        j.batches.add_batch(m, sign_manifest(m, SIGNER))
        prev = m.digest
    assert j.anchors.last_rollup("judicial") is None
    j.anchors.add_rollup("judicial", 1, 1, 3, b"\x01" * 32)
    with pytest.raises(JournalError, match="continuity"):
        j.anchors.add_rollup("judicial", 2, 3, 4, b"\x02" * 32)  # batch 3 again
    with pytest.raises(JournalError, match="do not exist"):
        j.anchors.add_rollup("judicial", 2, 4, 9, b"\x02" * 32)
    j.anchors.add_rollup("judicial", 2, 4, 4, b"\x02" * 32)
    j.anchors.add_rollup("health_supervision", 1, 1, 4, b"\x03" * 32)  # targets are independent
    assert j.anchors.last_rollup("judicial") == (2, 4) and j.anchors.rollup_for_batch("judicial", 2) == (1, 1, 3, None)
    assert len(j.batches.batch_roots(1, 3)) == 3
    j.anchors.advance(1, Step(S.SIGNED, Event.SIGNED, raw_tx=b"raw", tx_hash=b"\x09" * 32), "judicial")
    j.anchors.advance(1, Step(S.FINAL, Event.FINAL, receipt=b"receipt"), "judicial")
    assert [x.number for x in j.anchors.anchor_jobs(["pending"], "judicial")] == [2]
    assert j.anchors.unpublished_receipts("judicial") == [(1, b"receipt")] and j.anchors.rollups_open() == 3
    j.anchors.mark_receipt_published(1, "judicial")
    assert j.anchors.rollups_open() == 2


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(st.integers(1, 60), max_size=15), max_size=8), st.integers(0, 60), st.integers(1, 70))
def test_delivery_ranges_answer_like_a_flag_per_record(acks: list[list[int]], after: int, limit: int) -> None:
    """Whatever order acks arrive in, `undelivered` returns exactly the records a per-record flag would,
    and the ranges survive a reopen."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        j = SqliteJournal.open(Path(d) / "j.sqlite3", "gw-1")
        j.records.append([rec(i) for i in range(1, 51)])
        flags: set[int] = set()
        for group in acks:
            j.records.mark_delivered([s for s in group if s <= 50])
            flags |= {s for s in group if s <= 50}
            expected = [s for s in range(after + 1, 51) if s not in flags][:limit]
            assert [s for s, _, _ in j.records.undelivered(after, limit)] == expected
        assert j.stats().undelivered == 50 - len(flags)
        j.close()
        again = SqliteJournal.open(Path(d) / "j.sqlite3", "gw-1")
        assert [s for s, _, _ in again.records.undelivered(0, 100)] == [s for s in range(1, 51) if s not in flags]
        assert again.records.next_seq == 51
        again.close()


def test_a_journal_with_per_record_delivery_flags_is_migrated_to_ranges(tmp_path: Path) -> None:
    import sqlite3

    j = SqliteJournal.open(tmp_path / "j.sqlite3", "gw-1")
    j.records.append([rec(i) for i in range(1, 11)])
    j.close()
    conn = sqlite3.connect(tmp_path / "j.sqlite3", isolation_level=None)  # as an older version left it
    conn.execute("UPDATE records SET delivered = 1 WHERE seq <= 4 OR seq = 7")
    conn.close()
    j = SqliteJournal.open(tmp_path / "j.sqlite3", "gw-1")
    assert [s for s, _, _ in j.records.undelivered(0, 100)] == [5, 6, 8, 9, 10]
    j.close()


FIXTURE_V1 = Path(__file__).resolve().parents[2] / "fixtures" / "journal_v1.sqlite3"


def test_a_schema_1_journal_is_upgraded_in_place_and_loses_nothing(tmp_path: Path) -> None:
    """The fixture was written by the schema-1 code (see tests/fixtures/make_journal_v1.py)."""
    import shutil
    import sqlite3

    path = tmp_path / "j.sqlite3"
    shutil.copy(FIXTURE_V1, path)
    path.chmod(0o600)
    old = sqlite3.connect(path)
    old_anchors = old.execute(
        "SELECT batch, root, count, state, raw_tx, tx_hash, receipt, block_number, block_hash, "
        "attempts, published FROM anchors ORDER BY batch"
    ).fetchall()
    old_rollups = old.execute(
        "SELECT target, rollup, first_batch, last_batch, root, count, state, raw_tx, tx_hash, "
        "receipt, block_number, block_hash, attempts, published FROM rollups "
        "ORDER BY target, rollup"
    ).fetchall()
    old_records = old.execute("SELECT seq, dev, t, data FROM records ORDER BY seq").fetchall()
    old_batches = old.execute("SELECT * FROM batches ORDER BY batch").fetchall()
    old.close()
    assert len(old_anchors) == 7 and len(old_rollups) == 3 and len(old_records) == 40

    j = SqliteJournal.open(path, "gw-fixture")
    assert j.records.next_seq == 41 and j.records.read(1, 40) == [bytes(r[3]) for r in old_records]
    assert [s for s, _, _ in j.records.undelivered(0, 100)] == [31, 32, *range(36, 41)]
    assert j.batches.unpublished_batches() == [(b, bytes(s)) for b, _, _, _, _, s, p in old_batches if not p]
    assert j.stats().anchors == {"final": 2, "included": 1, "submitted": 1, "signed": 1, "pending": 1, "failed": 1}
    jobs = {job.number: job for job in j.anchors.anchor_jobs(list(S))}
    for b, root, count, state, raw, tx, _, block, bhash, attempts, _ in old_anchors:
        assert jobs[b] == Job(
            b,
            bytes(root),
            count,
            S(state),
            None if raw is None else bytes(raw),
            None if tx is None else bytes(tx),
            block,
            None if bhash is None else bytes(bhash),
            attempts,
        )
    assert j.anchors.unpublished_receipts() == [(2, b"receipt-\x02")]
    assert j.batches.batch_for_seq(3) == (bytes(old_batches[0][5]), b"receipt-\x01")
    assert j.anchors.last_rollup("judicial") == (2, 5) and j.anchors.last_rollup("health_supervision") == (1, 6)
    assert j.anchors.rollup_for_batch("judicial", 2) == (1, 1, 3, b"rollup-receipt-1")
    assert j.anchors.rollup_range("health_supervision", 1) == (1, 6)
    (signed,) = j.anchors.anchor_jobs(["signed"], "judicial")
    assert (signed.number, signed.raw_tx, signed.tx_hash) == (2, b"rollup-raw-2", b"\x52" * 32)
    assert [x.number for x in j.anchors.anchor_jobs(["pending"], "health_supervision")] == [1]
    assert j.anchors.unpublished_receipts("judicial") == [] and j.anchors.rollups_open() == 2
    j.close()
    again = sqlite3.connect(path)  # upgraded in place, once: the old tables are gone, the schema is current
    assert again.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == (str(SCHEMA_VERSION),)
    tables = {n for (n,) in again.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert not tables & {"anchors", "rollups"} and "anchor_jobs" in tables
    again.close()
    assert SqliteJournal.open(path, "gw-fixture").anchors.anchor_jobs(["final"]) != []  # and opens again


def test_a_journal_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    import sqlite3

    SqliteJournal.open(tmp_path / "j.sqlite3", "gw-1").close()
    conn = sqlite3.connect(tmp_path / "j.sqlite3", isolation_level=None)
    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (str(SCHEMA_VERSION + 1),))
    conn.close()
    with pytest.raises(JournalError, match=f"schema {SCHEMA_VERSION + 1}"):
        SqliteJournal.open(tmp_path / "j.sqlite3", "gw-1")


def test_a_failed_upgrade_leaves_the_old_journal_untouched(tmp_path: Path) -> None:
    """A schema-1 file whose roll-up table cannot be read (damaged by hand) keeps its schema and its tables."""
    import shutil
    import sqlite3

    path = tmp_path / "j.sqlite3"
    shutil.copy(FIXTURE_V1, path)
    path.chmod(0o600)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("ALTER TABLE rollups RENAME COLUMN rollup TO number_renamed")
    conn.close()
    with pytest.raises(JournalError, match="cannot open journal"):
        SqliteJournal.open(path, "gw-fixture")
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == ("1",)
    assert conn.execute("SELECT COUNT(*) FROM anchors").fetchone() == (7,)
    assert conn.execute("SELECT COUNT(*) FROM anchor_jobs").fetchone() == (0,)
    conn.close()
