"""Helpers for end-to-end runs: a subscriber in its own thread that records everything it receives."""

from __future__ import annotations

import asyncio
import threading
import time

from anchoring.chain import ChainReader
from anchoring.stream_verifier import StreamVerifier, VerificationReport
from anchoring.trust import TrustPolicy
from anchoring.verify_anchor import ChainAnchorChecker
from edge.signing import Verifier
from gateway.mqtt import BrokerSettings, PahoSubscriber


class Recorder:
    """Subscribes before the gateway starts and keeps every message, like a platform would."""

    def __init__(self, url: str, topic_filter: str, session_expiry_s: int = 0) -> None:
        self._expiry = session_expiry_s
        self.messages: list[tuple[str, bytes, bool]] = []
        self.last_message = time.monotonic()
        self._url, self._filter = url, topic_filter
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> Recorder:
        self._thread.start()
        assert self._ready.wait(20), "subscriber did not connect"
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    async def _run(self) -> None:
        settings = BrokerSettings.from_url(
            self._url,
            client_id=f"recorder-{time.monotonic_ns()}",
            session_expiry_s=self._expiry,
            backoff_min=0.1,
            backoff_max=1.0,
        )
        async with PahoSubscriber(settings, self._filter) as sub:
            self._ready.set()
            it = sub.__aiter__()
            while not self._stop.is_set():
                try:
                    m = await asyncio.wait_for(it.__anext__(), 0.2)
                except TimeoutError:
                    continue
                self.messages.append((m.topic, m.payload, m.retain))
                self.last_message = time.monotonic()

    def wait_idle(self, seconds: float, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if time.monotonic() - self.last_message >= seconds:
                return
            time.sleep(0.1)
        raise TimeoutError("the stream never went quiet")

    def verify(self, key: Verifier, chain: ChainReader | None) -> VerificationReport:
        """Verify as a platform that pinned ``key`` for the one gateway it receives."""
        v = StreamVerifier(TrustPolicy(unbound=[key]))
        for topic, payload, retained in list(self.messages):
            v.feed(topic, payload, retained)
        return v.report(None if chain is None else ChainAnchorChecker("chain", chain), require_complete=True)
