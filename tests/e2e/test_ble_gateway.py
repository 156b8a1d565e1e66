"""Emulated Bluetooth straps → BleakSource → gateway → Mosquitto: records proven, device state retained."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import pytest
from bumble.link import LocalLink

from edge import cbor
from edge.sm2 import load_public_key_pem
from edge.topics import Topics, parse_topic
from firmware_sim.bumble_devices import BumbleHeartRateStrap, Misbehaviour
from firmware_sim.heart_rate_strap import HeartRateStrap
from gateway.ble.bumble_backend import BumbleCentral, BumbleClient, BumbleScanner
from gateway.ble.source import BleakSource, BleSettings
from gateway.cli.harness import dev_chain
from gateway.config import BatchConfig, ChainConfig, GatewayConfig, MqttConfig
from gateway.keys import generate_keypair
from gateway.runtime import assemble, device_state_loop
from tests.conftest import Mosquitto
from tests.e2e.harness import Recorder

pytestmark = pytest.mark.slow


def test_ble_to_platform(mosquitto: Mosquitto, tmp_path: Path) -> None:
    generate_keypair(tmp_path / "keys")
    chain = dev_chain(secrets.token_bytes(32)).client
    cfg = GatewayConfig(
        gateway_id="gw-ble",
        region="dongguan",
        state_dir=tmp_path,
        source="ble",
        mqtt=MqttConfig(url=mosquitto.url),
        batch=BatchConfig(max_records=40, max_age_s=0.5),
        chain=ChainConfig(kind="inproc", poll_s=0.1),
    ).validated()
    key = load_public_key_pem((tmp_path / "keys" / "gateway.pub").read_text())

    async def run() -> tuple[int, int, int]:
        link = LocalLink()
        straps = [
            BumbleHeartRateStrap(
                link,
                f"F4:00:00:00:00:0{i}",
                HeartRateStrap(f"s{i}", seed=i),
                0.1,
                misbehaviour=Misbehaviour(malformed_every=7 if i == 0 else 0),
            )
            for i in range(3)
        ]
        for s in straps:
            await s.start()
        source = BleakSource(
            BleSettings(allow=frozenset(s.address for s in straps)),
            b"p" * 32,
            {"central": BumbleCentral(link)},
            BumbleScanner,
            BumbleClient,
        )
        gw = assemble(cfg, chain, devices=source).gateway
        await gw.start()
        tasks = [asyncio.create_task(source.run(gw.submit)), asyncio.create_task(device_state_loop(gw, every_s=0.5))]
        await asyncio.sleep(3)
        for s in straps:
            await s.stop_notifying()
        await asyncio.sleep(0.7)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert await gw.drain(30)
        await gw.stop(drain_timeout=5)
        gw.journal.close()
        emitted = sum(s.frames_emitted for s in straps)
        bad = sum(1 for s in straps for d in s.sent if len(d) == 1 and d != b"\x64")  # truncated to the flags
        return emitted, bad, gw.metrics.records + gw.metrics.malformed_frames

    with Recorder(mosquitto.url, Topics("dongguan", "gw-ble")) as rec:
        emitted, bad, accounted = asyncio.run(run())
        rec.wait_idle(1.0)
        report = rec.verify(key, chain)
        states = [(parse_topic(t), cbor.loads(p)) for t, p, _ in rec.messages if "/devices/" in t]
    assert report.ok, report.summary()
    assert bad >= 3 and accounted == emitted  # every frame either became a record or was counted malformed
    g = report.gateways["gw-ble"]
    assert g.records == emitted - bad
    devs = {t.dev for t, _ in states}
    assert len(devs) == 3 and all(d is not None and d.startswith("ble-") for d in devs)
    assert any(s["connected"] and s["battery"] == 100 for _, s in states)
    assert not any("F4:00" in t or b"F4:00" in p for t, p, _ in rec.messages)  # no address leaves the gateway
