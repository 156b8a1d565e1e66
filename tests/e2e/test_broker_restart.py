"""The broker goes away mid-stream and comes back: everything accepted is still delivered and anchored."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import pytest

from bench.services import Mosquitto, free_port
from edge.sm2 import load_public_key_pem
from edge.topics import Topics
from gateway.cli.harness import dev_chain
from gateway.config import BatchConfig, ChainConfig, GatewayConfig, MqttConfig
from gateway.keys import generate_keypair
from gateway.runtime import assemble
from gateway.sources import SimulatedStrapSource
from tests.e2e.harness import Recorder

pytestmark = pytest.mark.slow


def test_broker_restart_loses_nothing(tmp_path: Path) -> None:
    (tmp_path / "broker").mkdir()
    broker = Mosquitto(free_port(), tmp_path / "broker", persistent=True)
    broker.start()
    generate_keypair(tmp_path / "keys")
    chain = dev_chain(secrets.token_bytes(32)).client
    cfg = GatewayConfig(
        gateway_id="gw-br",
        region="foshan",
        state_dir=tmp_path,
        mqtt=MqttConfig(url=broker.url),
        batch=BatchConfig(max_records=100, max_age_s=0.5),
        chain=ChainConfig(kind="inproc", poll_s=0.1),
    ).validated()
    key = load_public_key_pem((tmp_path / "keys" / "gateway.pub").read_text())
    try:
        # The platform keeps a persistent MQTT 5 session, so the broker queues for it while it reconnects.
        with Recorder(broker.url, Topics("foshan", "gw-br"), session_expiry_s=600) as rec:

            async def run() -> tuple[int, int, int]:
                gw = assemble(cfg, chain).gateway
                await gw.start()
                source = SimulatedStrapSource(devices=5, interval_s=1.0, seed=9, speed=40)
                task = asyncio.create_task(source.run(gw.submit))
                await asyncio.sleep(1.5)
                broker.stop()  # SIGTERM: Mosquitto saves sessions and queues
                await asyncio.sleep(2.0)  # readings keep arriving and are journaled meanwhile
                during = gw.metrics.records
                broker.start()
                await asyncio.sleep(1.5)
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                assert await gw.stop(drain_timeout=60)
                gw.journal.close()
                return source.frames_sent, gw.metrics.records, during

            sent, journaled, during = asyncio.run(run())
            rec.wait_idle(1.5)
            report = rec.verify(key, chain)
    finally:
        broker.stop()
    print(report.summary())
    assert sent == journaled and during > 0
    assert report.ok, report.summary()
    g = report.gateways["gw-br"]
    assert g.records == g.records_in_verified_batches == sent
