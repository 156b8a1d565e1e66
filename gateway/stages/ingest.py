"""Ingest: stamp each frame, join multi-part records, decode, salt, encode, and append to the journal."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Mapping
from typing import ClassVar, Protocol

from edge.errors import EdgeError, MalformedFrame, UnknownCharacteristic
from edge.frame import Frame
from edge.gatt import decode
from edge.gatt.assembly import JOINABLE, Joined, RecordAssembler
from edge.record import SALT_BYTES, encode_record
from gateway.clock import monotonic, wall_ms
from gateway.errors import JournalError
from gateway.heartbeats import IDLE_BEAT_S
from gateway.ingest_buffer import IngestBuffer
from gateway.stages.ports import DeviceDirectory, Health, JournalErrorPolicy, RecordAppender, Worker

log = logging.getLogger("tiyi.gateway")

INGEST_QUEUE_FRAMES = 20_000
MAX_FRAMES_PER_APPEND = 2_000
CLOCK_JUMP_MS = 2_000  # NTP slews far less than this; a step this large is a jump worth flagging

Stamped = tuple[Frame, int, bool]  # a frame, its wall-clock receive time (ms), whether the clock jumped before it
Row = tuple[int, str, int, bytes]  # a journaled record: seq, device, time, encoded bytes


class RecordSink(Protocol):
    """Told about records right after they are durable (delivery keeps them to publish without a read-back)."""

    def journaled(self, rows: list[Row]) -> None: ...


class WallStamp:
    """Wall time for a record, and whether the wall clock jumped since the previous frame.

    Order never depends on it (seq does); a jump is flagged on the record (``clock_jump``) so a platform
    knows not to trust that timestamp's distance to its neighbours.
    """

    def __init__(self, health: Health) -> None:
        self._health = health
        self._last: tuple[int, float] | None = None  # (wall ms, monotonic s) of the previous frame

    def __call__(self) -> tuple[int, bool]:
        wall, mono = wall_ms(), monotonic()
        jumped = False
        if self._last is not None:
            last_wall, last_mono = self._last
            drift_ms = (wall - last_wall) - (mono - last_mono) * 1000
            jumped = wall < last_wall or abs(drift_ms) > CLOCK_JUMP_MS
            if jumped:
                self._health.metrics.clock_jumps += 1
                log.warning("wall clock jumped by %+.0f ms; flagging the affected record", drift_ms)
        self._last = (wall, mono)
        return wall, jumped


class Ingest:
    """Frames in, durable records out. ``settled`` once every submitted frame is journaled or refused."""

    journal_errors: ClassVar[JournalErrorPolicy] = JournalErrorPolicy.RETRY_SAME

    def __init__(
        self,
        gw: str,
        linger_ms: int,
        records: RecordAppender,
        worker: Worker,
        health: Health,
        devices: DeviceDirectory,
        sink: RecordSink,
        subjects: Callable[[], Mapping[str, str]] = dict,
    ) -> None:
        """``subjects`` answers dev → the bound wearer's ``sub`` (gateway.binding); unbound devices get none."""
        self._subjects = subjects
        self._gw, self._linger_s = gw, linger_ms / 1000
        self._records, self._worker, self._health, self._devices, self._sink = records, worker, health, devices, sink
        self._frames: IngestBuffer[Stamped] = IngestBuffer(INGEST_QUEUE_FRAMES)
        self._stamp = WallStamp(health)
        # Parts of multi-notification records wait here for the rest (in memory: like frames still in the
        # radio, they are not accepted until their record is whole or given up on).
        self._assembler: RecordAssembler[tuple[int, bool]] = RecordAssembler()
        self._unsettled = 0  # frames submitted but not yet journaled or refused
        self._flushing = False  # draining: parts of unfinished records are given up now, not after their timeout

    @property
    def settled(self) -> bool:
        return self._unsettled == 0 and not self._assembler.holding

    def flush(self) -> None:
        self._flushing = True

    async def submit(self, frame: Frame) -> None:
        """Hand a received frame to the pipeline; stamps the gateway receive time now."""
        self._health.metrics.frames_in += 1
        self._unsettled += 1
        await self._frames.put((frame, *self._stamp()))

    async def run(self) -> None:
        while True:
            self._health.beat("ingest")
            # While parts are held, wake up to give up on records whose last part never comes; idle, wake only
            # to beat (the watchdog's sign that this loop is not stuck).
            items = await self._frames.take(
                MAX_FRAMES_PER_APPEND, self._linger_s, 0.2 if self._assembler.holding else IDLE_BEAT_S
            )
            if items or self._assembler.holding:
                await self.accept(items)

    async def accept(self, items: list[Stamped]) -> None:
        """Journal the records of ``items`` (submitted frames) in one append; retries while the journal fails."""
        rows = self._encode(self._join(items))
        while rows:
            try:
                await self._worker.call(self._records.append_encoded, rows)
                break
            except JournalError as exc:
                # Nothing was written and no seq was consumed: refuse loudly, retry the same records.
                self._health.journal_failed(self.journal_errors, f"journal refused {len(rows)} records", exc)
                self._health.beat("ingest")  # retrying a failing journal is not being stuck
                await asyncio.sleep(1.0)
        self._unsettled -= len(items)
        if rows:
            self._health.metrics.records += len(rows)
            self._health.journaled(rows)
            self._sink.journaled(rows)

    def _join(self, items: list[Stamped]) -> list[Stamped]:
        """Pass frames through the assembler: whole records out, parts of unfinished ones held back."""
        asm = self._assembler
        if not asm.holding and not any(f.char in JOINABLE for f, _, _ in items):
            return items  # the common case (straps, cuffs, ...): nothing to join, nothing to copy
        now = monotonic()
        out: list[Stamped] = []
        for frame, t, jumped in items:
            if frame.char not in JOINABLE:
                out.append((frame, t, jumped))
                continue
            quirks = self._devices.decode_quirks(frame.dev)
            out += self._unpack(asm.feed(frame.dev, frame.char, frame.data, (t, jumped), now, quirks))
        if asm.holding:
            out += self._unpack(asm.flush() if self._flushing else asm.expire(now))
        return out

    def _unpack(self, joined: list[Joined[tuple[int, bool]]]) -> list[Stamped]:
        self._health.metrics.frames_joined += sum(j.parts - 1 for j in joined)
        return [(Frame(j.dev, j.char, j.data), *j.tag) for j in joined]

    def _encode(self, frames: list[Stamped]) -> list[Row]:
        """Decode each frame and encode its readings as records with seqs from ``next_seq`` on."""
        first = seq = self._records.next_seq
        rows: list[Row] = []
        # One getrandom call for the whole group, one salt per frame (most frames yield one reading; _salt
        # draws afresh for the rest).
        salts = secrets.token_bytes(SALT_BYTES * len(frames))
        subs = self._subjects()
        for frame, t, jumped in frames:
            try:
                readings = decode(frame.char, frame.data, self._devices.decode_quirks(frame.dev))
            except UnknownCharacteristic:
                self._health.metrics.unknown_frames += 1
                continue
            except (MalformedFrame, EdgeError) as exc:
                self._malformed(frame, exc)
                continue
            for r in readings:
                try:
                    data = encode_record(
                        self._gw,
                        seq,
                        frame.dev,
                        t,
                        r.kind,
                        r.val,
                        frame.data,
                        _salt(salts, seq - first),
                        (*r.q, "clock_jump") if jumped else r.q,
                        subs.get(frame.dev),
                    )
                except EdgeError as exc:  # a reading no record may hold (say, a bad device id): refused, counted
                    self._malformed(frame, exc)
                    continue
                rows.append((seq, frame.dev, t, data))
                seq += 1
        return rows

    def _malformed(self, frame: Frame, exc: Exception) -> None:
        m = self._health.metrics
        m.malformed_frames += 1
        if m.malformed_frames <= 10 or m.malformed_frames % 1000 == 0:
            log.warning(
                "malformed frame from %s on 0x%04X (%d so far): %s", frame.dev, frame.char, m.malformed_frames, exc
            )


def _salt(pool: bytes, i: int) -> bytes:
    start = i * SALT_BYTES
    if start + SALT_BYTES > len(pool):  # more readings than the pool was sized for
        return secrets.token_bytes(SALT_BYTES)
    return pool[start : start + SALT_BYTES]
