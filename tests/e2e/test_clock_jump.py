"""The wall clock jumps backwards and forwards: order and the batch chain hold, timestamps are flagged."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import pytest

from edge.record import Record, decode_data_message
from edge.sm2 import load_public_key_pem
from edge.topics import Topics
from firmware_sim.heart_rate_strap import HeartRateStrap
from gateway.cli.harness import dev_chain
from gateway.config import BatchConfig, ChainConfig, GatewayConfig, MqttConfig
from gateway.keys import generate_keypair
from gateway.runtime import assemble
from gateway.stages import ingest
from tests.conftest import Mosquitto
from tests.e2e.harness import Recorder

pytestmark = pytest.mark.slow
HOUR_MS = 3_600_000


def test_clock_jumps(mosquitto: Mosquitto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    offset = [0]
    real = ingest.wall_ms
    monkeypatch.setattr(ingest, "wall_ms", lambda: real() + offset[0])  # the clock that stamps records
    generate_keypair(tmp_path / "keys")
    chain = dev_chain(secrets.token_bytes(32)).client
    cfg = GatewayConfig(
        gateway_id="gw-clk",
        region="jiangmen",
        state_dir=tmp_path,
        mqtt=MqttConfig(url=mosquitto.url),
        batch=BatchConfig(max_records=7, max_age_s=0.3),
        chain=ChainConfig(kind="inproc", poll_s=0.1),
    ).validated()
    key = load_public_key_pem((tmp_path / "keys" / "gateway.pub").read_text())

    async def run() -> None:
        gw = assemble(cfg, chain).gateway
        await gw.start()
        strap = HeartRateStrap("hr-c", seed=4)
        for i in range(30):
            if i == 10:
                offset[0] = -HOUR_MS  # the clock steps back an hour
            if i == 20:
                offset[0] = +HOUR_MS  # and then two hours forward
            await gw.submit(strap.frame_at(float(i)))
            await asyncio.sleep(0.01)
        assert await gw.drain(60)
        assert gw.metrics.clock_jumps == 2
        await gw.stop(drain_timeout=5)
        gw.journal.close()

    with Recorder(mosquitto.url, Topics("jiangmen", "gw-clk")) as rec:
        asyncio.run(run())
        rec.wait_idle(1.0)
        report = rec.verify(key, chain)
        records = {
            r.seq: r
            for t, p, _ in rec.messages
            if "/data/" in t
            for r in map(Record.from_bytes, decode_data_message(p))
        }
    assert report.ok, report.summary()
    assert sorted(records) == list(range(1, 31))
    flagged = sorted(s for s, r in records.items() if "clock_jump" in r.q)
    assert flagged == [11, 21]
    assert records[11].t < records[10].t and records[21].t > records[20].t + HOUR_MS
