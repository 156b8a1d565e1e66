"""The journal as the gateway opens it: one SQLite file, its parts, and the overview of them all."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gateway.journal.anchors import AnchorQueue
from gateway.journal.batches import BatchStore
from gateway.journal.file import JournalFile
from gateway.journal.maintenance import Maintenance
from gateway.journal.records import RecordLog
from gateway.journal.schema import BATCH_QUEUE
from gateway.journal.views import ViewJournal


@dataclass(frozen=True, slots=True)
class JournalStats:
    records: int
    undelivered: int
    batches: int
    unpublished_batches: int
    anchors: dict[str, int]
    unpublished_receipts: int
    next_seq: int
    file_bytes: int
    purged: int = 0  # records removed under the retention policy (seqs 1..purged)


class SqliteJournal:
    """Records, batches and the anchor queue in one SQLite file (WAL, synchronous=FULL); each concern is a part
    over the one connection, and each stage is given only the parts it uses."""

    def __init__(self, file: JournalFile, next_seq: int) -> None:
        self._file = file
        self.records = RecordLog(file, next_seq)
        self.batches = BatchStore(file, self.records)
        self.anchors = AnchorQueue(file, self.batches)
        self.maintenance = Maintenance(file, self.records)
        self.views = ViewJournal(file, self.records, self.batches)

    @classmethod
    def open(cls, path: Path, gw: str) -> SqliteJournal:
        """Open (or create) the journal (see ``JournalFile.open``)."""
        return cls(*JournalFile.open(path, gw))

    @property
    def path(self) -> Path:
        return self._file.path

    @property
    def gw(self) -> str:
        return self._file.gw

    def close(self) -> None:
        self._file.close()

    def stats(self) -> JournalStats:
        q = self._file.query
        anchors = {
            str(s): int(n)
            for s, n in q("SELECT state, COUNT(*) FROM anchor_jobs WHERE queue = ? GROUP BY state", (BATCH_QUEUE,))
        }
        size = sum(p.stat().st_size for p in (self._file.path, Path(str(self._file.path) + "-wal")) if p.exists())
        return JournalStats(
            records=self.records.next_seq - 1,  # seqs run from 1: every record ever journaled, purged or not
            undelivered=self.records.next_seq - 1 - self.records.delivered_count,
            batches=int(q("SELECT COUNT(*) FROM batches")[0][0]),
            unpublished_batches=int(q("SELECT COUNT(*) FROM batches WHERE published = 0")[0][0]),
            anchors=anchors,
            unpublished_receipts=int(
                q(
                    "SELECT COUNT(*) FROM anchor_jobs WHERE queue = ? AND receipt IS NOT NULL AND published = 0",
                    (BATCH_QUEUE,),
                )[0][0]
            ),
            next_seq=self.records.next_seq,
            file_bytes=size,
            purged=self.records.purged_through(),
        )
