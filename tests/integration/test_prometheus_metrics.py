"""/metrics after a real run (simulated straps → a real Mosquitto → the in-process chain): the exposition parses
with Prometheus's own text-format parser, follows its naming conventions and says what happened."""

from __future__ import annotations

import asyncio
import re
import secrets
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from gateway.cli.harness import dev_chain
from gateway.config import BatchConfig, ChainConfig, GatewayConfig, MqttConfig
from gateway.keys import generate_keypair
from gateway.metrics import Latencies
from gateway.prometheus import COUNTERS, scrape
from gateway.runtime import assemble
from gateway.sources import SimulatedStrapSource
from tests.conftest import Mosquitto

ADDRESS = re.compile(r"([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}")


def samples(text: str) -> dict[str, list[Sample]]:
    out: dict[str, list[Sample]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append(s)
    return out


def value(by_name: dict[str, list[Sample]], name: str, **labels: str) -> float:
    [s] = [s for s in by_name[name] if all(s.labels.get(k) == v for k, v in labels.items())]
    return s.value


def test_metrics_after_a_real_run_parse_and_match_the_journal(mosquitto: Mosquitto, tmp_path: Path) -> None:
    generate_keypair(tmp_path / "keys")
    chain = dev_chain(secrets.token_bytes(32)).client
    cfg = GatewayConfig(
        gateway_id="gw-metrics",
        region="foshan",
        state_dir=tmp_path,
        mqtt=MqttConfig(url=mosquitto.url),
        batch=BatchConfig(max_records=50, max_age_s=0.5),
        chain=ChainConfig(kind="inproc", poll_s=0.1),
    ).validated()

    async def run() -> tuple[str, str, int, int]:
        parts = assemble(cfg, chain)
        gw = parts.gateway
        await gw.start()
        await gw.publisher.wait_connected(10)
        before = (await scrape(gw)).decode()
        source = SimulatedStrapSource(devices=4, interval_s=1.0, seed=5, speed=40)
        task = asyncio.create_task(source.run(gw.submit))
        await asyncio.sleep(2.5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert await gw.drain(60), "the gateway could not finish its work"
        after = (await scrape(gw)).decode()
        batches = gw.metrics.batches
        assert await gw.stop(drain_timeout=10)
        parts.journal.close()
        return before, after, source.frames_sent, batches

    before, after, sent, batches = asyncio.run(run())
    m0, m = samples(before), samples(after)

    # At start: nothing in, nothing out, connected to the broker, no head yet.
    assert value(m0, "tiyi_records_journaled_total") == 0
    assert value(m0, "tiyi_mqtt_connected") == 1
    assert value(m0, "tiyi_head_batch") == 0

    # Records in and out, the journal's depth and what is left to acknowledge.
    assert sent > 100
    assert value(m, "tiyi_frames_received_total") == sent
    assert value(m, "tiyi_records_journaled_total") == sent
    assert value(m, "tiyi_records_delivered_total") == sent
    assert value(m, "tiyi_journal_records") == sent
    assert value(m, "tiyi_journal_unacknowledged_records") == 0
    assert value(m, "tiyi_journal_size_bytes") > 0
    # Per device: four pseudonymous ids whose counts add up; never an address in the whole exposition.
    per_device = m["tiyi_device_records_total"]
    assert len(per_device) == 4 and sum(s.value for s in per_device) == sent
    assert not ADDRESS.search(after)

    # Every batch closed was timed, anchored final (timed too) and is what the head names.
    assert batches >= 3
    assert value(m, "tiyi_batch_close_seconds_count") == batches
    assert value(m, "tiyi_batch_close_seconds_bucket", le="+Inf") == batches
    assert value(m, "tiyi_batch_close_seconds_sum") > 0
    assert value(m, "tiyi_anchor_latency_seconds_count") == batches
    assert value(m, "tiyi_anchor_jobs", target=cfg.chain_target, state="final") == batches
    assert value(m, "tiyi_anchors_final_total") == batches
    assert value(m, "tiyi_head_batch") == batches
    # Broker: connected once, no reconnect. No radio in this run: the BLE counters exist and are zero.
    assert value(m, "tiyi_mqtt_reconnects_total") == 0
    assert value(m, "tiyi_ble_connects_total") == 0 == value(m, "tiyi_ble_adapter_resets_total")

    # Conventions: counters end in _total, every Metrics field is exported, units are in the names.
    for fam in text_string_to_metric_families(after):
        assert fam.name.startswith("tiyi_")
        if fam.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in fam.samples)
        if fam.type == "histogram":
            assert fam.name.endswith("_seconds")
    exported = {f.name for f in text_string_to_metric_families(after)}
    assert {name for name, _ in COUNTERS.values()} <= exported


def test_latencies_buckets_are_inclusive_upper_bounds_and_cumulative() -> None:
    lat = Latencies((0.1, 1.0))
    for s in (0.05, 0.1, 0.5, 1.0, 7.0):
        lat.observe(s)
    assert lat.cumulative() == [(0.1, 2), (1.0, 4), (float("inf"), 5)]
    assert lat.count == 5 and abs(lat.sum - 8.65) < 1e-9
