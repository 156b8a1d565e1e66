"""The journal's tables and their migrations: one SQLite file, whose schema only this module names."""

from __future__ import annotations

SCHEMA_VERSION = 3  # 3: the audience tables (gateway/journal/views.py)
BATCH_QUEUE = "*batch"  # the per-batch anchor queue's key (no target name starts with '*')

ADD_JOB = (
    "INSERT INTO anchor_jobs(queue, number, first_batch, last_batch, root, count, state) "
    "VALUES (?, ?, ?, ?, ?, ?, 'pending')"
)
JOB_COLUMNS = "number, root, count, state, raw_tx, tx_hash, block_number, block_hash, attempts"

# Schema 1 kept batch anchors and roll-up anchors in two tables with the same columns: one queue now.
MIGRATE_1_TO_2: list[tuple[str, tuple[str, ...]]] = [
    (
        "INSERT INTO anchor_jobs(queue, number, first_batch, last_batch, root, count, state, raw_tx, tx_hash, receipt, "
        "block_number, block_hash, attempts, published) SELECT ?, batch, batch, batch, root, count, state, raw_tx, "
        "tx_hash, receipt, block_number, block_hash, attempts, published FROM anchors",
        (BATCH_QUEUE,),
    ),
    (
        "INSERT INTO anchor_jobs(queue, number, first_batch, last_batch, root, count, state, raw_tx, tx_hash, receipt, "
        "block_number, block_hash, attempts, published) SELECT target, rollup, first_batch, last_batch, root, count, "
        "state, raw_tx, tx_hash, receipt, block_number, block_hash, attempts, published FROM rollups",
        (),
    ),
    ("DROP TABLE anchors", ()),
    ("DROP TABLE rollups", ()),
    ("UPDATE meta SET value = '2' WHERE key = 'schema'", ()),
]

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY,
    dev TEXT NOT NULL,
    t INTEGER NOT NULL,
    data BLOB NOT NULL,
    delivered INTEGER NOT NULL DEFAULT 0
);
DROP INDEX IF EXISTS records_undelivered;
-- Delivered seqs as ranges, not a flag per record: marking a delivery rewrites one tiny row instead of
-- the record pages and an index (write amplification). The records.delivered column is legacy.
CREATE TABLE IF NOT EXISTS delivered (first INTEGER PRIMARY KEY, last INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    batch INTEGER PRIMARY KEY,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    digest BLOB NOT NULL,
    root BLOB NOT NULL,
    signed BLOB NOT NULL,
    published INTEGER NOT NULL DEFAULT 0
);
-- One anchor queue for every target: the per-batch target (queue BATCH_QUEUE, number = batch, first = last =
-- batch) and each roll-up target (queue = its name, number = roll-up, first..last = the batches it covers).
CREATE TABLE IF NOT EXISTS anchor_jobs (
    queue TEXT NOT NULL,
    number INTEGER NOT NULL,
    first_batch INTEGER NOT NULL,
    last_batch INTEGER NOT NULL,
    root BLOB NOT NULL,
    count INTEGER NOT NULL,
    state TEXT NOT NULL,
    raw_tx BLOB,
    tx_hash BLOB,
    receipt BLOB,
    block_number INTEGER,
    block_hash BLOB,
    attempts INTEGER NOT NULL DEFAULT 0,
    published INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (queue, number)
);
"""

VIEW_SCHEMA = """
-- Each audience's view of each source batch from first_n on: the signed view manifest, the ledger head it
-- was built at, and whether its records and then its manifest were acknowledged by the broker.
CREATE TABLE IF NOT EXISTS views (
    aud TEXT NOT NULL,
    n INTEGER NOT NULL,
    consent_n INTEGER NOT NULL,
    signed BLOB NOT NULL,
    records_published INTEGER NOT NULL DEFAULT 0,
    published INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (aud, n)
);
-- Per audience: the first source batch it gets a view of (the next batch when it was first configured).
CREATE TABLE IF NOT EXISTS audiences (
    aud TEXT PRIMARY KEY,
    first_n INTEGER NOT NULL
);
-- Per audience and purpose: the consent ledger number up to which that purpose's events were acknowledged on
-- the audience's consent topic. Keyed by the purpose too: an audience whose purpose is changed has published
-- none of the new purpose's events, whatever number the old purpose's events reached.
CREATE TABLE IF NOT EXISTS audience_consent (
    aud TEXT NOT NULL,
    purpose TEXT NOT NULL,
    published INTEGER NOT NULL,
    PRIMARY KEY (aud, purpose)
);
"""

# Schema 2 had no audience tables; the journal's script creates them (IF NOT EXISTS) before this runs.
MIGRATE_2_TO_3: list[tuple[str, tuple[str, ...]]] = [
    *((stmt.strip(), ()) for stmt in VIEW_SCHEMA.split(";") if "CREATE" in stmt),
    ("UPDATE meta SET value = '3' WHERE key = 'schema'", ()),
]
