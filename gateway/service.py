"""The gateway pipeline: frames in → durable records → MQTT → signed batches → anchors.

One asyncio loop owns the flow; the journal runs in one dedicated worker thread (SQLite is a single
writer, and fsync must not stall the loop), chain calls in another. The journal is the source of
truth for every later step, so each step is a loop that reads "what is not done yet" from it and
does it; a crash at any point leaves work that the same loops pick up after restart.

    submit(frame) ─► ingest: decode, assign seq, journal.append (durable) ─► publish: data/{dev}
                                                  └─► batcher: Merkle root, SM2 sign ─► publish: batch
                                                                   ├─► on its ack: signed head ─► publish: head
                                                                   └─► anchorer: chain tx ─► publish: anchor
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
from collections import defaultdict
from collections.abc import Awaitable, Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from anchoring.chain import AnchorKind, ChainClient
from anchoring.errors import AlreadyAnchored, AnchoringError, StaleTransaction
from anchoring.receipt import AnchorReceipt
from edge import cbor
from edge.errors import EdgeError, MalformedFrame, UnknownCharacteristic
from edge.frame import Frame
from edge.gatt import decode
from edge.gatt.assembly import JOINABLE, Joined, RecordAssembler
from edge.head import NO_MANIFEST, Head, sign_head
from edge.manifest import GENESIS_PREV, build_manifest, sign_manifest
from edge.record import SALT_BYTES, encode_data_message, encode_record
from edge.rollup import Rollup
from edge.signing import Signer
from edge.topics import Topics
from gateway.clock import monotonic, wall_ms
from gateway.config import GatewayConfig, RollupConfig
from gateway.errors import JournalError, PublishError
from gateway.ingest_buffer import IngestBuffer
from gateway.journal import AnchorJob, SqliteJournal
from gateway.metrics import Metrics
from gateway.mqtt import Publisher

log = logging.getLogger("tiyi.gateway")
T = TypeVar("T")

INGEST_QUEUE_FRAMES = 20_000
MAX_FRAMES_PER_APPEND = 2_000
UNDELIVERED_FETCH = 5_000
FRESH_MAX = 20_000  # just-journaled records kept for the publisher (about 4 MB)
ANCHOR_RETRY_S = 2.0
CLOCK_JUMP_MS = 2_000  # NTP slews far less than this; a step this large is a jump worth flagging
HEAD_MIN_SPACING_S = 1.0  # batches can close several times a second: one head signature per second is enough


class BleSource(Protocol):
    """Where frames come from: a BLE adapter, the simulator, a replay. ``run`` submits until cancelled."""

    async def run(self, submit: Callable[[Frame], Any]) -> None: ...


@dataclass(frozen=True, slots=True)
class Backlog:
    undelivered: int
    unbatched: int
    unpublished_batches: int
    anchors_open: int
    unpublished_receipts: int
    rollups_open: int = 0  # roll-ups not final or not published, plus batches not yet rolled up

    @property
    def empty(self) -> bool:
        return not (self.undelivered or self.unbatched or self.unpublished_batches or self.anchors_open
                    or self.unpublished_receipts or self.rollups_open)


@dataclass
class AnchorTarget:
    """One anchor queue: the per-batch target, or a roll-up target (one anchor per period)."""

    name: str
    chain: ChainClient
    confirmations: int
    poll_s: float
    jobs: Callable[[Collection[str]], list[AnchorJob]]
    set_state: Callable[..., None]
    rollup: RollupConfig | None = None
    pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="tiyi-chain"))
    retry_at: float = 0.0

    @property
    def anchor_kind(self) -> AnchorKind:
        """What its jobs anchor, as the contract records it."""
        return AnchorKind.BATCH if self.rollup is None else AnchorKind.ROLLUP

    @property
    def kind(self) -> str:
        """``batch`` or ``rollup``, for logs and state messages."""
        return self.anchor_kind.label


class Gateway:
    """Owns the pipeline tasks. Create, ``await start()``, feed ``submit``, ``await stop()``."""

    def __init__(self, cfg: GatewayConfig, journal: SqliteJournal, publisher: Publisher, signer: Signer,
                 chain: ChainClient | None, rollup_chains: Mapping[str, ChainClient] | None = None) -> None:
        """``rollup_chains`` holds a client per ``[[rollup]]`` target of ``cfg``, by target name."""
        self.cfg = cfg
        self.topics = Topics(cfg.region, cfg.gateway_id)
        self.journal = journal
        self.publisher = publisher
        self.signer = signer
        self.chain = chain
        self.metrics = Metrics()
        self._frames: IngestBuffer[tuple[Frame, int, bool]] = IngestBuffer(INGEST_QUEUE_FRAMES)
        self._last_clock: tuple[int, float] | None = None  # (wall ms, monotonic s) of the previous frame
        self._io = ThreadPoolExecutor(1, thread_name_prefix="tiyi-journal")
        self.targets: list[AnchorTarget] = []
        if chain is not None:
            self.targets.append(AnchorTarget(cfg.chain_target, chain, cfg.chain.confirmations,
                                             cfg.chain.poll_s, journal.anchor_jobs, journal.set_anchor_state))
        for r in cfg.rollups:
            client = (rollup_chains or {}).get(r.target)
            if client is None:
                raise ValueError(f"no chain client for roll-up target {r.target}")
            self.targets.append(AnchorTarget(
                r.target, client, r.chain.confirmations, r.chain.poll_s,
                functools.partial(journal.rollup_jobs, r.target), functools.partial(journal.set_rollup_state, r.target),
                r))
        self._inflight_rollups: set[tuple[str, int]] = set()
        self._wake_publish = asyncio.Event()
        self._wake_batch = asyncio.Event()
        self._wake_anchor = asyncio.Event()
        self._wake_head = asyncio.Event()  # a batch's publication was recorded: the head can move on
        self._head_lock = asyncio.Lock()  # heads go out in the order their journal reads were made
        self._head_sent = 0.0  # monotonic time of the last head sent
        self._tasks: list[asyncio.Task[None]] = []
        self._cursor = 0
        self._fresh: list[tuple[int, str, bytes]] = []  # journaled, not yet published: see _keep_fresh
        self._acked: list[int] = []
        self._inflight_batches: set[int] = set()
        self._inflight_receipts: set[int] = set()
        self._unbatched_since: float | None = None
        self._flush_all = False
        self._stopping = False
        self._generation = 0
        self.last_error: str | None = None
        # Per-device decoding quirks (device model deviations), supplied by the source that knows the devices.
        self.quirks_for: Callable[[str], Mapping[str, str] | None] | None = None
        self._background: set[asyncio.Future[None]] = set()
        self._unsettled = 0  # frames submitted but not yet journaled or rejected
        # Parts of multi-notification records wait here for the rest (in memory: like frames still in
        # the radio, they are not accepted until their record is whole or given up on).
        self._assembler: RecordAssembler[tuple[int, bool]] = RecordAssembler()
        self._device_states: dict[str, bytes] = {}

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        self.publisher.on_connect = self._on_connect
        await self.publisher.start()
        loops = [self._ingest_loop, self._publish_loop, self._ack_loop, self._batch_loop, self._head_loop]
        if self.targets:
            loops.append(self._anchor_loop)
        self._tasks = [asyncio.create_task(f(), name=f.__name__) for f in loops]
        self._tasks += [asyncio.create_task(self._rollup_loop(t), name=f"rollup-{t.name}")
                        for t in self.targets if t.rollup is not None]
        log.info("gateway %s started (region %s, next seq %d)", self.cfg.gateway_id, self.cfg.region,
                 self.journal.next_seq)

    async def submit(self, frame: Frame) -> None:
        """Hand a received frame to the pipeline; stamps the gateway receive time now."""
        self.metrics.frames_in += 1
        self._unsettled += 1
        await self._frames.put((frame, *self._stamp()))

    def _stamp(self) -> tuple[int, bool]:
        """Wall time for the record, and whether the wall clock jumped since the previous frame.

        Order never depends on it (seq does); a jump is flagged on the record (``clock_jump``) so a
        platform knows not to trust that timestamp's distance to its neighbours.
        """
        wall, mono = wall_ms(), monotonic()
        jumped = False
        if self._last_clock is not None:
            last_wall, last_mono = self._last_clock
            drift_ms = (wall - last_wall) - (mono - last_mono) * 1000
            jumped = wall < last_wall or abs(drift_ms) > CLOCK_JUMP_MS
            if jumped:
                self.metrics.clock_jumps += 1
                log.warning("wall clock jumped by %+.0f ms; flagging the affected record", drift_ms)
        self._last_clock = (wall, mono)
        return wall, jumped

    async def backlog(self) -> Backlog:
        st = await self._run(self.journal.stats)
        rng = await self._run(self.journal.unbatched_range)
        unbatched = 0 if rng is None else rng[1] - rng[0] + 1
        rollups = await self._run(self._rollup_backlog)
        return Backlog(undelivered=st.undelivered, unbatched=unbatched,
                       unpublished_batches=st.unpublished_batches,
                       anchors_open=sum(n for s, n in st.anchors.items() if s not in ("final", "failed")),
                       unpublished_receipts=st.unpublished_receipts, rollups_open=rollups)

    def _rollup_backlog(self) -> int:
        if not self.cfg.rollups:
            return 0
        last = self.journal.last_batch()
        behind = 0
        for r in self.cfg.rollups:
            prev = self.journal.last_rollup(r.target)
            behind += (0 if last is None else last.batch) - (0 if prev is None else prev[1])
        return self.journal.rollups_open() + behind

    async def drain(self, timeout: float) -> bool:
        """Close the last batch and wait until everything is delivered, signed and anchored."""
        self._flush_all = True
        self._wake_batch.set()
        deadline = monotonic() + timeout
        while monotonic() < deadline:
            if self._unsettled == 0 and not self._assembler.holding:
                await self._flush_acks()  # the ack loop's 0.2 s rhythm would hold the last acks back
                b = await self.backlog()
                if b.empty or (self.chain is None and not (b.undelivered or b.unbatched or b.unpublished_batches)):
                    return True
            self._wake_publish.set()
            self._wake_anchor.set()
            await asyncio.sleep(0.01)
        return False

    async def stop(self, drain_timeout: float = 30.0) -> bool:
        """Stop cleanly: finish what was accepted (bounded by ``drain_timeout``), then say offline."""
        drained = await self.drain(drain_timeout) if drain_timeout > 0 else False
        self._stopping = True
        await self._flush_acks()
        with contextlib.suppress(Exception):
            if self.publisher.connected:
                await asyncio.wait_for(await self._publish_head(), 5)  # naming the batch drain just closed
                fut = await self.publisher.publish(self.topics.status, self._status_payload("offline"), 1, True)
                await asyncio.wait_for(fut, 5)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.publisher.stop()
        await self._flush_acks()
        self._io.shutdown(wait=True)
        for target in self.targets:
            target.pool.shutdown(wait=True)
        log.info("gateway stopped (%s)", "drained" if drained else "work left in the journal for next start")
        return drained

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._io, fn, *args)

    @staticmethod
    async def _run_chain(target: AnchorTarget, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(target.pool, fn, *args)

    # ---------------------------------------------------------------- ingest
    async def _ingest_loop(self) -> None:
        linger = self.cfg.publish.linger_ms / 1000
        while True:
            # While parts are held, wake up to give up on records whose last part never comes.
            items = await self._frames.take(MAX_FRAMES_PER_APPEND, linger, 0.2 if self._assembler.holding else None)
            if items or self._assembler.holding:
                await self._accept(items)

    def _join(self, items: list[tuple[Frame, int, bool]]) -> list[tuple[Frame, int, bool]]:
        """Pass frames through the assembler: whole records out, parts of unfinished ones held back."""
        asm = self._assembler
        if not asm.holding and not any(f.char in JOINABLE for f, _, _ in items):
            return items  # the common case (straps, cuffs, ...): nothing to join, nothing to copy
        now = monotonic()
        out: list[tuple[Frame, int, bool]] = []
        for frame, t, jumped in items:
            if frame.char not in JOINABLE:
                out.append((frame, t, jumped))
                continue
            quirks = None if self.quirks_for is None else self.quirks_for(frame.dev)
            out += self._unpack(asm.feed(frame.dev, frame.char, frame.data, (t, jumped), now, quirks))
        if asm.holding:
            out += self._unpack(asm.flush() if self._flush_all else asm.expire(now))
        return out

    def _unpack(self, joined: list[Joined[tuple[int, bool]]]) -> list[tuple[Frame, int, bool]]:
        self.metrics.frames_joined += sum(j.parts - 1 for j in joined)
        return [(Frame(j.dev, j.char, j.data), *j.tag) for j in joined]

    @staticmethod
    def _salt(pool: bytes, i: int) -> bytes:
        start = i * SALT_BYTES
        if start + SALT_BYTES > len(pool):  # more readings than the pool was sized for
            return secrets.token_bytes(SALT_BYTES)
        return pool[start:start + SALT_BYTES]

    async def _accept(self, items: list[tuple[Frame, int, bool]]) -> None:
        first = seq = self.journal.next_seq
        gw = self.cfg.gateway_id
        rows: list[tuple[int, str, int, bytes]] = []
        # One getrandom call for the whole group, one salt per frame (most frames yield one reading; _salt
        # draws afresh for the rest).
        joined = self._join(items)
        salts = secrets.token_bytes(SALT_BYTES * len(joined))
        for frame, t, jumped in joined:
            quirks = None if self.quirks_for is None else self.quirks_for(frame.dev)
            try:
                readings = decode(frame.char, frame.data, quirks)
            except UnknownCharacteristic:
                self.metrics.unknown_frames += 1
                continue
            except (MalformedFrame, EdgeError) as exc:
                self._malformed(frame, exc)
                continue
            for r in readings:
                try:
                    data = encode_record(gw, seq, frame.dev, t, r.kind, r.val, frame.data,
                                         self._salt(salts, seq - first), (*r.q, "clock_jump") if jumped else r.q)
                except EdgeError as exc:  # a reading no record may hold (say, a bad device id): refused, counted
                    self._malformed(frame, exc)
                    continue
                rows.append((seq, frame.dev, t, data))
                seq += 1
        if not rows:
            self._unsettled -= len(items)
            return
        while True:
            try:
                await self._run(self.journal.append_encoded, rows)
                break
            except JournalError as exc:
                # Nothing was written and no seq was consumed: refuse loudly, retry the same records.
                self.metrics.journal_errors += 1
                self.last_error = f"journal: {exc}"
                log.error("journal refused %d records (%s); retrying in 1 s", len(rows), exc)
                await asyncio.sleep(1.0)
        self.metrics.records += len(rows)
        self._unsettled -= len(items)
        self._keep_fresh(rows)
        self._wake_publish.set()
        self._wake_batch.set()

    def _malformed(self, frame: Frame, exc: Exception) -> None:
        self.metrics.malformed_frames += 1
        if self.metrics.malformed_frames <= 10 or self.metrics.malformed_frames % 1000 == 0:
            log.warning("malformed frame from %s on 0x%04X (%d so far): %s", frame.dev, frame.char,
                        self.metrics.malformed_frames, exc)

    def _keep_fresh(self, rows: list[tuple[int, str, int, bytes]]) -> None:
        """Keep just-journaled records in memory so the publisher sends them without reading them back.

        The journal stays the source of truth: the fresh list is only used while it continues exactly where
        the publisher's cursor is, and it is bounded (past the bound, the publisher reads SQLite as after
        a restart).
        """
        fresh = self._fresh
        if fresh and (fresh[-1][0] + 1 != rows[0][0] or len(fresh) + len(rows) > FRESH_MAX):
            fresh.clear()
        fresh.extend((q, dev, data) for q, dev, _, data in rows)

    def _take_fresh(self, limit: int) -> list[tuple[int, str, bytes]] | None:
        """Up to ``limit`` fresh records right after the cursor, or None when the journal must be read."""
        fresh = self._fresh
        if fresh and fresh[0][0] <= self._cursor:  # already published through the journal
            del fresh[:self._cursor - fresh[0][0] + 1]
        if not fresh or fresh[0][0] != self._cursor + 1:
            return None
        rows = fresh[:limit]
        del fresh[:limit]
        return rows

    async def publish_device_states(self, states: dict[str, dict[str, Any]]) -> None:
        """Retained per-device state, published only when it changed (best effort: it is not a reading)."""
        for dev, state in states.items():
            payload = cbor.dumps({**state, "t": wall_ms()})
            key = cbor.dumps(state)
            if self._device_states.get(dev) == key or not self.publisher.connected:
                continue
            try:
                await self.publisher.publish(self.topics.device_state(dev), payload, 1, True)
            except PublishError:
                return
            self._device_states[dev] = key

    # ---------------------------------------------------------------- publish
    def _status_payload(self, state: str) -> bytes:
        return cbor.dumps({"state": state, "t": wall_ms(), "gw": self.cfg.gateway_id})

    async def _on_connect(self) -> None:
        """Birth on every (re)connect: retained key, status and head, then re-send from the journal."""
        self._generation += 1
        self._cursor = 0
        self._fresh.clear()  # everything undelivered is re-read from the journal
        self._inflight_batches.clear()
        self._inflight_receipts.clear()
        self._inflight_rollups.clear()
        self._device_states.clear()  # re-announce device states after a reconnect
        key = cbor.dumps({"key_id": self.signer.key_id, "pem": self.signer.public_key_pem()})
        await self.publisher.publish(self.topics.key, key, 1, True)
        await self.publisher.publish(self.topics.status, self._status_payload("online"), 1, True)
        try:
            await self._publish_head()
        except (JournalError, EdgeError) as exc:  # the rest of the birth (re-sending) must still happen
            self.metrics.journal_errors += isinstance(exc, JournalError)
            log.error("could not make the signed head: %s (retrying)", exc)
            self._wake_head.set()
        self._wake_publish.set()

    async def _publish_loop(self) -> None:
        while True:
            try:
                await self.publisher.wait_connected(None)
                did = await self._publish_once()
            except PublishError as exc:
                self.metrics.publish_failures += 1
                log.debug("publish interrupted: %s", exc)
                await asyncio.sleep(0.1)
                continue
            if not did:
                self._wake_publish.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake_publish.wait(), 0.5)

    async def _publish_once(self) -> bool:
        gen = self._generation
        did = False
        rows = self._take_fresh(UNDELIVERED_FETCH)
        if rows is None:
            rows = await self._run(self.journal.undelivered, self._cursor, UNDELIVERED_FETCH)
        if rows:
            did = True
            by_dev: dict[str, list[tuple[int, bytes]]] = defaultdict(list)
            for seq, dev, data in rows:
                by_dev[dev].append((seq, data))
            per_msg = self.cfg.publish.max_records_per_message
            for dev, items in by_dev.items():
                for i in range(0, len(items), per_msg):
                    chunk = items[i:i + per_msg]
                    fut = await self.publisher.publish(self.topics.data(dev),
                                                       encode_data_message([d for _, d in chunk]), 1, False)
                    fut.add_done_callback(self._on_data_ack([s for s, _ in chunk], gen))
                    self.metrics.messages_published += 1
            if gen == self._generation:
                self._cursor = rows[-1][0]
        for batch, payload in await self._run(self.journal.unpublished_batches):
            if batch in self._inflight_batches:
                continue
            did = True
            self._inflight_batches.add(batch)
            fut = await self.publisher.publish(self.topics.batch, payload, 1, False)
            fut.add_done_callback(self._on_batch_ack(batch))
        for batch, payload in await self._run(self.journal.unpublished_receipts):
            if batch in self._inflight_receipts:
                continue
            did = True
            self._inflight_receipts.add(batch)
            fut = await self.publisher.publish(self.topics.anchor, payload, 1, False)
            fut.add_done_callback(self._on_receipt_ack(batch))
        for t in self.targets:
            if t.rollup is not None:
                did |= await self._publish_rollups(t.name)
        return did

    async def _publish_rollups(self, target: str) -> bool:
        """A final roll-up goes out with its batch roots, so a platform can check every batch against it."""
        did = False
        for number, receipt in await self._run(self.journal.unpublished_rollups, target):
            key = (target, number)
            if key in self._inflight_rollups:
                continue
            did = True
            self._inflight_rollups.add(key)
            first, last = await self._run(self.journal.rollup_range, target, number)
            roots = await self._run(self.journal.batch_roots, first, last)
            rollup = Rollup(self.cfg.gateway_id, target, number, first, tuple(roots))
            payload = cbor.dumps({"rollup": bytes(rollup), "receipt": receipt})
            fut = await self.publisher.publish(self.topics.rollup(target), payload, 1, False)
            fut.add_done_callback(self._on_rollup_ack(key))
        return did

    def _on_rollup_ack(self, key: tuple[str, int]) -> Callable[[asyncio.Future[None]], None]:
        def done(f: asyncio.Future[None]) -> None:
            if f.cancelled() or f.exception() is not None:
                self._inflight_rollups.discard(key)
                return
            self.metrics.rollups_published += 1
            self._spawn(self._run(self.journal.mark_rollup_published, *key))
        return done

    def _on_data_ack(self, seqs: list[int], gen: int) -> Callable[[asyncio.Future[None]], None]:
        def done(f: asyncio.Future[None]) -> None:
            if f.cancelled() or f.exception() is not None:
                self.metrics.publish_failures += 1
                return
            self._acked.extend(seqs)
            self.metrics.records_delivered += len(seqs)
        return done

    def _on_batch_ack(self, batch: int) -> Callable[[asyncio.Future[None]], None]:
        def done(f: asyncio.Future[None]) -> None:
            if f.cancelled() or f.exception() is not None:
                self._inflight_batches.discard(batch)
                return
            self.metrics.batches_published += 1
            self._spawn(self._batch_published(batch))
        return done

    async def _batch_published(self, batch: int) -> None:
        """Record the ack, and only then let the head name the batch (so no head outruns the journal)."""
        await self._run(self.journal.mark_batch_published, batch)
        self._wake_head.set()

    # ---------------------------------------------------------------- signed head
    async def _publish_head(self) -> asyncio.Future[None]:
        """Sign and publish, retained, a head naming the latest batch whose manifest the broker acknowledged.

        The journal is read under the lock, so heads leave in the order of their reads and a later head
        never names an older batch than an earlier one (after a restart too: acks are recorded first).
        """
        async with self._head_lock:
            row = await self._run(self.journal.last_published_batch)
            gw = self.cfg.gateway_id
            head = (Head(gw, 0, 0, NO_MANIFEST, wall_ms()) if row is None
                    else Head(gw, row.batch, row.last_seq, row.digest, wall_ms()))
            signed = await asyncio.get_running_loop().run_in_executor(None, sign_head, head, self.signer)
            fut = await self.publisher.publish(self.topics.head, bytes(signed), 1, True)
            self._head_sent = monotonic()
        fut.add_done_callback(self._on_head_ack)
        return fut

    def _on_head_ack(self, f: asyncio.Future[None]) -> None:
        if not f.cancelled() and f.exception() is None:
            self.metrics.heads_published += 1

    async def _head_loop(self) -> None:
        """Move the head on once a batch's publication is recorded, and re-sign it every
        ``publish.head_interval_s`` even when nothing closes, so its ``issued`` time shows it is current."""
        interval = self.cfg.publish.head_interval_s
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake_head.wait(), max(0.0, self._head_sent + interval - monotonic()))
            await asyncio.sleep(max(0.0, self._head_sent + HEAD_MIN_SPACING_S - monotonic()))
            self._wake_head.clear()
            if not self.publisher.connected:
                await self.publisher.wait_connected(None)  # the birth on connect sends a fresh head
                continue
            try:
                await self._publish_head()
            except PublishError as exc:
                log.debug("head not sent: %s", exc)
            except (JournalError, EdgeError) as exc:
                self.metrics.journal_errors += isinstance(exc, JournalError)
                log.error("could not make the signed head: %s", exc)
                await asyncio.sleep(1.0)

    def _on_receipt_ack(self, batch: int) -> Callable[[asyncio.Future[None]], None]:
        def done(f: asyncio.Future[None]) -> None:
            if f.cancelled() or f.exception() is not None:
                self._inflight_receipts.discard(batch)
                return
            self.metrics.receipts_published += 1
            self._spawn(self._run(self.journal.mark_receipt_published, batch))
        return done

    def _spawn(self, aw: Awaitable[None]) -> None:
        fut = asyncio.ensure_future(aw)
        self._background.add(fut)
        fut.add_done_callback(self._background.discard)

    async def _flush_acks(self) -> None:
        if self._acked:
            seqs, self._acked = self._acked, []
            try:
                await self._run(self.journal.mark_delivered, seqs)
            except (JournalError, RuntimeError) as exc:
                # Losing these marks only causes identical re-sends after a restart.
                log.warning("could not record %d deliveries: %s", len(seqs), exc)

    async def _ack_loop(self) -> None:
        while True:
            await asyncio.sleep(0.2)
            await self._flush_acks()

    # ---------------------------------------------------------------- batches
    async def _batch_loop(self) -> None:
        while True:
            self._wake_batch.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake_batch.wait(), 0.1)
            try:
                while await self._maybe_close_batch():
                    pass
            except JournalError as exc:
                self.metrics.journal_errors += 1
                log.error("could not close a batch: %s", exc)
                await asyncio.sleep(1.0)

    async def _maybe_close_batch(self) -> bool:
        rng = await self._run(self.journal.unbatched_range)
        if rng is None:
            self._unbatched_since = None
            return False
        first, last = rng
        now = monotonic()
        if self._unbatched_since is None:
            self._unbatched_since = now
        n = last - first + 1
        max_n = self.cfg.batch.max_records
        if n >= max_n:
            last = first + max_n - 1
        elif not (self._flush_all or now - self._unbatched_since >= self.cfg.batch.max_age_s):
            return False
        await self._close_batch(first, last)
        self._unbatched_since = None if last == rng[1] else now
        return True

    async def _close_batch(self, first: int, last: int) -> None:
        records = await self._run(self.journal.records, first, last)
        prev_row = await self._run(self.journal.last_batch)
        number = 1 if prev_row is None else prev_row.batch + 1
        prev = GENESIS_PREV if prev_row is None else prev_row.digest
        manifest = build_manifest(self.cfg.gateway_id, number, first, records, prev, wall_ms())
        signed = await asyncio.get_running_loop().run_in_executor(None, sign_manifest, manifest, self.signer)
        await self._run(self.journal.add_batch, manifest, signed)
        self.metrics.batches += 1
        log.info("batch %d closed: seq %d..%d (%d records), root %s", number, first, last, manifest.count,
                 manifest.root.hex()[:16])
        self._wake_publish.set()
        self._wake_anchor.set()

    # ---------------------------------------------------------------- anchoring
    async def _anchor_loop(self) -> None:
        """Advance every target's queue; one target's outage never holds up another's."""
        while True:
            self._wake_anchor.clear()
            busy = False
            for target in self.targets:
                if monotonic() < target.retry_at:
                    continue
                try:
                    busy |= await self._anchor_once(target)
                except AnchoringError as exc:
                    self.metrics.chain_errors += 1
                    self.last_error = f"chain {target.name}: {exc}"
                    log.warning("anchoring on %s paused: %s (retrying in %.0f s)", target.name, exc, ANCHOR_RETRY_S)
                    target.retry_at = monotonic() + ANCHOR_RETRY_S
                except JournalError as exc:
                    # A transaction may have been prepared and not kept: its nonce must not be skipped.
                    target.chain.resync_nonce()
                    self.metrics.journal_errors += 1
                    self.last_error = f"journal: {exc}"
                    log.error("anchoring on %s paused, the journal failed: %s (retrying in %.0f s)", target.name,
                              exc, ANCHOR_RETRY_S)
                    target.retry_at = monotonic() + ANCHOR_RETRY_S
            if not busy:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake_anchor.wait(), min(t.poll_s for t in self.targets))

    async def _anchor_once(self, target: AnchorTarget) -> bool:
        chain = target.chain
        jobs = await self._run(target.jobs, ("pending", "signed", "submitted", "included"))
        progressed = False
        for job in jobs:
            if job.state == "pending":
                try:
                    tx = await self._run_chain(target, chain.prepare_anchor, target.anchor_kind, self.cfg.gateway_id,
                                               job.root, job.batch, job.count)
                except AlreadyAnchored:
                    progressed |= await self._adopt(target, job)
                    continue
                # Keep the signed transaction before sending, so a resubmission is the same transaction.
                await self._move(target, job.batch, "signed", tx.raw, tx.tx_hash)
                await self._send(target, job.batch, tx.raw)
                self.metrics.anchors_submitted += 1
                progressed = True
            elif job.state == "signed":
                assert job.raw_tx is not None and job.tx_hash is not None
                await self._send(target, job.batch, job.raw_tx)
                progressed = True
            elif job.state == "included":
                progressed |= await self._check_final(target, job)
            else:
                assert job.tx_hash is not None
                rec = await self._run_chain(target, chain.receipt, job.tx_hash)
                if rec is None:
                    continue
                if not rec.ok:
                    self.metrics.chain_errors += 1
                    log.error("anchor tx for %s %d on %s failed; preparing a new one", target.kind, job.batch,
                              target.name)
                    await self._move(target, job.batch, "pending")
                    progressed = True
                    continue
                await self._move(target, job.batch, "included", None, None, None, rec.block_number, rec.block_hash)
                self.metrics.anchors_included += 1
                progressed = True
                if target.confirmations == 0:
                    # Final on inclusion (BFT chains): the receipt just read is the one to report; re-reading
                    # it and the block number would be two more round trips per anchor for nothing.
                    await self._finalize(target, job, job.tx_hash, rec.block_number, rec.block_hash)
        return progressed

    async def _send(self, target: AnchorTarget, number: int, raw: bytes) -> None:
        try:
            await self._run_chain(target, target.chain.send_raw, raw)
        except StaleTransaction as exc:
            # The stored transaction can never be mined: sign a new one (if the root did get anchored meanwhile,
            # the next pass adopts that anchor instead).
            log.warning("anchor tx for %s %d on %s is stale (%s); preparing a new one", target.kind, number,
                        target.name, exc)
            await self._move(target, number, "pending")
            return
        await self._move(target, number, "submitted")

    async def _adopt(self, target: AnchorTarget, job: AnchorJob) -> bool:
        """The root is on chain but the queue never saw its transaction land (a crash, or a send that timed out
        after the node took it). Take over that anchor if our account made it for this very batch; anything
        else is a conflict for the operator, and retrying cannot fix it."""
        chain = target.chain
        found = await self._run_chain(target, chain.own_anchor, target.anchor_kind, self.cfg.gateway_id, job.root)
        if found is None:
            return False  # reorged away since: the next pass prepares a fresh transaction
        info, rec = found
        if (info.number, info.count) == (job.batch, job.count):
            log.warning("%s %d on %s was already anchored by our tx 0x%s (block %d); adopting it", target.kind,
                        job.batch, target.name, rec.tx_hash.hex(), rec.block_number)
            await self._move(target, job.batch, "included", None, rec.tx_hash, None, rec.block_number,
                             rec.block_hash)
            self.metrics.anchors_included += 1
            return True
        self.metrics.chain_errors += 1
        self.metrics.anchor_conflicts += 1
        self.last_error = (f"chain {target.name}: root of {target.kind} {job.batch} was already anchored by our "
                           f"account as {target.kind} {info.number} ({info.count})")
        log.error("%s; giving up on this anchor (state 'failed'): the operator must investigate", self.last_error)
        await self._move(target, job.batch, "failed")
        return True

    async def _move(self, target: AnchorTarget, number: int, state: str, raw_tx: bytes | None = None,
                    tx_hash: bytes | None = None, receipt: bytes | None = None, block: int | None = None,
                    block_hash: bytes | None = None) -> None:
        """Store an anchor job's new state, then announce it (best effort, like any progress report)."""
        await self._run(target.set_state, number, state, raw_tx, tx_hash, receipt, block, block_hash)
        self.metrics.anchor_transitions += 1
        if not self.publisher.connected:
            return
        note: dict[str, Any] = {"target": target.name, "kind": target.kind,
                                "n": number, "state": state, "t": wall_ms()}
        if tx_hash is not None:
            note["tx"] = tx_hash
        if block is not None:
            note["block"] = block
        with contextlib.suppress(PublishError):
            await self.publisher.publish(self.topics.anchor_state, cbor.dumps(note), 0, False)

    async def _check_final(self, target: AnchorTarget, job: AnchorJob) -> bool:
        """Promote an included anchor to final once deep enough, re-checking that its block is still there.

        Only final anchors are published: a receipt that could still vanish in a reorg is never reported.
        """
        chain = target.chain
        assert job.tx_hash is not None
        rec = await self._run_chain(target, chain.receipt, job.tx_hash)
        if rec is None or not rec.ok or rec.block_hash != job.block_hash:
            self.metrics.anchors_reverted += 1
            if job.raw_tx is None:  # an adopted anchor: we do not hold its transaction, so sign a new one
                log.warning("adopted anchor of %s %d on %s left block %s; preparing a new transaction",
                            target.kind, job.batch, target.name, job.block_number)
                await self._move(target, job.batch, "pending")
                return True
            log.warning("anchor of %s %d on %s left block %s (reorg or revert); resubmitting the same transaction",
                        target.kind, job.batch, target.name, job.block_number)
            await self._move(target, job.batch, "signed")
            return True
        depth = await self._run_chain(target, chain.block_number) - rec.block_number
        if depth < target.confirmations:
            return False
        await self._finalize(target, job, job.tx_hash, rec.block_number, rec.block_hash)
        return True

    async def _finalize(self, target: AnchorTarget, job: AnchorJob, tx_hash: bytes, block: int,
                        block_hash: bytes | None) -> None:
        chain = target.chain
        assert block_hash is not None
        receipt = AnchorReceipt(gw=self.cfg.gateway_id, kind=target.anchor_kind, number=job.batch, count=job.count,
                                root=job.root, chain_id=chain.chain_id, contract=chain.contract, anchorer=chain.account,
                                tx=tx_hash, block=block, block_hash=block_hash, status="final", target=target.name)
        await self._move(target, job.batch, "final", None, None, bytes(receipt))
        if target.rollup is None:
            self.metrics.anchors_final += 1
        else:
            self.metrics.rollups_final += 1
        self._wake_publish.set()

    # ---------------------------------------------------------------- roll-ups
    async def _rollup_loop(self, target: AnchorTarget) -> None:
        """Every period (and when draining), roll up the batches closed since the previous roll-up."""
        assert target.rollup is not None
        period = target.rollup.period_s
        due = monotonic() + period
        while True:
            await asyncio.sleep(min(1.0, max(0.05, due - monotonic())))
            if not (self._flush_all or monotonic() >= due):
                continue
            if self._flush_all and await self._run(self.journal.unbatched_range) is not None:
                continue  # the last batch is still to close; roll it up too
            try:
                made = await self._run(self._make_rollup, target.name)
            except JournalError as exc:
                self.metrics.journal_errors += 1
                log.error("could not store a roll-up for %s: %s", target.name, exc)
                continue
            if made is not None:
                log.info("roll-up %d for %s: batches %d..%d, root %s", made.number, target.name, made.first_batch,
                         made.last_batch, made.root.hex()[:16])
                self.metrics.rollups += 1
                self._wake_anchor.set()
            if monotonic() >= due:
                due = monotonic() + period

    def _make_rollup(self, target: str) -> Rollup | None:
        """Runs on the journal thread: read the new batch roots, build the tree, store the job."""
        last = self.journal.last_batch()
        prev = self.journal.last_rollup(target)
        first = 1 if prev is None else prev[1] + 1
        if last is None or last.batch < first:
            return None
        number = 1 if prev is None else prev[0] + 1
        rollup = Rollup(self.cfg.gateway_id, target, number, first, tuple(self.journal.batch_roots(first, last.batch)))
        self.journal.add_rollup(target, number, first, rollup.last_batch, rollup.root)
        return rollup
