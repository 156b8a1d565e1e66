"""Simulated straps → gateway → a real Mosquitto → anchored on a chain → an independent verifier."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import cbor2
import pytest

from edge.sm2 import load_public_key_pem
from edge.topics import Topics
from gateway.cli.harness import dev_chain
from gateway.config import BatchConfig, ChainConfig, GatewayConfig, MqttConfig
from gateway.keys import generate_keypair
from gateway.runtime import assemble
from gateway.sources import SimulatedStrapSource
from tests.conftest import Mosquitto
from tests.e2e.harness import Recorder

pytestmark = pytest.mark.slow


def test_every_emitted_reading_arrives_proven_and_anchored(mosquitto: Mosquitto, tmp_path: Path) -> None:
    generate_keypair(tmp_path / "keys")
    chain = dev_chain(secrets.token_bytes(32)).client  # funded: this chain charges gas, the gateway pays for it
    cfg = GatewayConfig(
        gateway_id="gw-e2e",
        region="guangzhou",
        state_dir=tmp_path,
        mqtt=MqttConfig(url=mosquitto.url),
        batch=BatchConfig(max_records=150, max_age_s=1.0),
        chain=ChainConfig(kind="inproc", poll_s=0.1),
    ).validated()
    key = load_public_key_pem((tmp_path / "keys" / "gateway.pub").read_text())

    with Recorder(mosquitto.url, Topics(cfg.region, cfg.gateway_id)) as rec:

        async def run() -> tuple[int, int]:
            parts = assemble(cfg, chain)
            gw = parts.gateway
            await gw.start()
            source = SimulatedStrapSource(devices=8, interval_s=1.0, seed=3, speed=40)
            task = asyncio.create_task(source.run(gw.submit))
            await asyncio.sleep(4)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            assert await gw.stop(drain_timeout=60), "the gateway could not finish its work"
            parts.journal.close()
            return source.frames_sent, gw.metrics.records

        sent, journaled = asyncio.run(run())
        rec.wait_idle(1.0)
        report = rec.verify(key, chain)
        states: dict[int, list[str]] = {}
        for topic, payload, _ in rec.messages:
            if topic.endswith("/anchor/state"):
                note = cbor2.loads(payload)
                states.setdefault(note["n"], []).append(note["state"])

    print(report.summary())
    assert sent == journaled > 500
    assert report.ok, report.summary()
    g = report.gateways["gw-e2e"]
    assert g.records == g.records_in_verified_batches == sent
    assert (g.first_seq, g.last_seq) == (1, sent)
    assert g.anchors_verified == g.batches_verified >= 4
    # Every anchor job's state changes were announced as they happened (QoS 0: expect them on localhost).
    assert all(states.get(n) == ["signed", "submitted", "included", "final"] for n in range(1, g.batches_verified + 1))


def test_split_records_are_journaled_whole_and_nothing_held_is_lost_at_stop(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """A bike's two-notification records become one record each, its raw the parts as sent; a part still
    waiting for the rest when the gateway stops is journaled anyway, flagged, not dropped."""
    from edge.frame import Frame
    from edge.record import Record
    from firmware_sim.devices import IndoorBike

    generate_keypair(tmp_path / "keys")
    cfg = GatewayConfig(
        gateway_id="gw-split",
        region="foshan",
        state_dir=tmp_path,
        mqtt=MqttConfig(url=mosquitto.url),
        chain=ChainConfig(kind="none"),
    ).validated()
    bike = IndoorBike("bike-1", seed=5)
    sent = [f for step in range(1, 31) for f in bike.frames_at(float(step))]

    async def run() -> tuple[list[Record], int]:
        parts = assemble(cfg, None)
        gw = parts.gateway
        await gw.start()
        for f in sent:
            await gw.submit(f)
        await gw.submit(Frame("bike-1", 0x2AD2, sent[0].data))  # a first part whose record never completes
        assert await gw.stop(drain_timeout=30)
        records = [Record.from_bytes(b) for b in parts.journal.records.read(1, parts.journal.records.next_seq - 1)]
        parts.journal.close()
        return records, gw.metrics.frames_joined

    records, joined = asyncio.run(run())
    assert len(sent) == 60 and len(records) == 31 and joined == 30
    assert b"".join(r.raw for r in records) == b"".join(f.data for f in sent) + sent[0].data
    assert all("more_data" not in r.q and r.val["elapsed_time"] == i + 1 for i, r in enumerate(records[:30]))
    assert records[30].q == ("more_data",)
