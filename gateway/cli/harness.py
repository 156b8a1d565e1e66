"""What the demo, the simulator, the pipeline benchmark and the end-to-end tests share, written once: an
in-process dev chain with a funded account, a verifying subscriber that knows when the gateway's stream
ended, and the loop that serves a frame source until told to stop."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from anchoring.stream_verifier import StreamVerifier, VerificationReport
from edge import cbor
from edge.topics import Topics
from gateway.mqtt import BrokerSettings, PahoSubscriber
from gateway.service import Gateway
from gateway.stages.ports import FrameSource

if TYPE_CHECKING:
    from anchoring.devchain import DevChain
    from anchoring.evm import EvmChainClient

END_WAIT_S = 30.0  # how long to wait for a stopped gateway's last messages before reporting what arrived
QUIET_S = 0.3  # after the end mark: anything else the broker still holds arrives within this


@dataclass(frozen=True)
class DevChainAccount:
    chain: DevChain  # the in-process chain (its ``admin()`` administers the contract)
    client: EvmChainClient  # a funded account on it


def dev_chain(account_key: bytes, chain_id: int | None = None) -> DevChainAccount:
    """An in-process EVM chain with the Anchor contract deployed, and a funded client for ``account_key``
    (``chain_id``: another id than eth-tester's own, so two such chains never confirm each other's receipts)."""
    from anchoring.devchain import DEFAULT_CHAIN_ID, DevChain
    from anchoring.evm import EvmChainClient

    chain_dev = DevChain(DEFAULT_CHAIN_ID if chain_id is None else chain_id)
    client = EvmChainClient(chain_dev.web3, account_key, contract=chain_dev.contract_address)
    chain_dev.fund(client.account_address)
    return DevChainAccount(chain_dev, client)


class StreamCollector:
    """Subscribes to a gateway's topics before it starts and keeps every message, as a platform would.

    The stream's end is the gateway's live ``offline`` status: a stopping gateway sends it after its last
    head, and only once every record, manifest and receipt was acknowledged by the broker. Waiting for it
    (rather than for a quiet spell of fixed length) keeps a slow, CPU-starved run from being cut short.
    """

    def __init__(
        self,
        url: str,
        topics: Topics,
        gw: str,
        protocol: str = "auto",
        client_id: str = "",
        session_expiry_s: int = 0,
        reconnect_s: tuple[float, float] | None = None,
        subscription: str | None = None,
    ) -> None:
        """``subscription``: the topic filter (the gateway's own tree unless given; a test scanning for leaks
        subscribes to ``#``). ``session_expiry_s`` > 0: a persistent session, so a broker restart (with
        persistence on) keeps the subscription and queues what the gateway publishes meanwhile instead of
        dropping it. ``reconnect_s``:
        the first and the longest wait between reconnection attempts (the client's defaults unless given)."""
        backoff_min, backoff_max = reconnect_s or (None, None)
        self._settings = BrokerSettings.from_url(
            url,
            client_id=client_id or f"{gw}-verifier",
            protocol=protocol,
            session_expiry_s=session_expiry_s,
            backoff_min=backoff_min,
            backoff_max=backoff_max,
        )
        self._sub = PahoSubscriber(self._settings, subscription or topics.all)
        self._status_topic, self._gw = topics.status, gw
        self.messages: list[tuple[str, bytes, bool]] = []
        self._ended = asyncio.Event()
        self._last = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 10) -> None:
        await self._sub.start()
        await self._sub.wait_connected(timeout)
        self._task = asyncio.create_task(self._collect(), name="stream-collector")

    async def _collect(self) -> None:
        async for m in self._sub:
            self.messages.append((m.topic, m.payload, m.retain))
            self._last = time.monotonic()
            if m.topic == self._status_topic and not m.retain and says_offline(m.payload, self._gw):
                self._ended.set()

    @property
    def last_message(self) -> float:
        """When the last message arrived (monotonic seconds; the start, before any)."""
        return self._last

    async def wait_end(self, timeout: float = END_WAIT_S) -> bool:
        """Until the gateway's stream ended and went quiet (bounded); whether the end mark arrived."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ended.wait(), timeout)
        while time.monotonic() - self._last < QUIET_S:  # noqa: ASYNC110 - a quiet spell, not an event
            await asyncio.sleep(0.05)
        return self._ended.is_set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._sub.stop()

    def report(
        self, verifier: StreamVerifier, report: Callable[[StreamVerifier], VerificationReport]
    ) -> VerificationReport:
        """Feed everything received of the site's own stream to ``verifier`` (after the run, so checking never
        competes with the gateway for the loop) and return ``report(verifier)``. Audience views (``aud/``) are
        each audience's own stream, checked by the audience verifier (``tiyi verify --audience``)."""
        for topic, payload, retained in self.messages:
            if not is_audience_topic(topic):
                verifier.feed(topic, payload, retained)
        return report(verifier)


def is_audience_topic(topic: str) -> bool:
    """Whether ``topic`` is one of an audience's channels (``tiyi/v1/{region}/{gw}/aud/...``)."""
    parts = topic.split("/")
    return len(parts) > 4 and parts[4] == "aud"


def says_offline(payload: bytes, gw: str) -> bool:
    """Whether a status payload is ``gw``'s own clean-stop ``offline`` (not its last will, which has t = 0)."""
    try:
        msg = cbor.loads(payload)
    except ValueError:
        return False
    return isinstance(msg, dict) and msg.get("state") == "offline" and msg.get("gw") == gw and msg.get("t") != 0


async def serve(
    gw: Gateway,
    source: FrameSource,
    stop: asyncio.Event,
    tick: Callable[[], None] | None = None,
    quiesce: Callable[[], Awaitable[None]] | None = None,
    states_every_s: float = 1.0,
) -> None:
    """Feed ``source`` into a started ``gw`` and publish its device states until ``stop`` is set; calls
    ``tick`` about once a second meanwhile, and ``quiesce`` (the source stops emitting, its frames in flight
    land) before the source is cancelled. The caller drains and stops the gateway."""
    from gateway.runtime import device_state_loop

    tasks = [
        asyncio.create_task(source.run(gw.submit), name="source"),
        asyncio.create_task(device_state_loop(gw, every_s=states_every_s), name="device-states"),
    ]
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
            if tick is not None:
                tick()
        if quiesce is not None:
            await quiesce()
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
