"""Anchoring: the thin driver of ``anchoring.lifecycle`` for each target's queue (batches, or one roll-up
target's roll-ups). It asks the chain one question per job, reads the answer as an observation, and stores
and announces the step the lifecycle gives; all decisions are in the lifecycle's table."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from anchoring.chain import AnchorKind, ChainClient, TxReceipt
from anchoring.errors import AlreadyAnchored, AnchoringError, StaleTransaction
from anchoring.lifecycle import (
    OPEN_STATES,
    AlreadyOther,
    AlreadyOurs,
    AnchorState,
    Deep,
    Event,
    Job,
    Observation,
    Prepared,
    Sent,
    Shallow,
    Stale,
    Step,
    apply,
    next_step,
    observe_depth,
    observe_own_anchor,
    observe_receipt,
)
from anchoring.receipt import AnchorReceipt
from edge import cbor
from gateway.clock import monotonic, wall_ms
from gateway.errors import JournalError, PublishError
from gateway.mqtt import Publisher
from gateway.stages.ports import AnchorJobs, CallHung, Health, JournalErrorPolicy, Wakes, Worker

log = logging.getLogger("tiyi.gateway")

ANCHOR_RETRY_S = 2.0
# A chain call (one or two JSON-RPC requests of RPC_TIMEOUT_S each) that has not returned after this long is
# given up on, and its thread counts as hung (the watchdog then lets systemd restart the gateway).
CHAIN_CALL_S = 60.0


@dataclass
class AnchorTarget:
    """One anchor queue: the per-batch target, or a roll-up target (one anchor per period)."""

    name: str  # the chain's name, for logs and state messages
    queue: str  # the journal's queue key
    kind: AnchorKind
    chain: ChainClient
    confirmations: int
    poll_s: float
    worker: Worker = field(default_factory=lambda: Worker("tiyi-chain", CHAIN_CALL_S))
    retry_at: float = 0.0

    @property
    def label(self) -> str:
        """``batch`` or ``rollup``, for logs and state messages."""
        return self.kind.label


class StateNotes(Protocol):
    """Where progress reports go (best effort): the anchor-state topic."""

    async def note(self, payload: bytes) -> None: ...


class MqttStateNotes:
    def __init__(self, publisher: Publisher, topic: str) -> None:
        self._publisher, self._topic = publisher, topic

    async def note(self, payload: bytes) -> None:
        if not self._publisher.connected:
            return
        with contextlib.suppress(PublishError):
            await self._publisher.publish(self._topic, payload, 0, False)


class AnchorDriver:
    """Advances one target's queue by one pass (``advance``); the stage loop decides when."""

    def __init__(
        self,
        gw: str,
        target: AnchorTarget,
        jobs: AnchorJobs,
        worker: Worker,
        health: Health,
        notes: StateNotes,
        wakes: Wakes,
    ) -> None:
        self._gw, self.target = gw, target
        self._jobs, self._worker, self._health, self._notes, self._wakes = jobs, worker, health, notes, wakes

    async def _chain(self, fn: Any, *args: Any) -> Any:
        out = await self.target.worker.call(fn, *args)
        self._health.beat("anchoring")  # a pass over many jobs is many chain calls: each one is progress
        return out

    async def advance(self) -> bool:
        """One pass over the open jobs; whether any moved."""
        jobs = await self._worker.call(self._jobs.anchor_jobs, OPEN_STATES, self.target.queue)
        progressed = False
        for job in jobs:
            if job.state is AnchorState.PENDING:
                progressed |= await self._pending(job)
            elif job.state is AnchorState.SIGNED:
                progressed |= await self._resend(job)
            elif job.state is AnchorState.SUBMITTED:
                progressed |= await self._submitted(job)
            else:
                progressed |= await self._included(job)
        return progressed

    async def _pending(self, job: Job) -> bool:
        t = self.target
        try:
            tx = await self._chain(t.chain.prepare_anchor, t.kind, self._gw, job.root, job.number, job.count)
        except AlreadyAnchored:
            return await self._already_anchored(job)
        # Keep the signed transaction before sending, so a resubmission is the same transaction.
        job = await self._store(job, Prepared(tx.raw, tx.tx_hash))
        await self._send(job)
        self._health.metrics.anchors_submitted += 1
        return True

    async def _resend(self, job: Job) -> bool:
        """A transaction stored as signed but perhaps already sent (a crash between the send and its record, or
        one that left its block). If the chain already has it, it is not sent again: some nodes (ganache) mine a
        re-sent transaction a second time, and the failed second copy's receipt then hides the first."""
        assert job.tx_hash is not None
        if await self._chain(self.target.chain.receipt, job.tx_hash) is not None:
            await self._store(job, Sent())
            return True
        return await self._send(job)

    async def _send(self, job: Job) -> bool:
        assert job.raw_tx is not None
        try:
            await self._chain(self.target.chain.send_raw, job.raw_tx)
        except StaleTransaction as exc:
            # The stored transaction can never be mined: sign a new one (if the root did get anchored meanwhile,
            # the next pass adopts that anchor instead).
            log.warning(
                "anchor tx for %s %d on %s is stale (%s); preparing a new one (attempt %d)",
                self.target.label,
                job.number,
                self.target.name,
                exc,
                job.attempts + 2,
            )
            await self._store(job, Stale())
            return True
        await self._store(job, Sent())
        return True

    async def _already_anchored(self, job: Job) -> bool:
        """The root is on chain but the queue never saw its transaction land (a crash, or a send that timed out
        after the node took it). Take over that anchor if our account made it for this very number; anything
        else is a conflict for the operator, and retrying cannot fix it."""
        t = self.target
        found = await self._chain(t.chain.own_anchor, t.kind, self._gw, job.root)
        seen = observe_own_anchor(
            job,
            None
            if found is None
            else (found[0].number, found[0].count, found[1].tx_hash, found[1].block_number, found[1].block_hash),
        )
        if isinstance(seen, AlreadyOurs):
            log.warning(
                "%s %d on %s was already anchored by our tx 0x%s (block %d); adopting it",
                t.label,
                job.number,
                t.name,
                seen.tx_hash.hex(),
                seen.block_number,
            )
            self._health.metrics.anchors_included += 1
        elif isinstance(seen, AlreadyOther):
            m = self._health.metrics
            m.chain_errors += 1
            m.anchor_conflicts += 1
            self._health.last_error = (
                f"chain {t.name}: root of {t.label} {job.number} was already anchored by our "
                f"account as {t.label} {seen.number} ({seen.count})"
            )
            log.error(
                "%s; giving up on this anchor (state 'failed'): the operator must investigate", self._health.last_error
            )
        else:
            return False  # reorged away since: the next pass prepares a fresh transaction
        await self._store(job, seen)
        return True

    async def _submitted(self, job: Job) -> bool:
        assert job.tx_hash is not None
        rec: TxReceipt | None = await self._chain(self.target.chain.receipt, job.tx_hash)
        seen = observe_receipt(
            None if rec is None else rec.ok,
            None if rec is None else rec.block_number,
            None if rec is None else rec.block_hash,
        )
        step = next_step(job, seen)
        if not step.moves:
            return False
        if step.event is Event.REVERTED:
            self._health.metrics.chain_errors += 1
            log.error(
                "anchor tx for %s %d on %s failed; preparing a new one", self.target.label, job.number, self.target.name
            )
        job = await self._store(job, seen)
        if job.state is AnchorState.INCLUDED:
            self._health.metrics.anchors_included += 1
            if self.target.confirmations == 0:
                # Final on inclusion (BFT chains): the receipt just read is the one to report; re-reading it and
                # the block number would be two more round trips per anchor for nothing.
                await self._store(job, Deep(self._receipt(job)))
        return True

    async def _included(self, job: Job) -> bool:
        """Promote an included anchor to final once deep enough, re-checking that its block is still there.

        Only final anchors are published: a receipt that could still vanish in a reorg is never reported.
        """
        t = self.target
        assert job.tx_hash is not None
        rec: TxReceipt | None = await self._chain(t.chain.receipt, job.tx_hash)
        ok, bhash = (None, None) if rec is None else (rec.ok, rec.block_hash)
        seen: Observation = observe_depth(job, ok, bhash, None, t.confirmations, None)
        if isinstance(seen, Shallow) and rec is not None:  # still in its block: how deep?
            depth = await self._chain(t.chain.block_number) - rec.block_number
            seen = observe_depth(
                job, ok, bhash, depth, t.confirmations, self._receipt(job) if depth >= t.confirmations else None
            )
        step = next_step(job, seen)
        if step.event is Event.LEFT_BLOCK:
            self._health.metrics.anchors_reverted += 1
            how = (
                ("adopted anchor", "preparing a new transaction")
                if job.raw_tx is None
                else ("anchor", "resubmitting the same transaction")
            )
            log.warning(
                "%s of %s %d on %s left block %s (reorg or revert); %s",
                how[0],
                t.label,
                job.number,
                t.name,
                job.block_number,
                how[1],
            )
        if not step.moves:
            return False
        await self._store(job, seen)
        return True

    def _receipt(self, job: Job) -> bytes:
        chain = self.target.chain
        assert job.tx_hash is not None and job.block_number is not None and job.block_hash is not None
        return bytes(
            AnchorReceipt(
                gw=self._gw,
                kind=self.target.kind,
                number=job.number,
                count=job.count,
                root=job.root,
                chain_id=chain.chain_id,
                contract=chain.contract,
                anchorer=chain.account,
                tx=job.tx_hash,
                block=job.block_number,
                block_hash=job.block_hash,
                status="final",
                target=self.target.name,
            )
        )

    async def _store(self, job: Job, seen: Observation) -> Job:
        """Store the lifecycle's step for what was seen, then announce it (best effort, like any progress report)."""
        step = next_step(job, seen)
        await self._worker.call(self._jobs.advance, job.number, step, self.target.queue)
        self._health.metrics.anchor_transitions += 1
        if step.state is AnchorState.FINAL:
            if self.target.kind is AnchorKind.BATCH:
                self._health.metrics.anchors_final += 1
                self._health.batch_final(job.number, monotonic())
            else:
                self._health.metrics.rollups_final += 1
            self._wakes.publish.set()
        await self._notes.note(self._note(job, step))
        return apply(job, step)

    def _note(self, job: Job, step: Step) -> bytes:
        note: dict[str, Any] = {
            "target": self.target.name,
            "kind": self.target.label,
            "n": job.number,
            "state": str(step.state),
            "t": wall_ms(),
        }
        if step.tx_hash is not None:
            note["tx"] = step.tx_hash
        if step.block_number is not None:
            note["block"] = step.block_number
        return cbor.dumps(note)


class Anchoring:
    """Advances every target's queue; one target's outage never holds up another's."""

    journal_errors: ClassVar[JournalErrorPolicy] = JournalErrorPolicy.PAUSE_TARGET

    def __init__(self, drivers: Sequence[AnchorDriver], health: Health, wakes: Wakes) -> None:
        self._drivers, self._health, self._wakes = tuple(drivers), health, wakes

    @property
    def targets(self) -> list[AnchorTarget]:
        return [d.target for d in self._drivers]

    async def run(self) -> None:
        while True:
            self._health.beat("anchoring")
            busy = False
            for driver in self._drivers:
                if monotonic() >= driver.target.retry_at:
                    busy |= await self._advance(driver)
            if not busy:
                await self._wakes.anchor.wait(min(d.target.poll_s for d in self._drivers))

    async def _advance(self, driver: AnchorDriver) -> bool:
        t = driver.target
        try:
            return await driver.advance()
        except (AnchoringError, CallHung) as exc:
            if isinstance(exc, CallHung):
                # The call may still complete (a prepared transaction taking a nonce nobody keeps): forget the
                # nonce on the chain's own thread, after that call and before any other.
                t.worker.enqueue(t.chain.resync_nonce)
            self._health.metrics.chain_errors += 1
            self._health.last_error = f"chain {t.name}: {exc}"
            log.warning("anchoring on %s paused: %s (retrying in %.0f s)", t.name, exc, ANCHOR_RETRY_S)
        except JournalError as exc:
            # A transaction may have been prepared and not kept: its nonce must not be skipped.
            t.chain.resync_nonce()
            self._health.journal_failed(self.journal_errors, f"anchoring on {t.name} paused, the journal failed", exc)
        t.retry_at = monotonic() + ANCHOR_RETRY_S
        return False

    def shutdown(self) -> None:
        for d in self._drivers:
            d.target.worker.shutdown()
