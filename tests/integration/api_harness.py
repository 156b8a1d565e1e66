"""A gateway with its admin API on a real port, its loop in a thread, for tests that call it over HTTP."""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import requests

from bench.services import free_port
from edge.frame import Frame
from gateway.api_tokens import add_token
from gateway.cli.harness import dev_chain
from gateway.config import ApiConfig, BatchConfig, ChainConfig, GatewayConfig, MqttConfig
from gateway.keys import generate_keypair
from gateway.runtime import ApiTask, Assembled, assemble, start_api

T = TypeVar("T")
HR = 0x2A37


class RunningGateway:
    """Start with ``start()``; ``feed`` frames; call the API at ``base``; ``close()`` drains and stops. As a
    context manager it starts on entry and stops on exit (``tests/integration/conftest.py``'s ``gw``)."""

    def __init__(self, tmp_path: Path, broker_url: str, anchored: bool = True) -> None:
        generate_keypair(tmp_path / "keys")
        self.cfg = GatewayConfig(
            gateway_id="gw-api",
            region="foshan",
            state_dir=tmp_path,
            mqtt=MqttConfig(url=broker_url),
            batch=BatchConfig(max_records=5, max_age_s=0.3),
            chain=ChainConfig(kind="inproc", poll_s=0.1) if anchored else ChainConfig(kind="none"),
            api=ApiConfig(port=free_port()),
        ).validated()
        self.token = add_token(self.cfg.api_token_path, "tests")
        self.base = f"http://127.0.0.1:{self.cfg.api.port if self.cfg.api else 0}"
        self._chain = dev_chain(secrets.token_bytes(32)).client if anchored else None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.parts: Assembled | None = None
        self._api: ApiTask | None = None
        self._source: asyncio.Future[None] | None = None

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self) -> RunningGateway:
        async def go() -> None:
            self.parts = assemble(self.cfg, self._chain)
            await self.parts.gateway.start()
            await self.parts.gateway.publisher.wait_connected(10)
            self._api = await start_api(self.cfg, self.parts.gateway, lambda: "not configured")

        self.call(go())
        return self

    def __enter__(self) -> RunningGateway:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def get(self, path: str, **kw: Any) -> requests.Response:
        return requests.get(self.base + path, headers=kw.pop("headers", self.auth), timeout=10, **kw)

    def post(self, path: str, body: dict[str, Any]) -> requests.Response:
        return requests.post(self.base + path, json=body, headers=self.auth, timeout=10)

    def feed(self, n: int, dev: str = "hr-1") -> None:
        async def go() -> None:
            assert self.parts is not None
            for _ in range(n):
                await self.parts.gateway.submit(Frame(dev, HR, b"\x00\x48"))

        self.call(go())

    def run_source(self, source: Any) -> None:
        """Run a frame source (e.g. simulated straps) in the gateway's loop until ``close``."""

        async def go() -> None:
            assert self.parts is not None
            self._source = asyncio.ensure_future(source.run(self.parts.gateway.submit))

        self.call(go())

    def settle(self) -> None:
        """Until everything fed is delivered, batched and anchored."""

        async def go() -> None:
            assert self.parts is not None
            assert await self.parts.gateway.drain(60)

        self.call(go())

    def close(self) -> None:
        async def go() -> None:
            if self._source is not None:
                self._source.cancel()
            if self._api is not None:
                await self._api.stop()
            if self.parts is not None:
                await self.parts.gateway.stop(drain_timeout=10)
                self.parts.journal.close()

        try:
            self.call(go())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
