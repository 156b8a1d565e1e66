"""A simulated BP cuff over emulated Bluetooth → gateway → Mosquitto: its cuff pressure arrives as records of
their own kind, signed, batched, anchored and verified, and every frame it sent is accounted for."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import pytest
from bumble.link import LocalLink

from edge.record import Record, decode_data_message
from edge.sm2 import load_public_key_pem
from edge.topics import Topics, parse_topic
from firmware_sim.bumble_devices import BumbleSensor, Misbehaviour
from firmware_sim.devices import BloodPressureCuff
from gateway.ble.bumble_backend import BumbleCentral, BumbleClient, BumbleScanner
from gateway.ble.source import BleakSource, BleSettings
from gateway.cli.harness import dev_chain
from gateway.config import BatchConfig, ChainConfig, GatewayConfig, MqttConfig
from gateway.keys import generate_keypair
from gateway.runtime import assemble
from tests.conftest import Mosquitto
from tests.e2e.harness import Recorder

pytestmark = pytest.mark.slow

ICP, BPM = 0x2A36, 0x2A35


def test_cuff_pressure_reaches_the_platform_as_its_own_kind(mosquitto: Mosquitto, tmp_path: Path) -> None:
    generate_keypair(tmp_path / "keys")
    chain = dev_chain(secrets.token_bytes(32)).client
    cfg = GatewayConfig(
        gateway_id="gw-cuff",
        region="zhuhai",
        state_dir=tmp_path,
        source="ble",
        mqtt=MqttConfig(url=mosquitto.url),
        batch=BatchConfig(max_records=25, max_age_s=0.5),
        chain=ChainConfig(kind="inproc", poll_s=0.1),
    ).validated()
    key = load_public_key_pem((tmp_path / "keys" / "gateway.pub").read_text())

    async def run() -> tuple[BumbleSensor, int, int]:
        link = LocalLink()
        # A measurement every 0.4 s: nine cuff pressures notified, then the result indicated. Every 11th
        # frame is cut to its flags, so malformed cuff-pressure frames must be accounted for too.
        cuff = BumbleSensor(
            link,
            "F5:00:00:00:00:01",
            BloodPressureCuff("cuff", seed=4, interval_s=0.4),
            misbehaviour=Misbehaviour(malformed_every=11),
        )
        await cuff.start()
        source = BleakSource(
            BleSettings(allow=frozenset({cuff.address})),
            b"c" * 32,
            {"central": BumbleCentral(link)},
            BumbleScanner,
            BumbleClient,
        )
        gw = assemble(cfg, chain).gateway
        await gw.start()
        task = asyncio.create_task(source.run(gw.submit))
        await asyncio.sleep(3)
        await cuff.stop_notifying()
        await asyncio.sleep(0.5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert await gw.drain(30)
        await gw.stop(drain_timeout=5)
        gw.journal.close()
        return cuff, gw.metrics.records, gw.metrics.malformed_frames

    with Recorder(mosquitto.url, Topics("zhuhai", "gw-cuff")) as rec:
        cuff, records, malformed = asyncio.run(run())
        rec.wait_idle(1.0)
        report = rec.verify(key, chain)
        received = [
            Record.from_bytes(r)
            for t, p, _ in rec.messages
            if parse_topic(t).channel == "data"
            for r in decode_data_message(p)
        ]
    assert report.ok, report.summary()
    assert report.gateways["gw-cuff"].records_in_verified_batches == len(received) == records
    emitted = cuff.emitted()
    assert records + malformed == len(emitted)  # every frame the cuff sent: a record or counted malformed

    icp_sent = [d for c, d in emitted if c == ICP]
    icp_bad = [d for d in icp_sent if len(d) == 1]  # truncated to the flags by the misbehaviour
    icp_records = [r for r in received if r.kind == "intermediate_cuff_pressure"]
    assert len(icp_sent) >= 27 and icp_bad  # three measurements or more, some of them corrupt
    assert [r.raw for r in icp_records] == [d for d in icp_sent if len(d) > 1]  # in order, byte for byte
    assert all(set(r.val) == {"cuff_pressure"} and r.q == () for r in icp_records)
    bp_records = [r for r in received if r.kind == "blood_pressure"]
    assert [r.raw for r in bp_records] == [d for c, d in emitted if c == BPM and len(d) > 1]
    assert not any("cuff_pressure" in r.val for r in bp_records)
    assert not any({"systolic", "diastolic"} & set(r.val) for r in icp_records)
    assert malformed == sum(1 for c, d in emitted if c in (ICP, BPM) and len(d) == 1)
