"""The ingest stage decodes each device with its model's quirks (the device directory says which)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edge.frame import Frame
from edge.record import Record
from gateway.journal import SqliteJournal
from gateway.stages.ingest import Ingest, Row, Stamped
from gateway.stages.ports import NO_DEVICES, DeviceDirectory, Health, Worker


class Rowers:
    """A directory that knows one rower model reports stroke rate in strokes per minute ("current")."""

    def decode_quirks(self, dev: str) -> Mapping[str, str] | None:
        return {"ftms_variant": "current"} if dev == "rower-b" else None

    def device_states(self) -> dict[str, dict[str, Any]]:
        return {}


class Rows:
    def __init__(self) -> None:
        self.rows: list[Row] = []

    def journaled(self, rows: list[Row]) -> None:
        self.rows += rows


def ingest(tmp_path: Path, devices: DeviceDirectory, health: Health, sink: Rows) -> tuple[Ingest, SqliteJournal]:
    journal = SqliteJournal.open(tmp_path / "j.sqlite3", "gw-q")
    return Ingest("gw-q", 0, journal.records, Worker("test-journal"), health, devices, sink), journal


def accept(stage: Ingest, frames: list[Stamped]) -> None:
    asyncio.run(stage.accept(frames))


def test_quirks_reach_the_decoder(tmp_path: Path) -> None:
    stage, journal = ingest(tmp_path, Rowers(), Health(), Rows())
    rower = bytes.fromhex("00001c6400")
    for dev in ("rower-a", "rower-b"):
        accept(stage, [(Frame(dev, 0x2AD1, rower), 1_700_000_000_000, False)])
    a, b = (Record.from_bytes(x) for x in journal.records.read(1, 2))
    assert (a.dev, a.val["stroke_rate"]) == ("rower-a", 28.0)
    assert (b.dev, b.val["stroke_rate"]) == ("rower-b", 14.0)
    assert a.raw == b.raw == rower  # the bytes are kept as received either way


def test_a_reading_no_record_may_hold_is_refused_and_counted_and_ingest_goes_on(tmp_path: Path) -> None:
    """A source handing over an id unfit for topics used to raise out of the ingest loop; now the frame is
    counted as malformed and the frames around it are journaled in order."""
    health, sink = Health(), Rows()
    stage, journal = ingest(tmp_path, NO_DEVICES, health, sink)
    hr = bytes.fromhex("0048")
    frames = [(Frame(dev, 0x2A37, hr), 1_700_000_000_000, False) for dev in ("hr-1", "bad id/#", "hr-2")]
    accept(stage, frames)
    gw = health  # the counters the gateway reports
    assert gw.metrics.malformed_frames == 1 and gw.metrics.records == 2
    assert [Record.from_bytes(x).dev for x in journal.records.read(1, 2)] == ["hr-1", "hr-2"]
    assert journal.records.next_seq == 3  # no seq was spent on the refused reading
    assert [q for q, _, _, _ in sink.rows] == [1, 2]  # and only the journaled records went on to delivery
