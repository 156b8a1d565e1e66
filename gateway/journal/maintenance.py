"""Retention: removing whole batches' records once their chain of custody is complete and they are old enough."""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass

from anchoring.lifecycle import AnchorState
from gateway.errors import JournalError
from gateway.journal.file import JournalFile
from gateway.journal.records import RecordLog
from gateway.journal.schema import BATCH_QUEUE

log = logging.getLogger("tiyi.journal")


@dataclass(frozen=True, slots=True)
class Purged:
    """What one retention pass removed: whole batches' records, oldest first (``first_seq..last_seq``)."""

    batches: int
    records: int
    first_seq: int
    last_seq: int


class Maintenance:
    """What the retention stage runs on the journal; it touches records only through this."""

    def __init__(self, file: JournalFile, records: RecordLog) -> None:
        self._f, self._records = file, records

    def purge(self, older_than_t: int, max_batches: int = 1000) -> Purged | None:
        """Delete the records of the oldest batches whose every record is older than ``older_than_t`` (ms),
        was delivered, whose manifest was published and whose batch anchor is final with its receipt
        published — never anything earlier in that chain of custody. Whole batches only, oldest first,
        stopping at the first batch that does not qualify, so what remains keeps complete batches and their
        proofs still verify; batch rows (roots, signed manifests, receipts) carry no readings and stay.

        ``secure_delete`` zeroes the freed content and a TRUNCATE checkpoint empties the WAL, so purged
        readings are gone from both files, not only unlinked. Returns None when nothing qualified.
        """
        through = self._records.purged_through()
        rows = self._f.query(
            "SELECT b.batch, b.first_seq, b.last_seq, (SELECT MAX(t) FROM records r WHERE r.seq BETWEEN "
            "b.first_seq AND b.last_seq) FROM batches b LEFT JOIN anchor_jobs a ON a.queue = ? AND a.number = b.batch "
            "WHERE b.last_seq > ? AND b.published = 1 AND a.state = ? AND a.published = 1 ORDER BY b.batch LIMIT ?",
            (BATCH_QUEUE, through, str(AnchorState.FINAL), max_batches),
        )
        first, last, n = through + 1, through, 0
        for _, b_first, b_last, max_t in rows:
            if (
                b_first != last + 1
                or not self._records.covered(b_first, b_last)
                or (max_t is not None and max_t >= older_than_t)
            ):
                break  # a gap (a batch not yet final or published), undelivered, or still young: stop here
            last, n = int(b_last), n + 1
        if n == 0:
            return None
        next_seq = str(self._records.next_seq)
        self._f.tx(
            [
                ("INSERT OR REPLACE INTO meta(key, value) VALUES ('next_seq', ?)", (next_seq,), False),
                ("INSERT OR REPLACE INTO meta(key, value) VALUES ('purged_through', ?)", (str(last),), False),
                ("DELETE FROM records WHERE seq BETWEEN ? AND ?", (first, last), False),
            ]
        )
        try:
            busy = self._f.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        except sqlite3.Error as exc:
            raise JournalError(f"journal checkpoint after purge failed ({self._f.path}): {exc}") from exc
        if busy:
            log.warning(
                "journal checkpoint after purge was blocked by a reader; purged pages stay in the WAL until the next"
            )
        log.info("retention: purged %d records (seq %d..%d) of %d anchored batches", last - first + 1, first, last, n)
        return Purged(n, last - first + 1, first, last)
