"""The pipeline decodes each device with its model's quirks (the source says which)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from edge.frame import Frame
from edge.record import Record
from edge.sm2 import generate_signer
from gateway.config import GatewayConfig
from gateway.journal import SqliteJournal
from gateway.service import Gateway


def test_quirks_reach_the_decoder(tmp_path: Path) -> None:
    cfg = GatewayConfig(gateway_id="gw-q", state_dir=tmp_path).validated()
    journal = SqliteJournal.open(tmp_path / "j.sqlite3", "gw-q")
    gw = Gateway(cfg, journal, publisher=Any, signer=generate_signer(), chain=None)  # type: ignore[arg-type]
    gw.quirks_for = lambda dev: {"ftms_variant": "current"} if dev == "rower-b" else None
    rower = bytes.fromhex("00001c6400")

    async def run() -> None:
        for dev in ("rower-a", "rower-b"):
            gw._unsettled += 1
            await gw._accept([(Frame(dev, 0x2AD1, rower), 1_700_000_000_000, False)])

    asyncio.run(run())
    a, b = (Record.from_bytes(x) for x in journal.records(1, 2))
    assert (a.dev, a.val["stroke_rate"]) == ("rower-a", 28.0)
    assert (b.dev, b.val["stroke_rate"]) == ("rower-b", 14.0)
    assert a.raw == b.raw == rower  # the bytes are kept as received either way


def test_a_reading_no_record_may_hold_is_refused_and_counted_and_ingest_goes_on(tmp_path: Path) -> None:
    """A source handing over an id unfit for topics used to raise out of the ingest loop; now the frame is
    counted as malformed and the frames around it are journaled in order."""
    cfg = GatewayConfig(gateway_id="gw-q", state_dir=tmp_path).validated()
    journal = SqliteJournal.open(tmp_path / "j.sqlite3", "gw-q")
    gw = Gateway(cfg, journal, publisher=Any, signer=generate_signer(), chain=None)  # type: ignore[arg-type]
    hr = bytes.fromhex("0048")
    frames = [(Frame(dev, 0x2A37, hr), 1_700_000_000_000, False) for dev in ("hr-1", "bad id/#", "hr-2")]

    async def run() -> None:
        gw._unsettled += len(frames)
        await gw._accept(frames)

    asyncio.run(run())
    assert gw.metrics.malformed_frames == 1 and gw.metrics.records == 2
    assert [Record.from_bytes(x).dev for x in journal.records(1, 2)] == ["hr-1", "hr-2"]
    assert journal.next_seq == 3  # no seq was spent on the refused reading
