"""Simulated straps → gateway → a real Mosquitto → anchored on a chain → an independent verifier."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import pytest

from anchoring.devchain import DevChain
from anchoring.evm import EvmChainClient
from edge.sm2 import load_public_key_pem
from edge.topics import Topics
from gateway.config import BatchConfig, ChainConfig, GatewayConfig, MqttConfig
from gateway.keys import generate_keypair
from gateway.runtime import assemble
from gateway.sources import SimulatedStrapSource
from tests.conftest import Mosquitto
from tests.e2e.harness import Recorder

pytestmark = pytest.mark.slow


def test_every_emitted_reading_arrives_proven_and_anchored(mosquitto: Mosquitto, tmp_path: Path) -> None:
    generate_keypair(tmp_path / "keys")
    chain_dev = DevChain()
    chain = EvmChainClient(chain_dev.web3, secrets.token_bytes(32), contract=chain_dev.contract_address)
    chain_dev.fund(chain.account_address)  # this chain charges gas: the gateway pays from its own account
    cfg = GatewayConfig(gateway_id="gw-e2e", region="guangzhou", state_dir=tmp_path,
                        mqtt=MqttConfig(url=mosquitto.url), batch=BatchConfig(max_records=150, max_age_s=1.0),
                        chain=ChainConfig(kind="inproc", poll_s=0.1)).validated()
    key = load_public_key_pem((tmp_path / "keys" / "gateway.pub").read_text())

    with Recorder(mosquitto.url, Topics(cfg.region, cfg.gateway_id).all) as rec:
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

    print(report.summary())
    assert sent == journaled > 500
    assert report.ok, report.summary()
    g = report.gateways["gw-e2e"]
    assert g.records == g.records_in_verified_batches == sent
    assert (g.first_seq, g.last_seq) == (1, sent)
    assert g.anchors_verified == g.batches_verified >= 4
