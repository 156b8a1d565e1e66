"""The anchoring stage's driver, built alone with a scripted chain: it asks one question per job, stores the
lifecycle's step in the journal and announces it; no node, no broker."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from anchoring.chain import AnchorInfo, AnchorKind, SignedTx, TxReceipt
from anchoring.errors import AlreadyAnchored, StaleTransaction
from anchoring.lifecycle import AnchorState, Event, Step
from anchoring.receipt import AnchorReceipt
from edge import cbor
from edge.manifest import GENESIS_PREV, build_manifest, sign_manifest
from edge.record import Record
from edge.sm2 import generate_signer
from gateway.journal import SqliteJournal
from gateway.stages.anchoring import AnchorDriver, AnchorTarget
from gateway.stages.ports import Health, Wakes, Worker

SIGNER = generate_signer()
BLOCK_HASH = b"\xb1" * 32


@dataclass
class ScriptedChain:
    """Answers as a chain would, as told: mined or reverted receipts, stale sends, roots already anchored."""

    receipts_ok: bool | None = True  # None: not mined yet
    stale: bool = False
    already: tuple[AnchorInfo, TxReceipt] | None = None
    sent: list[bytes] = field(default_factory=list)
    prepared: int = 0
    chain_id: int = 20200
    contract: bytes = b"\x11" * 20
    account: bytes = b"\xaa" * 20

    def prepare_anchor(self, kind: AnchorKind, gw: str, root: bytes, number: int, count: int) -> SignedTx:
        if self.already is not None:
            raise AlreadyAnchored("the contract already holds this root")
        self.prepared += 1
        return SignedTx(b"raw-%d" % self.prepared, bytes([self.prepared]) * 32, self.prepared)

    def send_raw(self, raw: bytes) -> None:
        if self.stale:
            self.stale = False
            raise StaleTransaction("nonce too low")
        self.sent.append(raw)

    def receipt(self, tx_hash: bytes) -> TxReceipt | None:
        if self.receipts_ok is None:
            return None
        return TxReceipt(tx_hash, self.receipts_ok, 40, BLOCK_HASH)

    def block_number(self) -> int:
        return 40

    def own_anchor(self, kind: AnchorKind, gw: str, root: bytes) -> tuple[AnchorInfo, TxReceipt] | None:
        return self.already

    def resync_nonce(self) -> None:
        pass


class Notes:
    def __init__(self) -> None:
        self.states: list[str] = []

    async def note(self, payload: bytes) -> None:
        self.states.append(cbor.loads(payload)["state"])


def journal_with_a_batch(tmp_path: Path) -> SqliteJournal:
    journal = SqliteJournal.open(tmp_path / "j.sqlite3", "gw-1")
    records = [
        Record(
            gw="gw-1",
            seq=s,
            dev="d",
            t=1_700_000_000_000 + s,
            kind="heart_rate",
            val={"heart_rate": 60},
            raw=b"\x00\x3c",
            salt=bytes(16),
        )
        for s in (1, 2, 3)
    ]
    journal.records.append(records)
    m = build_manifest("gw-1", 1, 1, [bytes(r) for r in records], GENESIS_PREV, 1)
    journal.batches.add_batch(m, sign_manifest(m, SIGNER))
    return journal


def drive(
    tmp_path: Path, chain: ScriptedChain, passes: int = 1, stored: Step | None = None
) -> tuple[SqliteJournal, Health, Notes]:
    journal, health, notes = journal_with_a_batch(tmp_path), Health(), Notes()
    if stored is not None:  # what an earlier life left in the queue
        journal.anchors.advance(1, stored)
    target = AnchorTarget("zhuhai", "*batch", AnchorKind.BATCH, chain, 0, 0.1)  # type: ignore[arg-type]
    worker = Worker("test-journal")
    driver = AnchorDriver("gw-1", target, journal.anchors, worker, health, notes, Wakes())

    async def run() -> None:
        for _ in range(passes):
            await driver.advance()

    asyncio.run(run())
    worker.shutdown()
    target.worker.shutdown()
    return journal, health, notes


def only_job(journal: SqliteJournal) -> Any:
    (job,) = journal.anchors.anchor_jobs(list(AnchorState))
    return job


def test_one_pass_takes_a_batch_from_pending_to_final_on_a_bft_chain(tmp_path: Path) -> None:
    chain = ScriptedChain()
    journal, health, notes = drive(tmp_path, chain, passes=2)
    job = only_job(journal)
    assert job.state is AnchorState.FINAL and chain.sent == [b"raw-1"]
    assert notes.states == ["signed", "submitted", "included", "final"]  # each step announced once, in order
    ((number, receipt),) = journal.anchors.unpublished_receipts()
    r = AnchorReceipt.from_bytes(receipt)
    assert (number, r.number, r.count, r.tx, r.block, r.block_hash) == (1, 1, 3, job.tx_hash, 40, BLOCK_HASH)
    m = health.metrics
    assert (m.anchors_submitted, m.anchors_included, m.anchors_final, m.anchor_transitions) == (1, 1, 1, 4)


def test_a_reverted_transaction_sends_the_job_back_to_pending(tmp_path: Path) -> None:
    chain = ScriptedChain(receipts_ok=False)
    journal, health, notes = drive(tmp_path, chain, passes=2)
    job = only_job(journal)
    assert (job.state, job.raw_tx, job.tx_hash, job.attempts) == (AnchorState.PENDING, None, None, 1)
    assert notes.states == ["signed", "submitted", "pending"] and health.metrics.chain_errors == 1


def test_a_stale_transaction_is_signed_again(tmp_path: Path) -> None:
    chain = ScriptedChain(stale=True)
    journal, _, notes = drive(tmp_path, chain, passes=3)  # stale; signed again and sent; mined
    assert notes.states == ["signed", "pending", "signed", "submitted", "included", "final"]
    assert chain.sent == [b"raw-2"] and only_job(journal).attempts == 1


def test_a_receipt_not_yet_mined_stores_nothing(tmp_path: Path) -> None:
    chain = ScriptedChain(receipts_ok=None)
    journal, _, notes = drive(tmp_path, chain, passes=3)
    assert only_job(journal).state is AnchorState.SUBMITTED and notes.states == ["signed", "submitted"]


@pytest.mark.parametrize(("number", "count", "state"), [(1, 3, AnchorState.INCLUDED), (2, 3, AnchorState.FAILED)])
def test_a_root_already_anchored_by_us_is_adopted_only_for_this_very_batch(
    tmp_path: Path, number: int, count: int, state: AnchorState
) -> None:
    info = AnchorInfo(40, b"\xaa" * 20, AnchorKind.BATCH, "gw-1", number, count)
    chain = ScriptedChain(already=(info, TxReceipt(b"\x77" * 32, True, 40, BLOCK_HASH)))
    journal, health, _ = drive(tmp_path, chain)
    job = only_job(journal)
    assert job.state is state and chain.sent == []
    if state is AnchorState.INCLUDED:
        assert (job.tx_hash, job.raw_tx, job.block_hash) == (b"\x77" * 32, None, BLOCK_HASH)
    else:
        assert health.metrics.anchor_conflicts == 1 and "already anchored" in (health.last_error or "")


def test_a_stored_transaction_the_chain_already_has_is_not_sent_again(tmp_path: Path) -> None:
    """A crash between the send and its record leaves the job 'signed'; re-sending a mined transaction made
    ganache mine it a second time, and that failed copy's receipt hid the first (seen in the kill -9 test)."""
    chain = ScriptedChain()
    earlier = Step(AnchorState.SIGNED, Event.SIGNED, raw_tx=b"raw-earlier", tx_hash=b"\x55" * 32)
    journal, _, notes = drive(tmp_path, chain, passes=2, stored=earlier)
    job = only_job(journal)
    assert chain.sent == [] and chain.prepared == 0
    assert (job.state, job.tx_hash) == (AnchorState.FINAL, b"\x55" * 32)
    assert notes.states == ["submitted", "included", "final"]


def test_a_stored_transaction_the_chain_does_not_have_is_sent(tmp_path: Path) -> None:
    chain = ScriptedChain(receipts_ok=None)  # no receipt: never reached a node
    earlier = Step(AnchorState.SIGNED, Event.SIGNED, raw_tx=b"raw-earlier", tx_hash=b"\x55" * 32)
    journal, _, _ = drive(tmp_path, chain, stored=earlier)
    assert chain.sent == [b"raw-earlier"] and only_job(journal).state is AnchorState.SUBMITTED
