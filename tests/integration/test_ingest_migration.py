"""Schema version 4 moves a record's settled state onto its batch row. A database written by version 3 — every
record state that version wrote, with a conflict kept as evidence — reads the same, column for column, after the
upgrade, and keeps working; one whose records disagree with their batch is refused and left as it was."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from ingest.errors import StoreError
from ingest.store import _MIGRATIONS, BatchRow, Store, migrate

pytestmark = pytest.mark.slow

SNAPSHOTS = {
    "records": "SELECT * FROM records ORDER BY gw, seq",
    "by state": "SELECT gw, state, reason, count(*) FROM records GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
    "batches": "SELECT gw, batch, state, reason, key_source, anchor_tx FROM batches ORDER BY gw, batch",
    "conflicts": "SELECT gw, seq, leaf, data FROM record_conflicts ORDER BY gw, seq, leaf",
    "problems": "SELECT gw, reason, message, seq, batch FROM problems ORDER BY id",
}


def version_3(conn: psycopg.Connection[Any]) -> None:
    with conn.transaction():
        conn.execute("CREATE TABLE schema_version (version int NOT NULL)")
        for v in (1, 2, 3):
            conn.execute(_MIGRATIONS[v].encode())
            conn.execute("INSERT INTO schema_version VALUES (%s)", (v,))


def write_as_version_3(conn: psycopg.Connection[Any]) -> None:
    """Rows as version 3's store wrote them: records COPY'd, then every state change rewriting each record row."""

    def batch(gw: str, n: int, first: int, last: int) -> None:
        conn.execute(
            "INSERT INTO batches (gw, batch, first_seq, last_seq, count, root, prev, digest, payload) "
            "VALUES (%s,%s,%s,%s,%s,'\\x01','\\x02','\\x03',%s)",
            (gw, n, first, last, last - first + 1, f"manifest {gw} {n}".encode()),
        )

    def settle(gw: str, n: int, state: str, reason: str | None) -> None:  # version 3's Store.settle
        conn.execute(
            "WITH settled AS (UPDATE batches SET state = %(state)s, reason = %(reason)s, key_source = 'pinned' "
            "WHERE gw = %(gw)s AND batch = %(batch)s RETURNING first_seq, last_seq) UPDATE records SET state = "
            "%(state)s, reason = %(reason)s, batch = %(batch)s FROM settled WHERE gw = %(gw)s AND seq BETWEEN "
            "settled.first_seq AND settled.last_seq AND state = 'received'",
            {"state": state, "reason": reason, "gw": gw, "batch": n},
        )

    def advance(gw: str, n: int, frm: str, to: str) -> None:  # version 3's Store._advance
        conn.execute("UPDATE batches SET state = %s WHERE gw = %s AND batch = %s AND state = %s", (to, gw, n, frm))
        conn.execute("UPDATE records SET state = %s WHERE gw = %s AND batch = %s AND state = %s", (to, gw, n, frm))

    with conn.transaction():
        for gw, last in (("gw-a", 60), ("gw-b", 7)):
            conn.execute(
                "INSERT INTO records (gw, seq, dev, t, kind, data, leaf) SELECT %s, s, 'dev-1', 1700000000000 + s, "
                "'heart_rate', ('\\xa1'::bytea || int4send(s::int)), sha256(int4send(s::int)) "
                "FROM generate_series(1, %s) s",
                (gw, last),
            )
        for n in range(1, 7):
            batch("gw-a", n, 10 * n - 9, 10 * n)  # batch 6 stays received
        batch("gw-a", 7, 61, 70)  # its records never came
        conn.execute("UPDATE records SET conflict = true WHERE gw = 'gw-a' AND seq = 3")
        conn.execute("INSERT INTO record_conflicts VALUES ('gw-a', 3, '\\xff', '\\xfe')")
        conn.execute(
            "INSERT INTO problems (gw, reason, message, seq, instance) VALUES ('gw-a', "
            "'conflicting_duplicate', 'two different records claim seq 3', 3, 'i1')"
        )
        for n in range(1, 6):
            settle("gw-a", n, "rejected" if n == 4 else "proven", "root_mismatch" if n == 4 else None)
        advance("gw-a", 1, "proven", "anchored")
        advance("gw-a", 1, "anchored", "final")
        advance("gw-a", 2, "proven", "anchored")
        # version 3's Store.reject: a proven batch whose late predecessor does not chain to it
        conn.execute("UPDATE batches SET state = 'rejected', reason = 'broken_chain' WHERE gw = 'gw-a' AND batch = 5")
        conn.execute("UPDATE records SET state = 'rejected', reason = 'broken_chain' WHERE gw = 'gw-a' AND batch = 5")


def snapshot(conn: psycopg.Connection[Any]) -> dict[str, list[tuple[Any, ...]]]:
    return {name: conn.execute(sql).fetchall() for name, sql in SNAPSHOTS.items()}


def test_a_version_3_database_reads_the_same_after_the_upgrade_and_keeps_working(database: str) -> None:
    with psycopg.connect(database) as conn:
        version_3(conn)
        write_as_version_3(conn)
        before = snapshot(conn)
        assert before["by state"] == [
            ("gw-a", "anchored", None, 10),
            ("gw-a", "final", None, 10),
            ("gw-a", "proven", None, 10),
            ("gw-a", "received", None, 10),
            ("gw-a", "rejected", "broken_chain", 10),
            ("gw-a", "rejected", "root_mismatch", 10),
            ("gw-b", "received", None, 7),
        ]
        assert migrate(conn) == 4
        assert snapshot(conn) == before
        # what the store does from now on touches the batch row, and the records read it
        store = Store(conn, "i1")
        with conn.transaction():
            store.finalize("gw-a", 2)
            store.reject("gw-a", 3, "broken_chain")
            store.settle(BatchRow("gw-a", 6, 51, 60, 10, b"", b"", b"", b""), "proven", None, "pinned")
        states = conn.execute(
            "SELECT batch, state, reason, count(*) FROM records WHERE gw = 'gw-a' AND batch IN (2, 3, 6) "
            "GROUP BY 1, 2, 3 ORDER BY 1"
        ).fetchall()
        assert states == [(2, "final", None, 10), (3, "rejected", "broken_chain", 10), (6, "proven", None, 10)]
        assert migrate(conn) == 4  # an upgraded database is left alone


def test_a_version_3_database_whose_records_disagree_with_their_batch_is_refused_and_left_as_it_was(
    database: str,
) -> None:
    with psycopg.connect(database) as conn:
        version_3(conn)
        write_as_version_3(conn)
        # a record marked anchored on its own while its batch is only proven: nothing in version 4 could say so
        conn.execute("UPDATE records SET state = 'anchored' WHERE gw = 'gw-a' AND seq = 25")
        conn.commit()
        before = snapshot(conn)
        with pytest.raises(StoreError, match="cannot upgrade the schema to version 4: stored records whose state"):
            migrate(conn)
        assert conn.execute("SELECT max(version) FROM schema_version").fetchone() == (3,)
        assert snapshot(conn) == before
        assert conn.execute("SELECT state FROM records WHERE gw = 'gw-a' AND seq = 25").fetchone() == ("anchored",)
