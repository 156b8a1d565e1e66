"""The network between gateway and broker goes dark (a proxy swallows every byte, no reset, no FIN) and
comes back: the gateway notices the dead link by its keepalive, keeps journaling, reconnects and delivers
everything, proven and anchored."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import threading
from pathlib import Path

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


class BlackholeProxy:
    """TCP proxy to an upstream port that can be switched to drop traffic silently in both directions:
    what a cut cable, a dead Wi-Fi uplink or a stateful firewall losing its state looks like."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.cut = threading.Event()
        self.dropped = 0
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self._server.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                up = socket.create_connection(("127.0.0.1", self.upstream))
            except OSError:
                client.close()
                continue
            for a, b in ((client, up), (up, client)):
                t = threading.Thread(target=self._pump, args=(a, b), daemon=True)
                t.start()
                self._threads.append(t)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if self.cut.is_set():
                    self.dropped += len(data)  # swallowed: the sender never learns
                    continue
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.close()

    def close(self) -> None:
        self._stop.set()
        self._server.close()


def test_a_silent_network_cut_delays_but_loses_nothing(mosquitto: Mosquitto, tmp_path: Path) -> None:
    proxy = BlackholeProxy(mosquitto.port)
    generate_keypair(tmp_path / "keys")
    chain = dev_chain(secrets.token_bytes(32)).client
    cfg = GatewayConfig(
        gateway_id="gw-cut",
        region="jiangmen",
        state_dir=tmp_path,
        mqtt=MqttConfig(url=f"mqtt://127.0.0.1:{proxy.port}", keepalive_s=2),
        batch=BatchConfig(max_records=100, max_age_s=0.5),
        chain=ChainConfig(kind="inproc", poll_s=0.1),
    ).validated()
    key = load_public_key_pem((tmp_path / "keys" / "gateway.pub").read_text())
    try:
        with Recorder(mosquitto.url, Topics("jiangmen", "gw-cut"), session_expiry_s=600) as rec:

            async def run() -> tuple[int, int, int, int]:
                gw = assemble(cfg, chain).gateway
                await gw.start()
                source = SimulatedStrapSource(devices=5, interval_s=1.0, seed=4, speed=40)
                task = asyncio.create_task(source.run(gw.submit))
                await asyncio.sleep(1.5)
                delivered_before = gw.metrics.records_delivered
                proxy.cut.set()
                await asyncio.sleep(6.0)  # three keepalive periods in the dark
                delivered_in_dark = gw.metrics.records_delivered - delivered_before
                proxy.cut.clear()
                await asyncio.sleep(1.0)
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                assert await gw.stop(drain_timeout=60)
                gw.journal.close()
                return source.frames_sent, gw.metrics.records, delivered_in_dark, gw.metrics.records_delivered

            sent, journaled, in_dark, delivered = asyncio.run(run())
            rec.wait_idle(1.5)
            report = rec.verify(key, chain)
    finally:
        proxy.close()
    print(report.summary(), f"\nbytes swallowed by the cut: {proxy.dropped}")
    assert proxy.dropped > 0 and in_dark < 300  # the cut was real: almost nothing got through meanwhile
    assert sent == journaled and delivered >= journaled
    assert report.ok, report.summary()
    g = report.gateways["gw-cut"]
    assert (g.first_seq, g.last_seq, g.records) == (1, journaled, journaled)
    assert g.anchors_verified == g.batches_verified
