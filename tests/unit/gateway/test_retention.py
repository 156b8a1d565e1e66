"""Retention: the journal forgets readings by age, but only once they were delivered, published in a batch and
anchored final with a published receipt; what it forgets is gone from the database file and its WAL."""

from __future__ import annotations

import asyncio
import logging
import secrets
import sqlite3
from pathlib import Path

import pytest

from anchoring.lifecycle import AnchorState as S
from anchoring.lifecycle import Event, Step
from edge.manifest import GENESIS_PREV, SignedManifest, build_manifest, sign_manifest
from edge.merkle import MerkleTree, verify_inclusion
from edge.record import Record
from edge.sm2 import generate_signer
from gateway.config import RetentionConfig, load_config
from gateway.errors import ConfigError, JournalError
from gateway.journal import SqliteJournal
from gateway.stages.ports import Health, Worker
from gateway.stages.retention import DAY_MS, Retention

SIGNER = generate_signer()
T0 = 1_700_000_000_000
HOUR = 3_600_000


def _records(first: int, n: int, t: int) -> list[Record]:
    return [
        Record(
            gw="gw-1",
            seq=s,
            dev="dev-1",
            t=t + s,
            kind="heart_rate",
            val={"heart_rate": 61},
            raw=bytes([0, 61]),
            salt=secrets.token_bytes(16),  # random: a purged record's salt must not be found anywhere on disk
        )
        for s in range(first, first + n)
    ]


def _close(j: SqliteJournal, batch: int, first: int, last: int, prev: bytes) -> bytes:
    m = build_manifest("gw-1", batch, first, j.records.read(first, last), prev, 1)
    j.batches.add_batch(m, sign_manifest(m, SIGNER))
    return m.digest


def _finish(j: SqliteJournal, batch: int, *, deliver: bool = True, publish: bool = True, final: bool = True) -> None:
    """Walk a batch through the chain of custody, optionally stopping short of one step."""
    first, last = next((f, la) for b, f, la in _rows(j) if b == batch)
    if deliver:
        j.records.mark_delivered(range(first, last + 1))
    if publish:
        j.batches.mark_batch_published(batch)
    if final:
        j.anchors.advance(batch, Step(S.FINAL, Event.FINAL, receipt=b"receipt-%d" % batch))
        j.anchors.mark_receipt_published(batch)


def _rows(j: SqliteJournal) -> list[tuple[int, int, int]]:
    return [(int(b), int(f), int(la)) for b, f, la in j._file.query("SELECT batch, first_seq, last_seq FROM batches")]


def _journal(tmp_path: Path) -> tuple[SqliteJournal, list[Record]]:
    """Three batches of 20 records: two an hour apart, old; the third young."""
    j = SqliteJournal.open(tmp_path / "j.sqlite3", "gw-1")
    recs = _records(1, 20, T0) + _records(21, 20, T0 + HOUR) + _records(41, 20, T0 + 48 * HOUR)
    j.records.append(recs)
    prev = GENESIS_PREV
    for b in range(3):
        prev = _close(j, b + 1, 20 * b + 1, 20 * b + 20, prev)
    return j, recs


def _disk(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in (path, path.with_name(path.name + "-wal")) if p.exists())


def test_purged_readings_leave_no_trace_in_the_database_or_its_wal(tmp_path: Path) -> None:
    j, recs = _journal(tmp_path)
    for b in (1, 2, 3):
        _finish(j, b)
    before = _disk(j.path)
    assert all(r.salt in before for r in recs)  # the scan can see them: a pass below means they are gone
    purged = j.maintenance.purge(older_than_t=T0 + 24 * HOUR)
    assert purged is not None and (purged.batches, purged.records, purged.first_seq, purged.last_seq) == (2, 40, 1, 40)
    after = _disk(j.path)
    assert not [r.seq for r in recs[:40] if r.salt in after or bytes(r) in after]
    assert all(r.salt in after for r in recs[40:])  # the young batch stays, whole
    st = j.stats()
    assert (st.records, st.purged, st.undelivered) == (60, 40, 0)


def test_what_remains_still_proves_against_its_signed_manifest(tmp_path: Path) -> None:
    j, recs = _journal(tmp_path)
    for b in (1, 2, 3):
        _finish(j, b)
    j.maintenance.purge(older_than_t=T0 + 24 * HOUR)
    signed, receipt = j.batches.batch_for_seq(45) or (b"", None)
    sm = SignedManifest.from_bytes(signed)
    assert sm.verify(SIGNER) and receipt == b"receipt-3"
    leaves = j.records.read(41, 60)
    tree = MerkleTree(leaves)
    assert tree.root == sm.manifest.root
    assert verify_inclusion(bytes(recs[44]), 4, 20, tree.inclusion_proof(4), sm.manifest.root)
    with pytest.raises(JournalError, match="purged under the retention policy"):
        j.records.read(1, 20)  # a proof for a purged record is refused with the reason, not a generic gap


@pytest.mark.parametrize(
    "missing",
    [
        {"deliver": False},  # the platform never acknowledged it
        {"publish": False},  # its manifest never reached the broker
        {"final": False},  # its anchor is not final (or its receipt not published)
    ],
)
def test_nothing_is_purged_before_delivery_publication_and_a_final_anchor(
    tmp_path: Path, missing: dict[str, bool]
) -> None:
    j, recs = _journal(tmp_path)
    _finish(j, 1, **missing)
    _finish(j, 2)
    assert j.maintenance.purge(older_than_t=T0 + 24 * HOUR) is None  # batch 1 blocks; batch 2 is never purged past it
    assert j.records.read(1, 40) == [bytes(r) for r in recs[:40]]


def test_an_included_but_not_final_anchor_or_an_unpublished_receipt_blocks_the_purge(tmp_path: Path) -> None:
    j, _ = _journal(tmp_path)
    _finish(j, 1, final=False)
    j.anchors.advance(1, Step(S.INCLUDED, Event.INCLUDED, receipt=b"r"))
    j.anchors.mark_receipt_published(1)
    assert j.maintenance.purge(older_than_t=T0 + 24 * HOUR) is None
    j.anchors.advance(1, Step(S.FINAL, Event.FINAL))  # final, receipt (from inclusion) published: now it may go
    assert (j.maintenance.purge(older_than_t=T0 + 24 * HOUR) or None) is not None


def test_young_records_stay_even_when_fully_anchored(tmp_path: Path) -> None:
    j, _ = _journal(tmp_path)
    for b in (1, 2, 3):
        _finish(j, b)
    assert j.maintenance.purge(older_than_t=T0 + 20) is None  # batch 1's newest record (t0+20) is not older than this
    p = j.maintenance.purge(older_than_t=T0 + 21)
    assert p is not None and p.last_seq == 20


def test_a_purged_journal_reopens_and_continues_its_seqs(tmp_path: Path) -> None:
    j, _ = _journal(tmp_path)
    for b in (1, 2, 3):
        _finish(j, b)
    assert j.maintenance.purge(older_than_t=T0 + 100 * HOUR) is not None  # everything: the records table is empty
    j.close()
    again = SqliteJournal.open(tmp_path / "j.sqlite3", "gw-1")
    assert again.records.next_seq == 61 and again.batches.unbatched_range() is None
    again.records.append(_records(61, 1, T0 + 200 * HOUR))
    # 61 is unbatched
    assert again.stats().purged == 60 and again.maintenance.purge(older_than_t=T0 + 300 * HOUR) is None


def test_the_disk_scan_would_see_a_delete_that_only_unlinks(tmp_path: Path) -> None:
    # The control for the scan above: with secure_delete off, SQLite leaves deleted cells in free pages.
    j, recs = _journal(tmp_path)
    j._file.db.execute("PRAGMA secure_delete=OFF")
    for b in (1, 2, 3):
        _finish(j, b)
    j.maintenance.purge(older_than_t=T0 + 24 * HOUR)
    after = _disk(j.path)
    assert [r.seq for r in recs[:40] if r.salt in after]


def test_the_retention_stage_purges_by_age_counts_and_logs_without_readings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    j, recs = _journal(tmp_path)
    for b in (1, 2, 3):
        _finish(j, b)
    health, worker = Health(), Worker("test-journal")
    stage = Retention(RetentionConfig(max_age_days=1), j.maintenance, worker, health)
    caplog.set_level(logging.INFO)
    try:
        assert asyncio.run(stage.purge_once(now_ms=T0 + DAY_MS + 21)) == 20  # batch 1 is over a day old; 2 is not
        assert asyncio.run(stage.purge_once(now_ms=T0 + DAY_MS + 21)) == 0
        assert asyncio.run(stage.purge_once(now_ms=T0 + 100 * DAY_MS)) == 40
    finally:
        worker.shutdown()
    assert (health.metrics.records_purged, health.metrics.batches_purged) == (60, 3)
    assert "purged 20 records (seq 1..20)" in caplog.text
    assert not any(r.salt.hex() in caplog.text or "dev-1" in caplog.text for r in recs)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("max_age_days = nan", "retention.max_age_days must be a finite number"),
        ("max_age_days = 0", "retention.max_age_days must be a finite number"),
        ("interval_s = -1", "retention.interval_s must be a finite number"),
        ("seen_max = 0", "retention.seen_max must be 1..100000"),
        ("keep_forever = true", "unknown setting [retention] keep_forever"),
    ],
)
def test_a_nonsensical_retention_setting_is_refused(tmp_path: Path, setting: str, message: str) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(f"[retention]\n{setting}\n")
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(path)


def test_records_an_audience_view_still_needs_are_kept(tmp_path: Path) -> None:
    """A view not yet published is rebuilt from its source records: retention stops before that batch, and
    goes on once the view is published."""
    j = SqliteJournal.open(tmp_path / "j.sqlite3", "gw-1")
    j.records.append(_records(1, 60, T0))
    prev = GENESIS_PREV
    for b, (first, last) in enumerate(((1, 20), (21, 40), (41, 60)), 1):
        prev = _close(j, b, first, last, prev)
        _finish(j, b)
    views = j.views
    conn_first = views.start("aud-1")
    assert conn_first == 4
    conn = sqlite3.connect(tmp_path / "j.sqlite3", isolation_level=None)
    conn.execute("UPDATE audiences SET first_n = 1 WHERE aud = 'aud-1'")  # as if configured from the start
    conn.close()
    views.add_view("aud-1", 1, 0, b"view-1")
    views.mark_published("aud-1", 1)
    views.add_view("aud-1", 2, 0, b"view-2")  # built, not yet published
    health, worker = Health(), Worker("test-journal")
    stage = Retention(RetentionConfig(max_age_days=1), j.maintenance, worker, health, j.views, ["aud-1"])
    try:
        assert asyncio.run(stage.purge_once(now_ms=T0 + 100 * DAY_MS)) == 20  # batch 1 only
        assert asyncio.run(stage.purge_once(now_ms=T0 + 100 * DAY_MS)) == 0  # batch 2's view is pending
        views.mark_published("aud-1", 2)
        assert asyncio.run(stage.purge_once(now_ms=T0 + 100 * DAY_MS)) == 20  # batch 3 has no view yet
        views.add_view("aud-1", 3, 0, b"view-3")
        views.mark_published("aud-1", 3)
        assert asyncio.run(stage.purge_once(now_ms=T0 + 100 * DAY_MS)) == 20
    finally:
        worker.shutdown()
    j.close()
