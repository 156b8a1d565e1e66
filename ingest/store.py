"""The verifying store in PostgreSQL: where ingest instances meet.

Every row is keyed by what the contract keys it by — records by (gw, seq), batches by (gw, batch) — so a redelivered
message never makes a second row, and bytes that differ from the stored ones for the same key are kept as evidence
(``record_conflicts``, ``problems``) instead of replacing them. A record's ``state`` moves received → proven (the
batch's Merkle root over the stored records matches its manifest, signed under a trusted key) → anchored (a chain
confirmed the batch's anchor) → final, or to rejected with the ``Reason`` from ``anchoring.findings``. Whichever
instance stored the last piece of a batch proves it, from the rows: no instance needs to have seen the whole batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from edge.record import Record
from ingest.errors import StoreError

SCHEMA_VERSION = 1

_MIGRATIONS: dict[int, str] = {
    1: """
CREATE TABLE records (
    gw text NOT NULL, seq bigint NOT NULL, dev text NOT NULL, t bigint NOT NULL, kind text NOT NULL,
    data bytea NOT NULL, leaf bytea NOT NULL,
    state text NOT NULL DEFAULT 'received' CHECK (state IN ('received','proven','anchored','final','rejected')),
    reason text, batch bigint, conflict boolean NOT NULL DEFAULT false,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (gw, seq));
CREATE INDEX records_state ON records (gw, state) WHERE state = 'received';
CREATE INDEX records_time ON records (t);
CREATE TABLE record_conflicts (
    gw text NOT NULL, seq bigint NOT NULL, leaf bytea NOT NULL, data bytea NOT NULL,
    seen_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (gw, seq, leaf));
CREATE TABLE batches (
    gw text NOT NULL, batch bigint NOT NULL, first_seq bigint NOT NULL, last_seq bigint NOT NULL,
    count bigint NOT NULL, root bytea NOT NULL, prev bytea NOT NULL, digest bytea NOT NULL, payload bytea NOT NULL,
    state text NOT NULL DEFAULT 'received', reason text, key_source text, conflict boolean NOT NULL DEFAULT false,
    anchor_tx bytea, anchor_block bigint, PRIMARY KEY (gw, batch));
CREATE INDEX batches_waiting ON batches (gw, batch) WHERE state = 'received';
CREATE TABLE receipts (
    gw text NOT NULL, batch bigint NOT NULL, tx bytea NOT NULL, payload bytea NOT NULL,
    PRIMARY KEY (gw, batch, tx));
CREATE TABLE rollups (
    gw text NOT NULL, target text NOT NULL, number bigint NOT NULL, payload bytea NOT NULL,
    PRIMARY KEY (gw, target, number));
CREATE TABLE heads (gw text NOT NULL, payload bytea NOT NULL, batch bigint NOT NULL, PRIMARY KEY (gw, payload));
CREATE TABLE keys (gw text PRIMARY KEY, key_id text NOT NULL, pem text NOT NULL);
CREATE TABLE problems (
    id bigserial PRIMARY KEY, gw text, reason text NOT NULL, message text NOT NULL, seq bigint, batch bigint,
    instance text NOT NULL, at timestamptz NOT NULL DEFAULT now());
""",
}


@dataclass(frozen=True, slots=True)
class RecordRow:
    gw: str
    seq: int
    dev: str
    t: int
    kind: str
    data: bytes
    leaf: bytes


@dataclass(frozen=True, slots=True)
class BatchRow:
    gw: str
    batch: int
    first_seq: int
    last_seq: int
    count: int
    root: bytes
    prev: bytes
    digest: bytes
    payload: bytes


def connect(dsn: str) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(dsn, autocommit=False)
    except psycopg.Error as exc:
        raise StoreError(f"cannot connect to PostgreSQL: {str(exc).strip().splitlines()[0]}") from exc


def migrate(conn: psycopg.Connection[Any]) -> int:
    """Create or upgrade the schema (under an advisory lock, so instances starting together do it once)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(7301017)")
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version int NOT NULL)")
        row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
        have = row[0] if row and row[0] is not None else 0
        if have > SCHEMA_VERSION:
            raise StoreError(f"the database schema is version {have}, newer than this tiyi-ingest ({SCHEMA_VERSION})")
        for v in range(have + 1, SCHEMA_VERSION + 1):
            conn.execute(_MIGRATIONS[v].encode())
            conn.execute("INSERT INTO schema_version VALUES (%s)", (v,))
    return SCHEMA_VERSION


class Store:
    """Writes for one ingest instance (one connection, used from one thread)."""

    def __init__(self, conn: psycopg.Connection[Any], instance: str) -> None:
        self.conn = conn
        self.instance = instance

    def problem(self, gw: str | None, reason: str, message: str, seq: int | None = None,
                batch: int | None = None) -> None:
        self.conn.execute("INSERT INTO problems (gw, reason, message, seq, batch, instance) VALUES (%s,%s,%s,%s,%s,%s)",
                          (gw, reason, message, seq, batch, self.instance))

    def records(self, rows: Sequence[RecordRow]) -> int:
        """Insert new records; a key already stored with other bytes is kept as evidence and flagged. Returns the
        number of conflicts found."""
        if not rows:
            return 0
        cur = self.conn.cursor()
        cur.execute("CREATE TEMP TABLE IF NOT EXISTS incoming (gw text, seq bigint, dev text, t bigint, kind text, "
                    "data bytea, leaf bytea) ON COMMIT DELETE ROWS")
        with cur.copy("COPY incoming (gw, seq, dev, t, kind, data, leaf) FROM STDIN") as copy:
            for r in rows:
                copy.write_row((r.gw, r.seq, r.dev, r.t, r.kind, r.data, r.leaf))
        cur.execute("INSERT INTO records (gw, seq, dev, t, kind, data, leaf) "
                    "SELECT DISTINCT ON (gw, seq) gw, seq, dev, t, kind, data, leaf FROM incoming "
                    "ON CONFLICT (gw, seq) DO NOTHING")
        conflicts = cur.execute(
            "SELECT DISTINCT i.gw, i.seq, i.leaf, i.data FROM incoming i JOIN records r USING (gw, seq) "
            "WHERE r.leaf <> i.leaf").fetchall()
        cur.execute("DELETE FROM incoming")
        for gw, seq, leaf, data in conflicts:
            inserted = cur.execute("INSERT INTO record_conflicts (gw, seq, leaf, data) VALUES (%s,%s,%s,%s) "
                                   "ON CONFLICT DO NOTHING", (gw, seq, leaf, data)).rowcount
            cur.execute("UPDATE records SET conflict = true WHERE gw = %s AND seq = %s", (gw, seq))
            if inserted:
                self.problem(gw, "conflicting_duplicate", f"two different records claim seq {seq}", seq=seq)
        return len(conflicts)

    def batch(self, b: BatchRow) -> bool:
        """Store a manifest; a different one for the same batch number is evidence (False)."""
        got = self.conn.execute(
            "INSERT INTO batches (gw, batch, first_seq, last_seq, count, root, prev, digest, payload) "
            "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (gw, batch) DO NOTHING",
            (b.gw, b.batch, b.first_seq, b.last_seq, b.count, b.root, b.prev, b.digest, b.payload)).rowcount
        if got:
            return True
        row = self.conn.execute("SELECT payload FROM batches WHERE gw = %s AND batch = %s", (b.gw, b.batch)).fetchone()
        if row is not None and bytes(row[0]) != b.payload:
            self.conn.execute("UPDATE batches SET conflict = true WHERE gw = %s AND batch = %s", (b.gw, b.batch))
            self.problem(b.gw, "conflicting_batch", f"two different manifests claim batch {b.batch}", batch=b.batch)
            return False
        return True

    def receipt(self, gw: str, batch: int, tx: bytes, payload: bytes) -> None:
        self.conn.execute("INSERT INTO receipts VALUES (%s,%s,%s,%s) ON CONFLICT DO NOTHING", (gw, batch, tx, payload))

    def rollup(self, gw: str, target: str, number: int, payload: bytes) -> None:
        got = self.conn.execute("INSERT INTO rollups VALUES (%s,%s,%s,%s) ON CONFLICT DO NOTHING",
                                (gw, target, number, payload)).rowcount
        if not got:
            row = self.conn.execute("SELECT payload FROM rollups WHERE gw=%s AND target=%s AND number=%s",
                                    (gw, target, number)).fetchone()
            if row is not None and bytes(row[0]) != payload:
                self.problem(gw, "rollup_mismatch", f"two different roll-ups claim {target} #{number}")

    def head(self, gw: str, batch: int, payload: bytes) -> None:
        self.conn.execute("INSERT INTO heads VALUES (%s,%s,%s) ON CONFLICT DO NOTHING", (gw, payload, batch))

    def key(self, gw: str, key_id: str, pem: str) -> None:
        self.conn.execute("INSERT INTO keys VALUES (%s,%s,%s) ON CONFLICT (gw) DO UPDATE SET key_id = EXCLUDED.key_id, "
                          "pem = EXCLUDED.pem", (gw, key_id, pem))

    # ---------------------------------------------------------------- proving from the rows
    def ready_batches(self, limit: int) -> list[tuple[BatchRow, list[bytes], str | None, bytes | None]]:
        """Batches still 'received' whose records are all stored, locked for this instance (others skip them):
        (batch, its records' bytes in seq order, the announced key PEM, the previous batch's digest if stored)."""
        rows = self.conn.execute(
            "SELECT b.gw, b.batch, b.first_seq, b.last_seq, b.count, b.root, b.prev, b.digest, b.payload "
            "FROM batches b WHERE b.state = 'received' AND NOT b.conflict "
            # The prev chain is always checked: a batch waits for the one before it (batch 1 for genesis).
            "AND (b.batch = 1 OR EXISTS (SELECT 1 FROM batches p WHERE p.gw = b.gw AND p.batch = b.batch - 1)) "
            "AND b.count = "
            "(SELECT count(*) FROM records r WHERE r.gw = b.gw AND r.seq BETWEEN b.first_seq AND b.last_seq) "
            "ORDER BY b.gw, b.batch LIMIT %s FOR UPDATE SKIP LOCKED", (limit,)).fetchall()
        out = []
        for row in rows:
            b = BatchRow(row[0], row[1], row[2], row[3], row[4], bytes(row[5]), bytes(row[6]), bytes(row[7]),
                         bytes(row[8]))
            data = [bytes(d) for (d,) in self.conn.execute(
                "SELECT data FROM records WHERE gw = %s AND seq BETWEEN %s AND %s ORDER BY seq",
                (b.gw, b.first_seq, b.last_seq))]
            key = self.conn.execute("SELECT pem FROM keys WHERE gw = %s", (b.gw,)).fetchone()
            prev = self.conn.execute("SELECT digest FROM batches WHERE gw = %s AND batch = %s",
                                     (b.gw, b.batch - 1)).fetchone()
            out.append((b, data, key[0] if key else None, bytes(prev[0]) if prev else None))
        return out

    def alternatives(self, b: BatchRow) -> list[tuple[int, bytes, bytes]]:
        """(seq, data, leaf) of conflicting copies kept as evidence for this batch's records."""
        return [(q, bytes(d), bytes(lf)) for q, d, lf in self.conn.execute(
            "SELECT seq, data, leaf FROM record_conflicts WHERE gw = %s AND seq BETWEEN %s AND %s ORDER BY seq",
            (b.gw, b.first_seq, b.last_seq))]

    def swap(self, gw: str, seq: int, data: bytes, leaf: bytes) -> None:
        """The copy the signed batch proves becomes the record; the one stored first becomes the evidence."""
        old = self.conn.execute("SELECT data, leaf FROM records WHERE gw = %s AND seq = %s", (gw, seq)).fetchone()
        assert old is not None
        self.conn.execute("DELETE FROM record_conflicts WHERE gw = %s AND seq = %s AND leaf = %s", (gw, seq, leaf))
        self.conn.execute("INSERT INTO record_conflicts (gw, seq, leaf, data) VALUES (%s,%s,%s,%s) "
                          "ON CONFLICT DO NOTHING", (gw, seq, bytes(old[1]), bytes(old[0])))
        rec = Record.from_bytes(data)
        self.conn.execute("UPDATE records SET data = %s, leaf = %s, dev = %s, t = %s, kind = %s WHERE gw = %s AND "
                          "seq = %s", (data, leaf, rec.dev, rec.t, rec.kind, gw, seq))

    def settle(self, b: BatchRow, state: str, reason: str | None, key_source: str | None) -> None:
        """Mark a batch and its records proven, or rejected with a reason."""
        self.conn.execute("UPDATE batches SET state = %s, reason = %s, key_source = %s WHERE gw = %s AND batch = %s",
                          (state, reason, key_source, b.gw, b.batch))
        self.conn.execute("UPDATE records SET state = %s, reason = %s, batch = %s WHERE gw = %s AND seq BETWEEN %s "
                          "AND %s AND state = 'received'", (state, reason, b.batch, b.gw, b.first_seq, b.last_seq))

    def counts(self) -> dict[str, int]:
        return dict(self.conn.execute("SELECT state, count(*) FROM records GROUP BY state").fetchall())


def record_rows(items: Iterable[tuple[str, int, str, int, str, bytes, bytes]]) -> list[RecordRow]:
    return [RecordRow(*i) for i in items]
