"""``tiyi bench pipeline``: the whole pipeline at full speed against a broker that already runs.

Frames are generated up front and submitted as fast as the gateway takes them; the clock stops when
every record is acknowledged by the broker and every batch is signed and anchored (in-process chain).
A subscriber verifies the stream independently, so a fast but wrong run cannot pass.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anchoring.stream_verifier import StreamVerifier
from anchoring.trust import TrustPolicy
from edge.sm2 import load_public_key_pem
from edge.topics import Topics
from gateway.cli.harness import StreamCollector, dev_chain
from gateway.config import BatchConfig, ChainConfig, GatewayConfig, MqttConfig
from gateway.errors import ConfigError
from gateway.keys import generate_keypair
from gateway.runtime import assemble, settle_heap


@dataclass(frozen=True)
class PipelineOptions:
    """``tiyi bench pipeline``, parsed once."""

    broker: str
    records: int = 20_000
    devices: int = 50
    verify: bool = True

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> PipelineOptions:
        if args.records < 1 or args.devices < 1:
            raise ConfigError("--records and --devices must be at least 1")
        return cls(args.broker, args.records, args.devices, not args.no_verify)


async def run_pipeline(url: str, n: int, devices: int, verify: bool = True) -> dict[str, Any]:
    from firmware_sim.heart_rate_strap import HeartRateStrap

    straps = [HeartRateStrap(f"hr-{i:03d}", seed=i) for i in range(devices)]
    frames = [straps[i % devices].frame_at(float(i // devices)) for i in range(n)]
    with tempfile.TemporaryDirectory(prefix="tiyi-bench-") as d:
        state = Path(d)
        generate_keypair(state / "keys")
        chain = dev_chain(secrets.token_bytes(32)).client
        gw_id = f"gw-bench-{secrets.token_hex(3)}"
        cfg = GatewayConfig(
            gateway_id=gw_id,
            region="shenzhen",
            state_dir=state,
            mqtt=MqttConfig(url=url),
            batch=BatchConfig(max_records=5000, max_age_s=1.0),
            chain=ChainConfig(kind="inproc", poll_s=0.05),
        ).validated()
        key = load_public_key_pem((state / "keys" / "gateway.pub").read_text())
        # Only keep messages while the clock runs; verifying them afterwards keeps the check from competing
        # with the gateway for the one event loop.
        collector = StreamCollector(url, Topics(cfg.region, gw_id), gw_id) if verify else None
        if collector is not None:
            await collector.start()
        parts = assemble(cfg, chain)
        gw = parts.gateway
        settle_heap()  # as `tiyi run` does after start-up
        await gw.start()
        await gw.publisher.wait_connected(10)
        t = time.perf_counter()
        for f in frames:
            await gw.submit(f)
        drained = await gw.drain(600)
        elapsed = time.perf_counter() - t
        m = gw.metrics
        await gw.stop(drain_timeout=0)
        parts.journal.close()
        result: dict[str, Any] = {
            "records": m.records,
            "seconds": round(elapsed, 3),
            "records_per_s": round(m.records / elapsed, 1),
            "batches": m.batches,
            "anchored": m.anchors_final,
            "messages": m.messages_published,
            "drained": drained,
        }
        if collector is not None:
            await collector.wait_end()
            await collector.stop()
            report = collector.report(
                StreamVerifier(TrustPolicy(pinned={gw_id: [key]})), lambda v: v.report(require_complete=True)
            )
            g = report.gateways.get(gw_id)
            result["verified"] = 0 if g is None else g.records_in_verified_batches
            result["verified_ok"] = report.ok
        return result


def bench_pipeline_main(o: PipelineOptions) -> int:
    result = asyncio.run(run_pipeline(o.broker, o.records, o.devices, verify=o.verify))
    print(json.dumps(result))
    ok = result["drained"] and result["records"] == o.records
    if o.verify:
        ok = ok and result["verified_ok"] and result["verified"] == o.records
    return 0 if ok else 1
