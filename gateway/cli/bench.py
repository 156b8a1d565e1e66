"""``tiyi bench pipeline``: the whole pipeline at full speed against a broker that already runs.

Frames are generated up front and submitted as fast as the gateway takes them; the clock stops when
every record is acknowledged by the broker and every batch is signed and anchored (in-process chain).
A subscriber verifies the stream independently, so a fast but wrong run cannot pass.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

from anchoring.stream_verifier import StreamVerifier
from anchoring.trust import TrustPolicy
from edge.sm2 import load_public_key_pem
from edge.topics import Topics
from gateway.config import BatchConfig, ChainConfig, GatewayConfig, MqttConfig
from gateway.keys import generate_keypair
from gateway.mqtt import BrokerSettings, PahoSubscriber
from gateway.runtime import assemble, settle_heap


async def run_pipeline(url: str, n: int, devices: int, verify: bool = True) -> dict[str, Any]:
    from anchoring.devchain import DevChain
    from anchoring.evm import EvmChainClient
    from firmware_sim.heart_rate_strap import HeartRateStrap

    straps = [HeartRateStrap(f"hr-{i:03d}", seed=i) for i in range(devices)]
    frames = [straps[i % devices].frame_at(float(i // devices)) for i in range(n)]
    with tempfile.TemporaryDirectory(prefix="tiyi-bench-") as d:
        state = Path(d)
        generate_keypair(state / "keys")
        chain_dev = DevChain()
        chain = EvmChainClient(chain_dev.web3, secrets.token_bytes(32), contract=chain_dev.contract_address)
        chain_dev.fund(chain.account_address)
        gw_id = f"gw-bench-{secrets.token_hex(3)}"
        cfg = GatewayConfig(gateway_id=gw_id, region="shenzhen", state_dir=state, mqtt=MqttConfig(url=url),
                            batch=BatchConfig(max_records=5000, max_age_s=1.0),
                            chain=ChainConfig(kind="inproc", poll_s=0.05)).validated()
        key = load_public_key_pem((state / "keys" / "gateway.pub").read_text())
        verifier = StreamVerifier(TrustPolicy(pinned={gw_id: [key]}))
        sub = PahoSubscriber(BrokerSettings.from_url(url, client_id=f"{gw_id}-verifier"),
                             Topics(cfg.region, gw_id).all)
        collector: asyncio.Task[None] | None = None
        last = [time.monotonic()]
        received: list[tuple[str, bytes, bool]] = []
        if verify:
            await sub.start()
            await sub.wait_connected(10)

            async def collect() -> None:
                # Only keep messages while the clock runs; verifying them afterwards keeps the check from
                # competing with the gateway for the one event loop.
                async for m in sub:
                    received.append((m.topic, m.payload, m.retain))
                    last[0] = time.monotonic()

            collector = asyncio.create_task(collect())
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
        result: dict[str, Any] = {"records": m.records, "seconds": round(elapsed, 3),
                                  "records_per_s": round(m.records / elapsed, 1), "batches": m.batches,
                                  "anchored": m.anchors_final, "messages": m.messages_published,
                                  "drained": drained}
        if collector is not None:
            while time.monotonic() - last[0] < 1.0:  # noqa: ASYNC110 - waiting for the stream to go quiet
                await asyncio.sleep(0.2)
            collector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await collector
            await sub.stop()
            for topic, payload, retained in received:
                verifier.feed(topic, payload, retained)
            report = verifier.report(require_complete=True)
            g = report.gateways.get(gw_id)
            result["verified"] = 0 if g is None else g.records_in_verified_batches
            result["verified_ok"] = report.ok
        return result


def bench_pipeline_main(args: argparse.Namespace) -> int:
    result = asyncio.run(run_pipeline(args.broker, args.records, args.devices, verify=not args.no_verify))
    print(json.dumps(result))
    ok = result["drained"] and result["records"] == args.records
    if not args.no_verify:
        ok = ok and result["verified_ok"] and result["verified"] == args.records
    return 0 if ok else 1
