"""The journal's audience tables: each audience's signed view manifests and how far their publication got.

A view holds no readings: the manifest names the source batch, roots, counts and the withheld ranges. The view
records themselves are not stored; they are rebuilt from the journaled source records when they must be
(re)published, byte-identical because their salts and IVs are derived, not drawn (docs/privacy.md). So a
view's source records must stay until the view is published: :meth:`ViewJournal.retain_from` tells the
retention stage where to stop. Like batch rows, view rows are kept (proofs, no personal data).

The tables live in the journal's SQLite file and use its connection and transactions (schema 3, upgraded in
place from schema 2 by :data:`MIGRATE_2_TO_3`). ``SqliteJournal.views`` is the part the audiences stage,
retention and the API use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gateway.errors import JournalError
from gateway.journal.batches import BatchStore
from gateway.journal.file import JournalFile
from gateway.journal.records import RecordLog
from gateway.journal.schema import MIGRATE_2_TO_3, VIEW_SCHEMA

__all__ = ["MIGRATE_2_TO_3", "VIEW_SCHEMA", "AudienceProgress", "SourceBatch", "ViewJournal", "ViewRow"]


@dataclass(frozen=True, slots=True)
class SourceBatch:
    n: int
    first_seq: int
    last_seq: int
    root: bytes


@dataclass(frozen=True, slots=True)
class ViewRow:
    aud: str
    n: int
    consent_n: int
    signed: bytes
    records_published: bool


@dataclass(frozen=True, slots=True)
class AudienceProgress:
    aud: str
    first_n: int
    views: int  # built
    unpublished: int  # built, manifest not yet acknowledged
    consent_published: int


class ViewJournal:
    """Audience rows in the journal; called on the journal's thread like the journal itself."""

    def __init__(self, file: JournalFile, records: RecordLog, batches: BatchStore) -> None:
        self._file, self._records, self._batches = file, records, batches

    def start(self, aud: str) -> int:
        """The audience's first source batch, recorded on first sight as the next batch to close: an audience
        added later gets no views of batches closed before it existed (their records may be purged)."""
        rows = self._file.query("SELECT first_n FROM audiences WHERE aud = ?", (aud,))
        if rows:
            return int(rows[0][0])
        last = self._batches.last_batch()
        first = 1 if last is None else last.batch + 1
        self._file.tx([("INSERT INTO audiences(aud, first_n) VALUES (?, ?)", (aud, first), False)])
        return first

    def next_view(self, aud: str) -> int:
        """The source batch whose view this audience needs next."""
        rows = self._file.query("SELECT MAX(n) FROM views WHERE aud = ?", (aud,))
        last = rows[0][0]
        return self.start(aud) if last is None else int(last) + 1

    def source_batch(self, n: int) -> SourceBatch | None:
        rows = self._file.query("SELECT first_seq, last_seq, root FROM batches WHERE batch = ?", (n,))
        if not rows:
            return None
        f, last, root = rows[0]
        return SourceBatch(n, int(f), int(last), bytes(root))

    def add_view(self, aud: str, n: int, consent_n: int, signed: bytes) -> None:
        """Store a signed view manifest; views of one audience continue exactly, one per source batch."""
        expected = self.next_view(aud)
        if n != expected:
            raise JournalError(f"view {n} of audience {aud} breaks continuity: expected view {expected}")
        if self.source_batch(n) is None:
            raise JournalError(f"view {n} of audience {aud} names a batch that does not exist")
        self._file.tx(
            [("INSERT INTO views(aud, n, consent_n, signed) VALUES (?, ?, ?, ?)", (aud, n, consent_n, signed), False)]
        )

    def replace_unpublished(self, aud: str, n: int, consent_n: int, signed: bytes) -> None:
        """Swap a view the broker has not acknowledged for one rebuilt at a later consent head (a member withdrew
        meanwhile); its records start over. Refused once its manifest was acknowledged (that view is final) or
        for an older head: one conditional UPDATE decides, and its row count says whether it happened (the rows
        are read afterwards only to say why not)."""
        (changed,) = self._file.tx(
            [
                (
                    "UPDATE views SET consent_n = ?, signed = ?, records_published = 0 "
                    "WHERE aud = ? AND n = ? AND published = 0 AND consent_n <= ?",
                    (consent_n, signed, aud, n, consent_n),
                    False,
                )
            ]
        )
        if changed == 1:
            return
        rows = self._file.query("SELECT consent_n, published FROM views WHERE aud = ? AND n = ?", (aud, n))
        why = "does not exist" if not rows else "is published" if rows[0][1] else "has a later consent head"
        raise JournalError(f"view {n} of audience {aud} cannot be replaced: it {why}")

    def unpublished(self, aud: str, limit: int = 100) -> list[ViewRow]:
        """Views whose manifest the broker has not acknowledged, oldest first."""
        rows = self._file.query(
            "SELECT n, consent_n, signed, records_published FROM views WHERE aud = ? AND published = 0 "
            "ORDER BY n LIMIT ?",
            (aud, limit),
        )
        return [ViewRow(aud, int(n), int(c), bytes(s), bool(r)) for n, c, s, r in rows]

    def mark_records_published(self, aud: str, n: int) -> None:
        self._file.tx([("UPDATE views SET records_published = 1 WHERE aud = ? AND n = ?", (aud, n), False)])

    def mark_published(self, aud: str, n: int) -> None:
        self._file.tx([("UPDATE views SET published = 1 WHERE aud = ? AND n = ?", (aud, n), False)])

    def consent_published(self, aud: str, purpose: str) -> int:
        """The ledger number up to which ``purpose``'s events were acknowledged on ``aud``'s consent topic."""
        rows = self._file.query("SELECT published FROM audience_consent WHERE aud = ? AND purpose = ?", (aud, purpose))
        return int(rows[0][0]) if rows else 0

    def mark_consent_published(self, aud: str, purpose: str, n: int) -> None:
        """Every event of ``purpose`` up to ledger number ``n`` was acknowledged (never moves back)."""
        self._file.tx(
            [
                (
                    "INSERT INTO audience_consent(aud, purpose, published) VALUES (?, ?, ?) "
                    "ON CONFLICT(aud, purpose) DO UPDATE SET published = MAX(published, excluded.published)",
                    (aud, purpose, n),
                    False,
                )
            ]
        )

    def retain_from(self, auds: Sequence[str]) -> int | None:
        """The oldest source batch some configured audience still needs the records of (a view not built yet,
        or built and not published); None when every view is published and none is due."""
        need: list[int] = []
        last = self._batches.last_batch()
        for aud in auds:
            rows = self._file.query("SELECT MIN(n) FROM views WHERE aud = ? AND published = 0", (aud,))
            if rows[0][0] is not None:
                need.append(int(rows[0][0]))
            else:
                nxt = self.next_view(aud)
                if last is not None and nxt <= last.batch:
                    need.append(nxt)
        return min(need) if need else None

    def purge_limit(self, auds: Sequence[str], most: int) -> int:
        """How many batches, from the oldest with records left, retention may consider without taking records
        an audience's view still needs (0: none)."""
        keep = self.retain_from(auds)
        if keep is None:
            return most
        rows = self._file.query("SELECT MIN(batch) FROM batches WHERE last_seq > ?", (self._records.purged_through(),))
        first = rows[0][0]
        return most if first is None else max(0, min(most, keep - int(first)))

    def progress(self, auds: Sequence[tuple[str, str]]) -> list[AudienceProgress]:
        """Per (audience, its configured purpose): views built and open, consent published for that purpose."""
        out = []
        for aud, purpose in auds:
            first = self.start(aud)
            built, open_ = self._file.query(
                "SELECT COUNT(*), COALESCE(SUM(published = 0), 0) FROM views WHERE aud = ?", (aud,)
            )[0]
            out.append(AudienceProgress(aud, first, int(built), int(open_), self.consent_published(aud, purpose)))
        return out

    def unpublished_total(self, auds: Sequence[str]) -> int:
        """Views not yet published plus source batches not yet viewed, over ``auds`` (the drain waits for 0)."""
        last = self._batches.last_batch()
        total = 0
        for aud in auds:
            total += int(self._file.query("SELECT COUNT(*) FROM views WHERE aud = ? AND published = 0", (aud,))[0][0])
            if last is not None:
                total += max(0, last.batch - self.next_view(aud) + 1)
        return total
