"""The gateway pipeline: frames in → durable records → MQTT → signed batches → anchors.

One asyncio loop owns the flow; the journal runs in one dedicated worker thread (SQLite is a single
writer, and fsync must not stall the loop), each chain in another. The journal is the source of truth
for every later step, so each stage is a loop that reads "what is not done yet" from it and does it;
a crash at any point leaves work that the same loops pick up after restart. ``Gateway`` only wires,
starts, drains and stops the stages (``gateway.stages``):

    submit(frame) ─► ingest: decode, assign seq, journal.append (durable) ─► delivery: data/{dev}
                                                  └─► batching: Merkle root, SM2 sign ─► announcements: batch
                                                                   ├─► on its ack: signed head ─► head
                                                                   └─► anchoring: chain tx ─► announcements: anchor
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from anchoring.chain import AnchorKind, ChainClient
from anchoring.lifecycle import OPEN_STATES
from edge import cbor
from edge.frame import Frame
from edge.signing import Signer
from edge.topics import Topics
from gateway.clock import monotonic, wall_ms
from gateway.config import GatewayConfig
from gateway.errors import GatewayError, PublishError
from gateway.heartbeats import IDLE_BEAT_S
from gateway.journal import BATCH_QUEUE, SqliteJournal
from gateway.metrics import Metrics
from gateway.mqtt import Publisher
from gateway.stages.anchoring import ANCHOR_RETRY_S, AnchorDriver, Anchoring, AnchorTarget, MqttStateNotes
from gateway.stages.announce import HEAD_MIN_SPACING_S, Announcements, HeadPublisher
from gateway.stages.audiences import Audiences
from gateway.stages.batching import Batching
from gateway.stages.delivery import ACK_FLUSH_S, Delivery, PublishLoop
from gateway.stages.ingest import Ingest, Row
from gateway.stages.ports import NO_DEVICES, DeviceDirectory, FrameSource, Health, Wakes, Worker
from gateway.stages.retention import Retention
from gateway.stages.view_maker import AudienceSetup

log = logging.getLogger("tiyi.gateway")

__all__ = ["Backlog", "DeviceDirectory", "FrameSource", "Gateway"]


@dataclass(frozen=True, slots=True)
class Backlog:
    undelivered: int
    unbatched: int
    unpublished_batches: int
    anchors_open: int
    unpublished_receipts: int
    rollups_open: int = 0  # roll-ups not final or not published, plus batches not yet rolled up
    views_open: int = 0  # audience views not published, plus batches not yet viewed

    @property
    def empty(self) -> bool:
        return not (
            self.undelivered
            or self.unbatched
            or self.unpublished_batches
            or self.anchors_open
            or self.unpublished_receipts
            or self.rollups_open
            or self.views_open
        )

    @property
    def published(self) -> bool:
        """Everything delivered, batched and announced (all a gateway without a chain can do)."""
        return not (self.undelivered or self.unbatched or self.unpublished_batches)


class _Journaled:
    """Ingest's sink: delivery keeps the rows, batching is nudged."""

    def __init__(self, delivery: Delivery, wakes: Wakes) -> None:
        self._delivery, self._wakes = delivery, wakes

    def journaled(self, rows: list[Row]) -> None:
        self._delivery.journaled(rows)
        self._wakes.batch.set()


class Gateway:
    """Owns the stages. Create, ``await start()``, feed ``submit``, ``await stop()``."""

    def __init__(
        self,
        cfg: GatewayConfig,
        journal: SqliteJournal,
        publisher: Publisher,
        signer: Signer,
        chain: ChainClient | None,
        rollup_chains: Mapping[str, ChainClient] | None = None,
        devices: DeviceDirectory = NO_DEVICES,
        anchoring: bool = True,
        subjects: Callable[[], Mapping[str, str]] = dict,
        audience_setup: AudienceSetup | None = None,
    ) -> None:
        """``rollup_chains`` holds a client per ``[[rollup]]`` target of ``cfg``, by target name; ``devices``
        what the frame source knows about its devices; ``anchoring=False`` leaves the anchor queues alone;
        ``subjects`` gives dev → bound wearer's ``sub`` (``gateway.binding.Bindings.subjects``);
        ``audience_setup`` the consent ledger, site secret and keyrings the ``[[audience]]`` views need."""
        self.cfg, self.journal, self.publisher, self.signer = cfg, journal, publisher, signer
        self.topics = topics = Topics(cfg.region, cfg.gateway_id)
        self.devices = devices
        self.health = health = Health()
        self.worker = worker = Worker("tiyi-journal")
        self.wakes = wakes = Wakes()
        gw = cfg.gateway_id
        self.delivery = Delivery(
            topics, cfg.publish.max_records_per_message, journal.records, worker, publisher, health, wakes.publish
        )
        self.ingest = Ingest(
            gw,
            cfg.publish.linger_ms,
            journal.records,
            worker,
            health,
            devices,
            _Journaled(self.delivery, wakes),
            subjects,
        )
        self.batching = Batching(
            gw, cfg.batch, signer, journal.records, journal.batches, journal.anchors, worker, health, wakes
        )
        self.announcements = Announcements(
            gw,
            topics,
            [r.target for r in cfg.rollups],
            journal.batches,
            journal.anchors,
            worker,
            publisher,
            health,
            wakes.head,
        )
        self.head = HeadPublisher(
            gw, topics, cfg.publish.head_interval_s, signer, journal.batches, worker, publisher, health, wakes.head
        )
        notes = MqttStateNotes(publisher, topics.anchor_state)
        self.anchoring = Anchoring(
            [
                AnchorDriver(gw, t, journal.anchors, worker, health, notes, wakes)
                for t in self._targets(chain, rollup_chains or {})
            ]
            if anchoring
            else [],
            health,
            wakes,
        )
        self.retention = Retention(
            cfg.retention, journal.maintenance, worker, health, journal.views, [a.id for a in cfg.audiences]
        )
        self.audiences: Audiences | None = None
        if cfg.audiences:
            if audience_setup is None:  # fail closed: never a view without its consent ledger and keys
                raise GatewayError("[[audience]] is configured but the gateway got no consent ledger and keys")
            self.audiences = Audiences(
                gw,
                cfg.region,
                topics,
                cfg.audiences,
                audience_setup,
                signer,
                journal.records,
                journal.batches,
                journal.views,
                worker,
                publisher,
                health,
                wakes.views,
                cfg.publish.max_records_per_message,
            )
        self._device_states: dict[str, bytes] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def _targets(self, chain: ChainClient | None, rollup_chains: Mapping[str, ChainClient]) -> list[AnchorTarget]:
        cfg = self.cfg
        targets = (
            []
            if chain is None
            else [
                AnchorTarget(
                    cfg.chain_target, BATCH_QUEUE, AnchorKind.BATCH, chain, cfg.chain.confirmations, cfg.chain.poll_s
                )
            ]
        )
        for r in cfg.rollups:
            client = rollup_chains.get(r.target)
            if client is None:
                raise GatewayError(f"no chain client for roll-up target {r.target}")
            targets.append(
                AnchorTarget(r.target, r.target, AnchorKind.ROLLUP, client, r.chain.confirmations, r.chain.poll_s)
            )
        return targets

    @property
    def metrics(self) -> Metrics:
        return self.health.metrics

    @property
    def loops(self) -> dict[str, asyncio.Task[None]]:
        """The stage loops' tasks by name, once started (the watchdog checks they still run)."""
        return {t.get_name(): t for t in self._tasks}

    @property
    def last_error(self) -> str | None:
        return self.health.last_error

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        self.publisher.on_connect = self._on_connect
        await self.publisher.start()
        publish = PublishLoop(self.publisher, self.health, self.wakes.publish, self.delivery, self.announcements)
        loops: list[tuple[str, Callable[[], Coroutine[Any, Any, None]]]] = [
            ("ingest", self.ingest.run),
            ("publish", publish.run),
            ("acks", self.delivery.ack_loop),
            ("batching", self.batching.run),
            ("head", self.head.run),
            ("retention", self.retention.run),
        ]
        if self.anchoring.targets:
            loops.append(("anchoring", self.anchoring.run))
        if self.audiences is not None:
            loops.append(("audiences", self.audiences.run))
        self._tasks = [asyncio.create_task(f(), name=name) for name, f in loops]
        self._tasks += [
            asyncio.create_task(self.batching.rollup_loop(r), name=f"rollup-{r.target}")
            for r in self.cfg.rollups
            if r.target in {t.name for t in self.anchoring.targets}
        ]
        for name, idle_s in self.idle_waits().items():
            if name in self.loops:
                self.health.beats.expect(name, idle_s)
        log.info(
            "gateway %s started (region %s, next seq %d)",
            self.cfg.gateway_id,
            self.cfg.region,
            self.journal.records.next_seq,
        )

    def idle_waits(self) -> dict[str, float]:
        """Each stage loop's longest wait between passes by design (its watchdog bound adds one pass's work)."""
        cfg = self.cfg
        polls = [t.poll_s for t in self.anchoring.targets]
        return {
            "ingest": IDLE_BEAT_S + cfg.publish.linger_ms / 1000,
            "publish": IDLE_BEAT_S,
            "acks": ACK_FLUSH_S,
            "batching": 0.1,
            "head": cfg.publish.head_interval_s + HEAD_MIN_SPACING_S + IDLE_BEAT_S,
            "retention": cfg.retention.interval_s,
            "anchoring": (min(polls) if polls else 0.0) + ANCHOR_RETRY_S,
            **{f"rollup-{r.target}": 1.0 for r in cfg.rollups},
        }

    async def submit(self, frame: Frame) -> None:
        """Hand a received frame to the pipeline; stamps the gateway receive time now."""
        await self.ingest.submit(frame)

    async def backlog(self) -> Backlog:
        """What is left to do, read in one call on the journal thread: one consistent snapshot.

        Read as separate calls, a batch closed between them (its records no longer unbatched, the batch not
        yet counted as unpublished) looked like no work at all, and drain could end before that batch was
        published or anchored.
        """
        return await self.worker.call(self._backlog)

    def _backlog(self) -> Backlog:
        j = self.journal
        st = j.stats()
        rng = j.batches.unbatched_range()
        rollups = self.batching.rollups_behind([t.name for t in self.anchoring.targets if t.kind is AnchorKind.ROLLUP])
        anchors_batches = any(t.kind is AnchorKind.BATCH for t in self.anchoring.targets)
        return Backlog(
            undelivered=st.undelivered,
            unbatched=0 if rng is None else rng[1] - rng[0] + 1,
            unpublished_batches=st.unpublished_batches,
            anchors_open=sum(st.anchors.get(s, 0) for s in OPEN_STATES) if anchors_batches else 0,
            unpublished_receipts=st.unpublished_receipts,
            rollups_open=rollups,
            views_open=0 if self.audiences is None else self.audiences.backlog(),
        )

    async def drain(self, timeout: float) -> bool:
        """Close the last batch and wait until everything is delivered, signed and anchored."""
        self.ingest.flush()
        self.batching.flush()
        deadline = monotonic() + timeout
        while monotonic() < deadline:
            if self.ingest.settled:
                await self.delivery.flush_acks()  # the ack loop's 0.2 s rhythm would hold the last acks back
                if (await self.backlog()).empty:
                    return True
            self.wakes.publish.set()
            self.wakes.anchor.set()
            await asyncio.sleep(0.01)
        return False

    async def stop(self, drain_timeout: float = 30.0) -> bool:
        """Stop cleanly: finish what was accepted (bounded by ``drain_timeout``), then say offline."""
        drained = await self.drain(drain_timeout) if drain_timeout > 0 else False
        await self.delivery.flush_acks()
        with contextlib.suppress(Exception):
            if self.publisher.connected:
                await asyncio.wait_for(await self.head.publish(), 5)  # naming the batch drain just closed
                fut = await self.publisher.publish(self.topics.status, self._status_payload("offline"), 1, True)
                await asyncio.wait_for(fut, 5)
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.publisher.stop()
        await self.delivery.flush_acks()
        self.worker.shutdown()
        self.anchoring.shutdown()
        log.info("gateway stopped (%s)", "drained" if drained else "work left in the journal for next start")
        return drained

    # ---------------------------------------------------------------- connection and device states
    def _status_payload(self, state: str) -> bytes:
        return cbor.dumps({"state": state, "t": wall_ms(), "gw": self.cfg.gateway_id})

    async def _on_connect(self) -> None:
        """Birth on every (re)connect: retained key, status and head, then re-send from the journal."""
        self.delivery.reconnected()  # everything undelivered is re-read from the journal
        self.announcements.reconnected()
        if self.audiences is not None:
            self.audiences.reconnected()
        self._device_states.clear()  # re-announce device states after a reconnect
        key = cbor.dumps({"key_id": self.signer.key_id, "pem": self.signer.public_key_pem()})
        await self.publisher.publish(self.topics.key, key, 1, True)
        await self.publisher.publish(self.topics.status, self._status_payload("online"), 1, True)
        await self.head.publish_at_birth()  # the rest of the birth (re-sending) must still happen
        self.wakes.publish.set()

    async def publish_device_states(self, states: dict[str, dict[str, Any]] | None = None) -> None:
        """Retained per-device state, published only when it changed (best effort: it is not a reading)."""
        for dev, state in (self.devices.device_states() if states is None else states).items():
            payload = cbor.dumps({**state, "t": wall_ms()})
            key = cbor.dumps(state)
            if self._device_states.get(dev) == key or not self.publisher.connected:
                continue
            try:
                await self.publisher.publish(self.topics.device_state(dev), payload, 1, True)
            except PublishError:
                return
            self._device_states[dev] = key
