"""Records, append-only with continuous seqs, and their delivery to the broker, kept as ranges of seqs."""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence

from edge.record import Record
from gateway.errors import JournalError
from gateway.journal.file import JournalFile


class RecordLog:
    """The records and which of them the broker acknowledged (what ingest appends and delivery reads)."""

    def __init__(self, file: JournalFile, next_seq: int) -> None:
        self._f = file
        self._next_seq = next_seq
        self._delivered = self._load_delivered()

    @property
    def next_seq(self) -> int:
        return self._next_seq

    def append(self, records: Sequence[Record]) -> None:
        """Store records durably (fsync'd on return). Seqs must continue exactly from ``next_seq``."""
        for r in records:
            if r.gw != self._f.gw:
                raise JournalError(f"record for gateway {r.gw!r} offered to the journal of {self._f.gw!r}")
        self.append_encoded([(r.seq, r.dev, r.t, bytes(r)) for r in records])

    def append_encoded(self, rows: Sequence[tuple[int, str, int, bytes]]) -> None:
        """Store already-encoded records ``(seq, dev, t, bytes)`` of this gateway durably (fsync'd on return).

        The ingest path encodes each record once and hands the same bytes to the journal and the publisher.
        Seqs must continue exactly from ``next_seq``.
        """
        if not rows:
            return
        first = self._next_seq
        for i, row in enumerate(rows):
            if row[0] != first + i:
                raise JournalError(f"record seq {row[0]} out of order: expected {first + i}")
        # The next seq is MAX(seq) + 1 at open, so no counter row is rewritten per append; retention, the
        # only deletion, stores next_seq in meta before it deletes (see Maintenance.purge).
        self._f.tx([("INSERT INTO records(seq, dev, t, data) VALUES (?, ?, ?, ?)", rows, True)])
        self._next_seq += len(rows)

    def _load_delivered(self) -> list[tuple[int, int]]:
        rows = self._f.query("SELECT first, last FROM delivered ORDER BY first")
        if rows:
            return [(int(f), int(last)) for f, last in rows]
        # A journal from before delivery ranges: derive them once from the per-record flags.
        seqs = [int(s) for (s,) in self._f.query("SELECT seq FROM records WHERE delivered = 1 ORDER BY seq")]
        ranges = _merge([(q, q) for q in seqs])
        if ranges:
            self._f.tx([("INSERT INTO delivered(first, last) VALUES (?, ?)", ranges, True)])
        return ranges

    def undelivered(self, after_seq: int, limit: int) -> list[tuple[int, str, bytes]]:
        """Records after ``after_seq`` not yet delivered, in seq order (at most ``limit``)."""
        out: list[tuple[int, str, bytes]] = []
        cursor = after_seq
        while len(out) < limit:
            cursor = self._skip_delivered(cursor)
            end = self._next_delivered_start(cursor)  # the records between cursor and end are undelivered
            want = limit - len(out)
            if end is None:
                rows = self._f.query(
                    "SELECT seq, dev, data FROM records WHERE seq > ? ORDER BY seq LIMIT ?", (cursor, want)
                )
            else:
                rows = self._f.query(
                    "SELECT seq, dev, data FROM records WHERE seq > ? AND seq < ? ORDER BY seq LIMIT ?",
                    (cursor, end, want),
                )
            out += [(int(q), str(d), bytes(data)) for q, d, data in rows]
            if end is None:
                break
            cursor = end - 1 if len(rows) < want else out[-1][0]
        return out

    def _skip_delivered(self, after: int) -> int:
        """``after``, or the end of the delivered range that continues right after it."""
        i = bisect.bisect_right(self._delivered, (after + 1, 1 << 62)) - 1
        if i >= 0 and self._delivered[i][0] <= after + 1 <= self._delivered[i][1]:
            return self._delivered[i][1]
        return after

    def _next_delivered_start(self, after: int) -> int | None:
        i = bisect.bisect_right(self._delivered, (after, 1 << 62))
        return self._delivered[i][0] if i < len(self._delivered) else None

    def mark_delivered(self, seqs: Iterable[int]) -> None:
        """Merge acknowledged seqs into the delivered ranges and store the ranges that changed."""
        merged = _merge([*self._delivered, *((q, q) for q in seqs)])
        if merged == self._delivered:
            return  # nothing new (or nothing at all)
        old = set(self._delivered)
        firsts = {f for f, _ in merged}
        gone = [(f,) for f, _ in self._delivered if f not in firsts]
        added = [r for r in merged if r not in old]
        self._f.tx(
            [
                ("DELETE FROM delivered WHERE first = ?", gone, True),
                ("INSERT OR REPLACE INTO delivered(first, last) VALUES (?, ?)", added, True),
            ]
        )
        self._delivered = merged

    @property
    def delivered_count(self) -> int:
        return sum(last - first + 1 for first, last in self._delivered)

    def read(self, first_seq: int, last_seq: int) -> list[bytes]:
        """The stored bytes of records ``first_seq..last_seq``, all of them or an error naming why not."""
        rows = self._f.query(
            "SELECT seq, data FROM records WHERE seq BETWEEN ? AND ? ORDER BY seq", (first_seq, last_seq)
        )
        if len(rows) != last_seq - first_seq + 1:
            if first_seq <= self.purged_through():
                raise JournalError(
                    f"records up to seq {self.purged_through()} were purged under the retention policy "
                    f"(asked for {first_seq}..{last_seq})"
                )
            raise JournalError(f"journal lacks records in {first_seq}..{last_seq} ({len(rows)} found)")
        return [bytes(b) for _, b in rows]

    def purged_through(self) -> int:
        """The last seq whose record retention removed (0: none)."""
        rows = self._f.query("SELECT value FROM meta WHERE key = 'purged_through'")
        return int(rows[0][0]) if rows else 0

    def covered(self, first: int, last: int) -> bool:
        """Whether every seq in ``first..last`` was delivered (ranges are merged, so one range holds them)."""
        i = bisect.bisect_right(self._delivered, (first, 1 << 62)) - 1
        return i >= 0 and self._delivered[i][0] <= first and last <= self._delivered[i][1]


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, disjoint, non-adjacent ranges covering the same seqs (a seq s alone is (s, s))."""
    out: list[tuple[int, int]] = []
    for first, last in sorted(ranges):
        if out and first <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], last))
        else:
            out.append((first, last))
    return out
