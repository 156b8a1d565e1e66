"""Child process for the crash test: appends deterministic records and prints each committed seq."""

from __future__ import annotations

import sys
from pathlib import Path

from edge.record import Record
from gateway.journal import SqliteJournal


def record(seq: int) -> Record:
    return Record(
        gw="gw-crash",
        seq=seq,
        dev=f"dev-{seq % 7}",
        t=1_700_000_000_000 + seq,
        kind="heart_rate",
        val={"heart_rate": 40 + seq % 150, "rr_intervals": [0.5, 0.25]},
        raw=bytes([0, 40 + seq % 150]),
        salt=seq.to_bytes(16, "big"),
    )


def main() -> None:
    j = SqliteJournal.open(Path(sys.argv[1]), "gw-crash")
    while True:
        n = j.records.next_seq
        size = 1 + n % 5
        j.records.append([record(s) for s in range(n, n + size)])
        print(n + size - 1, flush=True)


if __name__ == "__main__":
    main()
