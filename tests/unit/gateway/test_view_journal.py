"""The journal's audience tables: a schema-2 journal written by the previous code is upgraded in place and
loses nothing; views continue exactly per audience; retention keeps the records an unpublished view needs."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from edge.manifest import GENESIS_PREV, build_manifest, sign_manifest
from edge.record import Record
from edge.sm2 import generate_signer
from gateway.errors import JournalError
from gateway.journal import SCHEMA_VERSION, SqliteJournal
from gateway.journal.file import JournalFile

FIXTURE_V2 = Path(__file__).resolve().parents[2] / "fixtures" / "journal_v2.sqlite3"


def _dump(path: Path) -> dict[str, list[tuple[object, ...]]]:
    conn = sqlite3.connect(path)
    try:
        return {
            "records": conn.execute("SELECT seq, dev, t, data FROM records ORDER BY seq").fetchall(),
            "delivered": conn.execute("SELECT * FROM delivered ORDER BY first").fetchall(),
            "batches": conn.execute("SELECT * FROM batches ORDER BY batch").fetchall(),
            "anchor_jobs": conn.execute("SELECT * FROM anchor_jobs ORDER BY queue, number").fetchall(),
        }
    finally:
        conn.close()


def test_a_schema_2_journal_is_upgraded_in_place_and_loses_nothing(tmp_path: Path) -> None:
    """The fixture was written by the schema-2 code (see tests/fixtures/make_journal_v2.py)."""
    path = tmp_path / "j.sqlite3"
    shutil.copy(FIXTURE_V2, path)
    path.chmod(0o600)
    before = _dump(path)
    assert len(before["records"]) == 30 and len(before["batches"]) == 6 and len(before["anchor_jobs"]) == 7
    j = SqliteJournal.open(path, "gw-fixture-2")
    assert j.records.next_seq == 31 and j.records.read(1, 30) == [bytes(r[3]) for r in before["records"]]
    assert [s for s, _, _ in j.records.undelivered(0, 100)] == list(range(26, 31))
    assert [b for b, _ in j.batches.unpublished_batches()] == [5, 6]
    assert j.stats().anchors == {"final": 2, "submitted": 1, "pending": 3}
    assert j.anchors.unpublished_receipts() == [(2, b"receipt-\x02")] and j.anchors.last_rollup("judicial") == (1, 3)
    views = j.views
    assert views.start("aud-1") == 7  # an audience added now starts with the next batch to close
    assert views.unpublished("aud-1") == [] and views.retain_from(["aud-1"]) is None
    j.close()
    assert _dump(path) == before  # nothing of schema 2 changed
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == (str(SCHEMA_VERSION),) == ("3",)
    tables = {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"views", "audiences", "audience_consent"} <= tables
    conn.close()
    SqliteJournal.open(path, "gw-fixture-2").close()  # and opens again


def test_a_failed_upgrade_leaves_the_schema_2_journal_untouched(tmp_path: Path) -> None:
    """An upgrade that fails part-way (here: a damaged file whose meta table refuses updates) leaves schema 2
    and every row as they were; the gateway refuses to start instead of running on a half-upgraded file."""
    path = tmp_path / "j.sqlite3"
    shutil.copy(FIXTURE_V2, path)
    path.chmod(0o600)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TRIGGER damaged BEFORE UPDATE ON meta BEGIN SELECT RAISE(ABORT, 'damaged'); END")
    conn.close()
    before = _dump(path)
    with pytest.raises(JournalError, match="cannot open journal"):
        SqliteJournal.open(path, "gw-fixture-2")
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == ("2",)
    conn.close()
    assert _dump(path) == before


def _journal(tmp_path: Path, batches: int) -> SqliteJournal:
    j = SqliteJournal.open(tmp_path / "j.sqlite3", "gw-1")
    signer = generate_signer()
    j.records.append(
        [
            Record("gw-1", s, "dev-1", 1_000 * s, "heart_rate", {"heart_rate": 60}, b"", bytes(16))
            for s in range(1, 5 * batches + 1)
        ]
    )
    prev = GENESIS_PREV
    for b in range(1, batches + 1):
        m = build_manifest("gw-1", b, 5 * b - 4, j.records.read(5 * b - 4, 5 * b), prev, 1)
        j.batches.add_batch(m, sign_manifest(m, signer))
        prev = m.digest
    return j


def test_views_continue_exactly_one_per_source_batch(tmp_path: Path) -> None:
    j = _journal(tmp_path, 3)
    views = j.views
    assert views.start("aud-1") == 4  # first seen after three batches closed
    assert views.next_view("aud-1") == 4  # the state is in the file: asked again, the same answer
    with pytest.raises(JournalError, match="names a batch that does not exist"):
        views.add_view("aud-1", 4, 0, b"v4")
    conn = sqlite3.connect(tmp_path / "j.sqlite3", isolation_level=None)
    conn.execute("UPDATE audiences SET first_n = 1 WHERE aud = 'aud-1'")  # as if configured from the start
    conn.close()
    with pytest.raises(JournalError, match="expected view 1"):
        views.add_view("aud-1", 2, 0, b"v2")
    views.add_view("aud-1", 1, 0, b"v1")
    views.add_view("aud-1", 2, 3, b"v2")
    assert [(v.n, v.consent_n, v.signed) for v in views.unpublished("aud-1")] == [(1, 0, b"v1"), (2, 3, b"v2")]
    assert views.retain_from(["aud-1"]) == 1 and views.unpublished_total(["aud-1"]) == 3
    views.mark_records_published("aud-1", 1)
    views.mark_published("aud-1", 1)
    assert [(v.n, v.records_published) for v in views.unpublished("aud-1")] == [(2, False)]
    views.mark_published("aud-1", 2)
    assert views.retain_from(["aud-1"]) == 3  # batch 3 has no view yet: its records are still needed
    assert views.unpublished_total(["aud-1"]) == 1
    views.mark_consent_published("aud-1", "research", 5)
    views.mark_consent_published("aud-1", "research", 2)  # an older ack arriving late never moves it back
    assert views.consent_published("aud-1", "research") == 5
    (p,) = views.progress([("aud-1", "research")])
    assert (p.first_n, p.views, p.unpublished, p.consent_published) == (1, 2, 0, 5)


def test_the_consent_watermark_belongs_to_the_audience_and_its_purpose(tmp_path: Path) -> None:
    """An audience whose purpose changed has published none of the new purpose's events, whatever ledger
    number the old purpose's events were published to (events of the new purpose at or below it would never
    go out); going back to the old purpose continues where it stopped."""
    j = _journal(tmp_path, 1)
    views = j.views
    views.mark_consent_published("aud-1", "health_management", 7)
    assert views.consent_published("aud-1", "research") == 0
    views.mark_consent_published("aud-1", "research", 3)
    assert views.consent_published("aud-1", "health_management") == 7
    assert views.consent_published("aud-2", "health_management") == 0
    (p,) = views.progress([("aud-1", "research")])
    assert p.consent_published == 3


def test_only_an_unpublished_view_is_replaced_and_only_at_a_later_consent_head(tmp_path: Path) -> None:
    """A view rebuilt after a withdrawal replaces the journaled one while the broker has not acknowledged its
    manifest; its records start over. An acknowledged view is final, a missing one is not created, an older
    consent head is refused: each refusal leaves the row as it was."""
    j = _journal(tmp_path, 2)
    views = j.views
    views.start("aud-1")
    conn = sqlite3.connect(tmp_path / "j.sqlite3", isolation_level=None)
    conn.execute("UPDATE audiences SET first_n = 1 WHERE aud = 'aud-1'")
    conn.close()
    views.add_view("aud-1", 1, 2, b"v1")
    views.add_view("aud-1", 2, 2, b"v2")
    views.mark_records_published("aud-1", 2)
    views.replace_unpublished("aud-1", 2, 3, b"v2 at 3")
    with pytest.raises(JournalError, match="view 2 of audience aud-1 cannot be replaced: it has a later consent"):
        views.replace_unpublished("aud-1", 2, 2, b"v2 at 2")
    views.mark_published("aud-1", 1)
    with pytest.raises(JournalError, match="view 1 of audience aud-1 cannot be replaced: it is published"):
        views.replace_unpublished("aud-1", 1, 3, b"v1 at 3")
    with pytest.raises(JournalError, match="view 3 of audience aud-1 cannot be replaced: it does not exist"):
        views.replace_unpublished("aud-1", 3, 3, b"v3")
    assert [(v.n, v.consent_n, v.signed, v.records_published) for v in views.unpublished("aud-1")] == [
        (2, 3, b"v2 at 3", False)
    ]
    conn = sqlite3.connect(tmp_path / "j.sqlite3")
    assert conn.execute("SELECT consent_n, signed FROM views WHERE n = 1").fetchone() == (2, b"v1")
    assert conn.execute("SELECT COUNT(*) FROM views").fetchone() == (2,)
    conn.close()


def test_a_replacement_decided_on_a_stale_read_is_never_a_silent_no_op(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The view's manifest is acknowledged (another writer, here a second connection) just after anything reads
    its row. A replacement that read first and then wrote ``... AND published = 0`` matched no row and returned
    as if it had replaced the view; the caller then published a manifest the journal never held. Now the one
    conditional UPDATE decides: the replacement either happened, or raises."""
    j = _journal(tmp_path, 1)
    views = j.views
    views.start("aud-1")
    conn = sqlite3.connect(tmp_path / "j.sqlite3", isolation_level=None)
    conn.execute("UPDATE audiences SET first_n = 1 WHERE aud = 'aud-1'")
    views.add_view("aud-1", 1, 2, b"v1")
    real_query = JournalFile.query

    def acknowledged_right_after_a_read(
        self: JournalFile, sql: str, params: Sequence[object] = ()
    ) -> list[tuple[Any, ...]]:
        rows = real_query(self, sql, params)
        conn.execute("UPDATE views SET published = 1 WHERE aud = 'aud-1' AND n = 1")
        return rows

    monkeypatch.setattr(JournalFile, "query", acknowledged_right_after_a_read)
    try:
        views.replace_unpublished("aud-1", 1, 3, b"v1 at 3")
    except JournalError as exc:
        assert "cannot be replaced: it is published" in str(exc)
        assert conn.execute("SELECT consent_n, signed FROM views WHERE n = 1").fetchone() == (2, b"v1")
    else:
        assert conn.execute("SELECT consent_n, signed FROM views WHERE n = 1").fetchone() == (3, b"v1 at 3")
    conn.close()


def test_a_journal_transaction_returns_each_statements_row_count(tmp_path: Path) -> None:
    file, _ = JournalFile.open(tmp_path / "j.sqlite3", "gw-1")
    counts = file.tx(
        [
            ("INSERT INTO audiences(aud, first_n) VALUES (?, ?)", [("a", 1), ("b", 1), ("c", 2)], True),
            ("UPDATE audiences SET first_n = 5 WHERE first_n = ?", (1,), False),
            ("DELETE FROM audiences WHERE aud = ?", ("nobody",), False),
        ]
    )
    assert counts == [3, 2, 0]
    file.close()
