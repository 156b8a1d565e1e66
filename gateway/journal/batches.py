"""Signed batches, continuous in number and seq; closing one also queues its anchor job."""

from __future__ import annotations

from dataclasses import dataclass

from edge.manifest import Manifest, SignedManifest
from gateway.errors import JournalError
from gateway.journal.file import JournalFile, opt
from gateway.journal.records import RecordLog
from gateway.journal.schema import ADD_JOB, BATCH_QUEUE


@dataclass(frozen=True, slots=True)
class BatchRow:
    batch: int
    first_seq: int
    last_seq: int
    digest: bytes


@dataclass(frozen=True, slots=True)
class BatchAnchor:
    batch: int
    first_seq: int
    last_seq: int
    root: bytes
    published: bool
    anchor_state: str | None  # None: no anchor job (a gateway without a chain)
    tx_hash: bytes | None
    block_number: int | None


class BatchStore:
    """The batches (what batching closes, announcements publish and proofs read)."""

    def __init__(self, file: JournalFile, records: RecordLog) -> None:
        self._f, self._records = file, records

    def last_batch(self) -> BatchRow | None:
        rows = self._f.query("SELECT batch, first_seq, last_seq, digest FROM batches ORDER BY batch DESC LIMIT 1")
        if not rows:
            return None
        b, f, last, d = rows[0]
        return BatchRow(int(b), int(f), int(last), bytes(d))

    def last_published_batch(self) -> BatchRow | None:
        """The latest batch whose manifest the broker acknowledged: the most a signed head may name.

        Walks the primary key down from the newest batch, so it reads only the unpublished tail.
        """
        rows = self._f.query(
            "SELECT batch, first_seq, last_seq, digest FROM batches WHERE published = 1 ORDER BY batch DESC LIMIT 1"
        )
        if not rows:
            return None
        b, f, last, d = rows[0]
        return BatchRow(int(b), int(f), int(last), bytes(d))

    def unbatched_range(self) -> tuple[int, int] | None:
        """First and last committed seq not yet covered by a batch."""
        last = self.last_batch()
        start = 1 if last is None else last.last_seq + 1
        if start >= self._records.next_seq:
            return None
        return start, self._records.next_seq - 1

    def add_batch(self, manifest: Manifest, signed: SignedManifest) -> None:
        """Store a signed batch and its pending anchor job in one transaction, checking continuity."""
        if signed.body != bytes(manifest):
            raise JournalError("signed manifest bytes do not match the manifest")
        last = self.last_batch()
        exp_batch, exp_first = (1, 1) if last is None else (last.batch + 1, last.last_seq + 1)
        if manifest.batch != exp_batch or manifest.first_seq != exp_first:
            raise JournalError(
                f"batch {manifest.batch} from seq {manifest.first_seq} breaks continuity: expected "
                f"batch {exp_batch} from seq {exp_first}"
            )
        if last is not None and manifest.prev != last.digest:
            raise JournalError(f"batch {manifest.batch} prev does not match batch {last.batch}'s digest")
        if manifest.last_seq >= self._records.next_seq:
            raise JournalError(f"batch {manifest.batch} covers seq {manifest.last_seq}, not yet journaled")
        self._f.tx(
            [
                (
                    "INSERT INTO batches(batch, first_seq, last_seq, digest, root, signed) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        manifest.batch,
                        manifest.first_seq,
                        manifest.last_seq,
                        manifest.digest,
                        manifest.root,
                        bytes(signed),
                    ),
                    False,
                ),
                (
                    ADD_JOB,
                    (BATCH_QUEUE, manifest.batch, manifest.batch, manifest.batch, manifest.root, manifest.count),
                    False,
                ),
            ]
        )

    def batch_for_seq(self, seq: int) -> tuple[bytes, bytes | None] | None:
        """(signed manifest bytes, final receipt bytes or None) of the batch holding ``seq``."""
        rows = self._f.query(
            "SELECT b.signed, a.receipt FROM batches b LEFT JOIN anchor_jobs a ON a.queue = ? AND "
            "a.number = b.batch WHERE ? BETWEEN b.first_seq AND b.last_seq",
            (BATCH_QUEUE, seq),
        )
        if not rows:
            return None
        signed, receipt = rows[0]
        return bytes(signed), None if receipt is None else bytes(receipt)

    def unpublished_batches(self) -> list[tuple[int, bytes]]:
        rows = self._f.query("SELECT batch, signed FROM batches WHERE published = 0 ORDER BY batch")
        return [(int(b), bytes(s)) for b, s in rows]

    def mark_batch_published(self, batch: int) -> None:
        self._f.tx([("UPDATE batches SET published = 1 WHERE batch = ?", (batch,), False)])

    def batch_roots(self, first: int, last: int) -> list[bytes]:
        rows = self._f.query("SELECT root FROM batches WHERE batch BETWEEN ? AND ? ORDER BY batch", (first, last))
        if len(rows) != last - first + 1:
            raise JournalError(f"journal lacks batches in {first}..{last}")
        return [bytes(r) for (r,) in rows]

    def batch_page(self, before: int | None, limit: int) -> list[BatchAnchor]:
        """Up to ``limit`` batches below ``before`` (newest first), each with its own anchor job's state."""
        rows = self._f.query(
            "SELECT b.batch, b.first_seq, b.last_seq, b.root, b.published, a.state, a.tx_hash, a.block_number "
            "FROM batches b LEFT JOIN anchor_jobs a ON a.queue = ? AND a.number = b.batch "
            "WHERE b.batch < ? ORDER BY b.batch DESC LIMIT ?",
            (BATCH_QUEUE, (1 << 62) if before is None else before, limit),
        )
        return [
            BatchAnchor(int(b), int(f), int(la), bytes(r), bool(p), opt(st, str), opt(tx, bytes), opt(bn, int))
            for b, f, la, r, p, st, tx, bn in rows
        ]
