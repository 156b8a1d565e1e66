"""The verifying store in PostgreSQL: where ingest instances meet.

Every row is keyed by what the contract keys it by — records by (gw, seq), batches by (gw, batch) — so a redelivered
message never makes a second row, and bytes that differ from the stored ones for the same key are kept as evidence
(``record_conflicts``, ``problems``) instead of replacing them. A record's ``state`` (read from its batch row, to
which proving links it: ``records`` is a view over ``record_rows`` and ``batches``) moves received → proven (the
batch's Merkle root over the stored records matches its manifest, signed under a trusted key) → anchored (a chain
confirmed the batch's anchor) → final, or to rejected with the ``Reason`` from ``anchoring.findings``. Whichever
instance stored the last piece of a batch proves it, from the rows: no instance needs to have seen the whole batch.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from edge.manifest import GENESIS_PREV
from edge.record import Record
from ingest.errors import StoreError

SCHEMA_VERSION = 4
LEAF_BYTES = 32  # an SM3 digest
_RECORD_TYPES = ["text", "int8", "text", "int8", "text", "bytea", "bytea"]

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
    # Chain states, gaps and late join: when each batch and head was first stored (gaps are judged by age), the
    # chain's record of each anchor, batches released to be proven without their predecessor (a gap, or the point
    # a late join starts from), receipts asked of the chain once each, and problems that must be stated once
    # however many instances see them.
    2: """
ALTER TABLE batches ADD COLUMN received_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN released boolean NOT NULL DEFAULT false, ADD COLUMN join_prev bytea,
    ADD COLUMN prev_checked boolean NOT NULL DEFAULT false, ADD COLUMN anchorer bytea,
    ADD COLUMN anchor_block_hash bytea;
CREATE INDEX batches_anchored ON batches (gw, batch) WHERE state = 'anchored';
CREATE INDEX batches_unanchored ON batches (gw, batch) WHERE state = 'proven';
ALTER TABLE heads ADD COLUMN seen_at timestamptz NOT NULL DEFAULT now(), ADD COLUMN checked text;
ALTER TABLE receipts ADD COLUMN checked text;
CREATE INDEX receipts_unchecked ON receipts (gw, batch) WHERE checked IS NULL;
-- when the row was written (not when its transaction began): what latency is measured to
ALTER TABLE records ALTER COLUMN received_at SET DEFAULT clock_timestamp();
CREATE TABLE gateways (
    gw text PRIMARY KEY, joined_batch bigint, joined_by text, chain_ahead bigint, chain_ahead_since timestamptz);
ALTER TABLE problems ADD COLUMN once text;
CREATE UNIQUE INDEX problems_once ON problems (once) WHERE once IS NOT NULL;
""",
    # Throughput: every record's state changes three times (proven, anchored, final). No query reads records by
    # state (they go by (gw, seq) ranges), so the partial index on it only made each change rewrite every index;
    # without it, and with half of each page left free (room for a new version of every row in it, since a batch
    # settles all its rows at once), a state change is a heap-only (HOT) update that touches no index.
    3: """
DROP INDEX IF EXISTS records_state;
ALTER TABLE records SET (fillfactor = 50);
""",
    # A record's settled state lives on its batch: proving a batch links its records to it once (``batch``), and
    # anchoring, finalising or rejecting it later touch only the batch row. ``records`` becomes a view with the old
    # table's columns in their old order, so every query that read a record's state reads the same answer. A
    # database whose records disagree with their batch (which no earlier version wrote) is refused, not guessed at.
    4: """
DO $$ BEGIN
  IF EXISTS (SELECT 1 FROM records r LEFT JOIN batches b ON b.gw = r.gw AND b.batch = r.batch
             WHERE r.state IS DISTINCT FROM coalesce(b.state, 'received') OR r.reason IS DISTINCT FROM b.reason) THEN
    RAISE EXCEPTION 'stored records whose state or reason differs from their batch''s: not migrated';
  END IF;
END $$;
ALTER TABLE records RENAME TO record_rows;
ALTER TABLE record_rows DROP COLUMN state, DROP COLUMN reason;
CREATE VIEW records AS
  SELECT r.gw, r.seq, r.dev, r.t, r.kind, r.data, r.leaf, coalesce(b.state, 'received') AS state, b.reason,
         r.batch, r.conflict, r.received_at
  FROM record_rows r LEFT JOIN batches b ON b.gw = r.gw AND b.batch = r.batch;
""",
}


# A record as stored, fields in the table's column order (so a row is written to ``COPY`` as it is): gw, seq, dev,
# t, kind, data, leaf. A plain tuple, not a NamedTuple: one is built per record on the hot path, and a NamedTuple's
# constructor costs three times a tuple display (0.44 vs 0.15 us here).
RecordRow = tuple[str, int, str, int, str, bytes, bytes]
BIGINT_END = 1 << 63  # PostgreSQL's bigint holds seq and t below this (the contract allows uints up to 2**64 - 1)

# PostgreSQL's binary COPY format: a signature, flags and an empty header extension; per row the number of fields,
# then each field as its length and its bytes (bigint: 8 bytes, big-endian); -1 as a field count ends the data.
_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
_COPY_TRAILER = b"\xff\xff"
_FIELDS_7 = struct.pack(">h", 7)
_LEN_8 = struct.pack(">i", 8)
_LEN_LEAF = struct.pack(">i", LEAF_BYTES)
_I32 = struct.Struct(">i").pack
_I64 = struct.Struct(">q").pack


def copy_block(rows: Sequence[RecordRow]) -> bytes:
    """``rows`` as the whole input of ``COPY record_rows (gw, seq, dev, t, kind, data, leaf) FROM STDIN (FORMAT
    BINARY)``. psycopg's ``write_row`` does the same through a dumper per value (~2.5 us a row here); this costs
    about a third of that: a row is three cached text fields, two bigints, the record and its leaf. Raises
    ``StoreError`` for a seq or t beyond bigint or a leaf that is not 32 bytes (the caller checks them first)."""
    texts: dict[str, bytes] = {}

    def text(s: str) -> bytes:
        b = s.encode()
        got = texts[s] = _I32(len(b)) + b
        return got

    parts = [_COPY_SIGNATURE]
    put = parts.extend
    try:
        for gw, seq, dev, t, kind, data, leaf in rows:
            if len(leaf) != LEAF_BYTES:
                raise StoreError(f"a leaf of {gw} seq {seq} is not {LEAF_BYTES} bytes")
            put(
                (
                    _FIELDS_7,
                    texts.get(gw) or text(gw),
                    _LEN_8,
                    _I64(seq),
                    texts.get(dev) or text(dev),
                    _LEN_8,
                    _I64(t),
                    texts.get(kind) or text(kind),
                    _I32(len(data)),
                    data,
                    _LEN_LEAF,
                    leaf,
                )
            )
    except struct.error as exc:
        raise StoreError(f"a record's seq or t is beyond PostgreSQL's bigint: {exc}") from exc
    parts.append(_COPY_TRAILER)
    return b"".join(parts)


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


@dataclass(frozen=True, slots=True)
class Ready:
    """A batch whose records are all stored: what ``judge_batch`` needs, from the rows."""

    batch: BatchRow
    leaves: list[bytes]  # the records' leaf hashes in seq order, as stored with them
    announced_pem: str | None
    prev: bytes | None  # the digest the batch's prev must equal; None: unknown (released across a gap)
    anchor: tuple[int, bytes] | None  # (block, anchorer) the chain confirmed, if it has


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
            try:
                conn.execute(_MIGRATIONS[v].encode())
            except psycopg.errors.RaiseException as exc:
                raise StoreError(f"cannot upgrade the schema to version {v}: {exc.diag.message_primary}") from exc
            conn.execute("INSERT INTO schema_version VALUES (%s)", (v,))
    return SCHEMA_VERSION


class Store:
    """Writes for one ingest instance (one connection, used from one thread)."""

    def __init__(self, conn: psycopg.Connection[Any], instance: str) -> None:
        self.conn = conn
        self.instance = instance

    def problem(
        self,
        gw: str | None,
        reason: str,
        message: str,
        seq: int | None = None,
        batch: int | None = None,
        once: str | None = None,
    ) -> bool:
        """Record a problem; with ``once``, only the first instance to state it does (False for the others)."""
        return bool(
            self.conn.execute(
                "INSERT INTO problems (gw, reason, message, seq, batch, instance, once) VALUES (%s,%s,%s,%s,%s,%s,%s) "
                "ON CONFLICT (once) WHERE once IS NOT NULL DO NOTHING",
                (gw, reason, message, seq, batch, self.instance, once),
            ).rowcount
        )

    def records(self, rows: Sequence[RecordRow]) -> int:
        """Insert new records; a key already stored with other bytes is kept as evidence and flagged. Returns the
        number of conflicts found."""
        if not rows:
            return 0
        if self._copy_new(rows):  # a key twice among the rows fails the COPY like a stored one: the staged path
            return 0
        cur = self.conn.cursor()
        cur.execute(
            "CREATE TEMP TABLE IF NOT EXISTS incoming (gw text, seq bigint, dev text, t bigint, kind text, "
            "data bytea, leaf bytea) ON COMMIT DELETE ROWS"
        )
        with cur.copy("COPY incoming (gw, seq, dev, t, kind, data, leaf) FROM STDIN") as copy:
            for r in rows:
                copy.write_row(r)
        inserted = cur.execute(
            "INSERT INTO record_rows (gw, seq, dev, t, kind, data, leaf) "
            "SELECT DISTINCT ON (gw, seq) gw, seq, dev, t, kind, data, leaf FROM incoming "
            "ON CONFLICT (gw, seq) DO NOTHING"
        ).rowcount
        if inserted == len(rows) and len({(r[0], r[1]) for r in rows}) == len(rows):
            cur.execute("DELETE FROM incoming")
            return 0  # every key new and none twice: nothing can conflict
        conflicts = cur.execute(
            "SELECT DISTINCT i.gw, i.seq, i.leaf, i.data FROM incoming i JOIN record_rows r USING (gw, seq) "
            "WHERE r.leaf <> i.leaf"
        ).fetchall()
        cur.execute("DELETE FROM incoming")
        for gw, seq, leaf, data in conflicts:
            inserted = cur.execute(
                "INSERT INTO record_conflicts (gw, seq, leaf, data) VALUES (%s,%s,%s,%s) ON CONFLICT DO NOTHING",
                (gw, seq, leaf, data),
            ).rowcount
            cur.execute("UPDATE record_rows SET conflict = true WHERE gw = %s AND seq = %s", (gw, seq))
            if inserted:
                self.problem(gw, "conflicting_duplicate", f"two different records claim seq {seq}", seq=seq)
        return len(conflicts)

    def _copy_new(self, rows: Sequence[RecordRow]) -> bool:
        """The usual case, in one pass: ``COPY`` straight into ``records``. False (and nothing written) when a key is
        already stored — a redelivery or a conflicting copy — which the staged path then sorts out."""
        block = copy_block(rows)  # binary: bytes travel as they are, not as hex text
        try:
            with (
                self.conn.transaction(),  # a savepoint inside the caller's transaction
                self.conn.cursor() as cur,
                cur.copy("COPY record_rows (gw, seq, dev, t, kind, data, leaf) FROM STDIN (FORMAT BINARY)") as copy,
            ):
                copy.write(block)
        except psycopg.errors.UniqueViolation:
            return False
        return True

    def batch(self, b: BatchRow) -> bool:
        """Store a manifest; a different one for the same batch number is evidence (False)."""
        got = self.conn.execute(
            "INSERT INTO batches (gw, batch, first_seq, last_seq, count, root, prev, digest, payload) "
            "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (gw, batch) DO NOTHING",
            (b.gw, b.batch, b.first_seq, b.last_seq, b.count, b.root, b.prev, b.digest, b.payload),
        ).rowcount
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
        got = self.conn.execute(
            "INSERT INTO rollups VALUES (%s,%s,%s,%s) ON CONFLICT DO NOTHING", (gw, target, number, payload)
        ).rowcount
        if not got:
            row = self.conn.execute(
                "SELECT payload FROM rollups WHERE gw=%s AND target=%s AND number=%s", (gw, target, number)
            ).fetchone()
            if row is not None and bytes(row[0]) != payload:
                self.problem(gw, "rollup_mismatch", f"two different roll-ups claim {target} #{number}")

    def head(self, gw: str, batch: int, payload: bytes) -> None:
        self.conn.execute("INSERT INTO heads VALUES (%s,%s,%s) ON CONFLICT DO NOTHING", (gw, payload, batch))

    def key(self, gw: str, key_id: str, pem: str) -> None:
        self.conn.execute(
            "INSERT INTO keys VALUES (%s,%s,%s) ON CONFLICT (gw) DO UPDATE SET key_id = EXCLUDED.key_id, "
            "pem = EXCLUDED.pem",
            (gw, key_id, pem),
        )

    # ---------------------------------------------------------------- proving from the rows
    def ready_batches(self, limit: int, need_anchor: bool = False) -> list[Ready]:
        """Batches still 'received' whose records are all stored, locked for this instance (others skip them).

        A batch waits for the one before it, so the prev chain is checked — unless it was *released*: its
        predecessor never came (a gap, stated as a problem) or it is where a late join starts. ``need_anchor``
        (registry trust): it also waits until the chain has confirmed its anchor, the block its key is judged at.
        One round trip however many batches: each batch with the gateway's announced key, the previous manifest's
        digest, and its records' count and leaves from one pass over them (in seq order, as one value: a row per
        batch, not per record)."""
        rows = self.conn.execute(
            "SELECT b.gw, b.batch, b.first_seq, b.last_seq, b.count, b.root, b.prev, b.digest, b.payload, "
            "b.released, b.join_prev, b.anchor_block, b.anchorer, (SELECT k.pem FROM keys k WHERE k.gw = b.gw), "
            "(SELECT p.digest FROM batches p WHERE p.gw = b.gw AND p.batch = b.batch - 1), s.leaves "
            "FROM batches b CROSS JOIN LATERAL (SELECT count(*) AS n, string_agg(r.leaf, ''::bytea ORDER BY r.seq) "
            "AS leaves FROM record_rows r WHERE r.gw = b.gw AND r.seq BETWEEN b.first_seq AND b.last_seq) s "
            "WHERE b.state = 'received' AND NOT b.conflict "
            "AND (b.batch = 1 OR b.released OR EXISTS (SELECT 1 FROM batches p WHERE p.gw = b.gw AND "
            "p.batch = b.batch - 1)) AND (NOT %s OR b.anchor_block IS NOT NULL) AND s.n = b.count "
            "ORDER BY b.gw, b.batch LIMIT %s FOR UPDATE OF b SKIP LOCKED",
            (need_anchor, limit),
        ).fetchall()
        leaves: list[list[bytes]] = []
        for row in rows:
            blob = bytes(row[15])
            if len(blob) % LEAF_BYTES:
                raise StoreError(f"a stored leaf of {row[0]} is not {LEAF_BYTES} bytes")
            leaves.append([blob[k : k + LEAF_BYTES] for k in range(0, len(blob), LEAF_BYTES)])
        out = []
        for row, batch_leaves in zip(rows, leaves, strict=True):
            b = BatchRow(
                row[0], row[1], row[2], row[3], row[4], bytes(row[5]), bytes(row[6]), bytes(row[7]), bytes(row[8])
            )
            if b.batch == 1:
                prev: bytes | None = GENESIS_PREV
            elif row[14] is not None:
                prev = bytes(row[14])
            else:
                prev = bytes(row[10]) if row[10] is not None else None  # a join point's digest, or unknown
            anchor = None if row[11] is None else (int(row[11]), bytes(row[12]))
            out.append(Ready(b, batch_leaves, row[13], prev, anchor))
        return out

    def successor(self, gw: str, batch: int) -> tuple[str, bytes, bool] | None:
        """(state, prev, prev_checked) of batch ``batch + 1`` when stored."""
        row = self.conn.execute(
            "SELECT state, prev, prev_checked FROM batches WHERE gw = %s AND batch = %s", (gw, batch + 1)
        ).fetchone()
        return None if row is None else (row[0], bytes(row[1]), bool(row[2]))

    def chain_checked(self, gw: str, batch: int) -> None:
        self.conn.execute("UPDATE batches SET prev_checked = true WHERE gw = %s AND batch = %s", (gw, batch))

    def reject(self, gw: str, batch: int, reason: str) -> None:
        """A batch already proven turns out to be rejected (its late predecessor does not chain to it): its records,
        linked to it when it was proven, are rejected with it."""
        self.conn.execute(
            "UPDATE batches SET state = 'rejected', reason = %s WHERE gw = %s AND batch = %s", (reason, gw, batch)
        )

    def alternatives(self, b: BatchRow) -> list[tuple[int, bytes, bytes]]:
        """(seq, data, leaf) of conflicting copies kept as evidence for this batch's records."""
        return [
            (q, bytes(d), bytes(lf))
            for q, d, lf in self.conn.execute(
                "SELECT seq, data, leaf FROM record_conflicts WHERE gw = %s AND seq BETWEEN %s AND %s ORDER BY seq",
                (b.gw, b.first_seq, b.last_seq),
            )
        ]

    def swap(self, gw: str, seq: int, data: bytes, leaf: bytes) -> None:
        """The copy the signed batch proves becomes the record; the one stored first becomes the evidence."""
        old = self.conn.execute("SELECT data, leaf FROM record_rows WHERE gw = %s AND seq = %s", (gw, seq)).fetchone()
        assert old is not None
        self.conn.execute("DELETE FROM record_conflicts WHERE gw = %s AND seq = %s AND leaf = %s", (gw, seq, leaf))
        self.conn.execute(
            "INSERT INTO record_conflicts (gw, seq, leaf, data) VALUES (%s,%s,%s,%s) ON CONFLICT DO NOTHING",
            (gw, seq, bytes(old[1]), bytes(old[0])),
        )
        rec = Record.from_bytes(data)
        self.conn.execute(
            "UPDATE record_rows SET data = %s, leaf = %s, dev = %s, t = %s, kind = %s WHERE gw = %s AND seq = %s",
            (data, leaf, rec.dev, rec.t, rec.kind, gw, seq),
        )

    def settle(
        self, b: BatchRow, state: str, reason: str | None, key_source: str | None, prev_checked: bool = False
    ) -> None:
        """Mark a batch proven (or anchored, when the chain already confirmed it), or rejected, and link to it its
        records no other batch has claimed: from then on they read their state from the batch row."""
        self.conn.execute(  # one round trip for both
            "WITH settled AS (UPDATE batches SET state = %(state)s, reason = %(reason)s, key_source = %(key)s, "
            "prev_checked = %(checked)s WHERE gw = %(gw)s AND batch = %(batch)s RETURNING gw) "
            "UPDATE record_rows SET batch = %(batch)s WHERE gw = %(gw)s "
            "AND seq BETWEEN %(first)s AND %(last)s AND batch IS NULL",
            {
                "state": state,
                "reason": reason,
                "key": key_source,
                "checked": prev_checked,
                "gw": b.gw,
                "batch": b.batch,
                "first": b.first_seq,
                "last": b.last_seq,
            },
        )

    # ---------------------------------------------------------------- the chain: anchored, then final
    def unchecked_receipts(self, limit: int) -> list[tuple[str, int, bytes, bytes, BatchRow]]:
        """Receipts not yet asked of the chain whose batch is stored and not rejected, locked for this instance:
        (gw, batch, tx, receipt payload, the batch)."""
        rows = self.conn.execute(
            "SELECT r.gw, r.batch, r.tx, r.payload, b.first_seq, b.last_seq, b.count, b.root, b.prev, b.digest, "
            "b.payload FROM receipts r JOIN batches b USING (gw, batch) WHERE r.checked IS NULL "
            "AND b.state <> 'rejected' AND NOT b.conflict ORDER BY r.gw, r.batch LIMIT %s "
            "FOR UPDATE OF r SKIP LOCKED",
            (limit,),
        ).fetchall()
        return [
            (g, n, bytes(tx), bytes(p), BatchRow(g, n, f, la, c, bytes(root), bytes(prev), bytes(dg), bytes(bp)))
            for g, n, tx, p, f, la, c, root, prev, dg, bp in rows
        ]

    def receipt_checked(self, gw: str, batch: int, tx: bytes, outcome: str) -> None:
        self.conn.execute(
            "UPDATE receipts SET checked = %s WHERE gw = %s AND batch = %s AND tx = %s", (outcome, gw, batch, tx)
        )

    def set_anchor(self, gw: str, batch: int, tx: bytes, block: int, block_hash: bytes, anchorer: bytes) -> None:
        """The chain confirmed this batch's anchor: keep the first confirmed one; a proven batch becomes anchored."""
        self.conn.execute(
            "UPDATE batches SET anchor_tx = %s, anchor_block = %s, anchor_block_hash = %s, "
            "anchorer = %s WHERE gw = %s AND batch = %s AND anchor_tx IS NULL",
            (tx, block, block_hash, anchorer, gw, batch),
        )
        self._advance(gw, batch, "proven", "anchored")

    def _advance(self, gw: str, batch: int, frm: str, to: str) -> None:
        """The batch row alone: its records read their state from it."""
        self.conn.execute(
            "UPDATE batches SET state = %s WHERE gw = %s AND batch = %s AND state = %s", (to, gw, batch, frm)
        )

    def anchored(self, limit: int) -> list[tuple[str, int, int, bytes]]:
        """Anchored batches not yet final, locked: (gw, batch, anchor block, the confirmed receipt's payload)."""
        rows = self.conn.execute(
            "SELECT b.gw, b.batch, b.anchor_block, r.payload FROM batches b JOIN receipts r ON r.gw = b.gw AND "
            "r.batch = b.batch AND r.tx = b.anchor_tx WHERE b.state = 'anchored' ORDER BY b.anchor_block "
            "LIMIT %s FOR UPDATE OF b SKIP LOCKED",
            (limit,),
        ).fetchall()
        return [(g, n, int(blk), bytes(p)) for g, n, blk, p in rows]

    def finalize(self, gw: str, batch: int) -> None:
        self._advance(gw, batch, "anchored", "final")

    def unanchor(self, gw: str, batch: int) -> None:
        """The chain no longer holds the anchor where it did (a reorganisation): back to proven, asked again."""
        self.conn.execute(
            "UPDATE batches SET anchor_tx = NULL, anchor_block = NULL, anchor_block_hash = NULL, "
            "anchorer = NULL WHERE gw = %s AND batch = %s",
            (gw, batch),
        )
        self.conn.execute("UPDATE receipts SET checked = NULL WHERE gw = %s AND batch = %s", (gw, batch))
        self._advance(gw, batch, "anchored", "proven")

    # ---------------------------------------------------------------- gaps, truncation, late join
    def orphans(self) -> list[tuple[str, int, float, int | None]]:
        """Unreleased batches still waiting for a predecessor that is not stored: (gw, batch, age in seconds, the
        highest batch stored below it or None)."""
        return [
            (g, n, float(age), lower)
            for g, n, age, lower in self.conn.execute(
                "SELECT b.gw, b.batch, extract(epoch FROM now() - b.received_at), "
                "(SELECT max(l.batch) FROM batches l WHERE l.gw = b.gw AND l.batch < b.batch) "
                "FROM batches b WHERE b.state = 'received' AND NOT b.released AND b.batch > 1 AND NOT EXISTS "
                "(SELECT 1 FROM batches p WHERE p.gw = b.gw AND p.batch = b.batch - 1) ORDER BY b.gw, b.batch"
            )
        ]

    def release(self, gw: str, batch: int, join_prev: bytes | None) -> None:
        self.conn.execute(
            "UPDATE batches SET released = true, join_prev = %s WHERE gw = %s AND batch = %s", (join_prev, gw, batch)
        )

    def joined(self, gw: str, batch: int, by: str) -> None:
        self.conn.execute(
            "INSERT INTO gateways (gw, joined_batch, joined_by) VALUES (%s,%s,%s) ON CONFLICT (gw) DO "
            "UPDATE SET joined_batch = EXCLUDED.joined_batch, joined_by = EXCLUDED.joined_by "
            "WHERE gateways.joined_batch IS NULL",
            (gw, batch, by),
        )

    def incomplete(self, age_s: float) -> list[BatchRow]:
        """Batches waiting longer than ``age_s`` for records that have not come."""
        rows = self.conn.execute(
            "SELECT b.gw, b.batch, b.first_seq, b.last_seq, b.count, b.root, b.prev, b.digest, b.payload "
            "FROM batches b WHERE b.state = 'received' AND NOT b.conflict AND b.received_at < now() - make_interval("
            "secs => %s) AND b.count > (SELECT count(*) FROM record_rows r WHERE r.gw = b.gw AND r.seq BETWEEN "
            "b.first_seq AND b.last_seq)",
            (age_s,),
        ).fetchall()
        return [
            BatchRow(r[0], r[1], r[2], r[3], r[4], bytes(r[5]), bytes(r[6]), bytes(r[7]), bytes(r[8])) for r in rows
        ]

    def missing_runs(self, gw: str, first: int, last: int) -> list[tuple[int, int]]:
        """The runs of ``first..last`` with no stored record (work grows with the stored rows, not the span)."""
        out: list[tuple[int, int]] = []
        expect = first
        for (seq,) in self.conn.execute(
            "SELECT seq FROM record_rows WHERE gw = %s AND seq BETWEEN %s AND %s ORDER BY seq", (gw, first, last)
        ):
            if seq > expect:
                out.append((expect, seq - 1))
            expect = seq + 1
        if expect <= last:
            out.append((expect, last))
        return out

    def heads_to_check(self) -> list[tuple[str, bytes, float]]:
        """Signed heads not yet judged: (gw, payload, age in seconds)."""
        return [
            (g, bytes(p), float(a))
            for g, p, a in self.conn.execute(
                "SELECT gw, payload, extract(epoch FROM now() - seen_at) FROM heads WHERE checked IS NULL"
            )
        ]

    def head_checked(self, gw: str, payload: bytes, outcome: str) -> None:
        self.conn.execute("UPDATE heads SET checked = %s WHERE gw = %s AND payload = %s", (outcome, gw, payload))

    def batch_digest(self, gw: str, batch: int) -> bytes | None:
        row = self.conn.execute("SELECT digest FROM batches WHERE gw = %s AND batch = %s", (gw, batch)).fetchone()
        return None if row is None else bytes(row[0])

    def top_batch(self, gw: str) -> int:
        row = self.conn.execute("SELECT coalesce(max(batch), 0) FROM batches WHERE gw = %s", (gw,)).fetchone()
        return int(row[0]) if row else 0

    def gateway_ids(self) -> list[str]:
        return [g for (g,) in self.conn.execute("SELECT DISTINCT gw FROM batches ORDER BY gw")]

    def anchorers(self, gw: str) -> set[bytes]:
        return {
            bytes(a)
            for (a,) in self.conn.execute(
                "SELECT DISTINCT anchorer FROM batches WHERE gw = %s AND anchorer IS NOT NULL", (gw,)
            )
        }

    def chain_ahead(self, gw: str, latest: int | None) -> float | None:
        """Note that the chain holds batch ``latest`` beyond the stream (None: it does not); returns for how many
        seconds it has been ahead."""
        if latest is None:
            self.conn.execute("UPDATE gateways SET chain_ahead = NULL, chain_ahead_since = NULL WHERE gw = %s", (gw,))
            return None
        self.conn.execute(
            "INSERT INTO gateways (gw, chain_ahead, chain_ahead_since) VALUES (%s, %s, now()) "
            "ON CONFLICT (gw) DO UPDATE SET chain_ahead = EXCLUDED.chain_ahead, chain_ahead_since = "
            "coalesce(gateways.chain_ahead_since, now())",
            (gw, latest),
        )
        row = self.conn.execute(
            "SELECT extract(epoch FROM now() - chain_ahead_since) FROM gateways WHERE gw = %s", (gw,)
        ).fetchone()
        return float(row[0]) if row else 0.0

    def counts(self) -> dict[str, int]:
        return dict(self.conn.execute("SELECT state, count(*) FROM records GROUP BY state").fetchall())
