"""A reading's proof bundle, read from the journal: for ``tiyi proof export`` and the admin API alike."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from anchoring.bundle import RollupProof, build_bundle
from anchoring.receipt import AnchorReceipt
from edge.manifest import SignedManifest
from edge.rollup import Rollup
from gateway.config import GatewayConfig
from gateway.errors import GatewayError
from gateway.journal import SqliteJournal


class NotInBatch(GatewayError, LookupError):
    """The seq is not in any closed batch (yet)."""


@dataclass(frozen=True, slots=True)
class Proof:
    bundle: dict[str, Any]
    batch: int
    anchored: bool


def proof_for_seq(cfg: GatewayConfig, journal: SqliteJournal, seq: int, public_key_pem: Callable[[], str]) -> Proof:
    """Runs where the journal may be read (its thread, in a running gateway); the key is read only once the
    seq is found in a batch (a missing record is the first thing to report)."""
    found = journal.batches.batch_for_seq(seq)
    if found is None:
        raise NotInBatch(f"seq {seq} is not in any closed batch yet (next seq is {journal.records.next_seq})")
    signed = SignedManifest.from_bytes(found[0])
    m = signed.manifest
    records = journal.records.read(m.first_seq, m.last_seq)
    rollups = []
    for r in cfg.rollups:
        held = journal.anchors.rollup_for_batch(r.target, m.batch)
        if held is None:
            continue  # not rolled up yet: the bundle proves against the batch anchor only
        number, first, last, rreceipt = held
        rollup = Rollup(cfg.gateway_id, r.target, number, first, tuple(journal.batches.batch_roots(first, last)))
        rollups.append(RollupProof(rollup, None if rreceipt is None else AnchorReceipt.from_bytes(rreceipt)))
    receipt = None if found[1] is None else AnchorReceipt.from_bytes(found[1])
    return Proof(build_bundle(seq, records, signed, receipt, public_key_pem(), rollups), m.batch, receipt is not None)
